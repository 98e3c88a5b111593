"""Checksum algorithms used by meter protocols, by name (the names templates use).

- ``sum8`` — sum of the bytes mod 256 (CJ/T 188, DL/T 645, Q/GDW 376.1, the M-Bus sum).
- ``crc16_modbus`` — CRC-16/MODBUS: poly 0x8005 reflected (0xA001), init 0xFFFF,
  sent low byte first.
- ``crc16_x25`` — CRC-16/X.25 (the HDLC FCS of DLMS): poly 0x1021 reflected (0x8408),
  init 0xFFFF, final XOR 0xFFFF, sent low byte first.

Strategy: table-driven CRCs computed once at import; every function takes ``bytes`` (or a
``memoryview``) and returns an ``int``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["CHECKSUMS", "CHECKSUM_SIZES", "crc16_modbus", "crc16_x25", "sum8"]


def _reflected_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_MODBUS_TABLE = _reflected_table(0xA001)
_X25_TABLE = _reflected_table(0x8408)


def sum8(data: bytes | bytearray | memoryview) -> int:
    """Arithmetic sum of the bytes, mod 256."""
    return sum(data) & 0xFF


def crc16_modbus(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS of ``data`` (check value of b"123456789" is 0x4B37)."""
    crc = 0xFFFF
    table = _MODBUS_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16_x25(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X.25 of ``data`` (check value of b"123456789" is 0x906E)."""
    crc = 0xFFFF
    table = _X25_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


#: Algorithms by the name a template uses.
CHECKSUMS: dict[str, Callable[[bytes | bytearray | memoryview], int]] = {
    "sum8": sum8,
    "mbus_sum": sum8,
    "crc16_modbus": crc16_modbus,
    "crc16_x25": crc16_x25,
}

#: Size in bytes of each algorithm's value on the wire.
CHECKSUM_SIZES: dict[str, int] = {"sum8": 1, "mbus_sum": 1, "crc16_modbus": 2, "crc16_x25": 2}
