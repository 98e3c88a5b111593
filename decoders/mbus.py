"""M-Bus (EN 13757-2 link layer, EN 13757-3 application layer) — wired meter bus.

::

    ACK           E5
    short frame   10 | C | A | CS | 16
    long frame    68 | L | L | 68 | C | A | CI | data .. | CS | 16     (L = C..data, CS = sum)

CI 72 (variable data reply) opens with a 12-byte header — identification number (4 BCD,
LSB first), manufacturer (2 bytes, three letters of 5 bits + 64), version, medium, access
number, status, signature — and continues with data records (:mod:`decoders.mbus_records`).

Strategy: the three shapes are three :class:`~decoders.framing.Envelope` s of one framer;
the C field gives the function (SND_NKE, REQ_UD2, RSP_UD …) and the direction (the PRM bit:
set = from the master). Only the link layer and the CI-72/78/7A layouts are interpreted;
any other CI keeps its data as raw bytes, so every frame still re-encodes exactly.
pyMeterBus is the bench peer on the same frames, not a dependency of this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from decoders.errors import (
    CommandNotSupportedError,
    EncodeError,
    FieldValueError,
    FramingError,
    LengthError,
)
from decoders.frame import DataItem, Frame
from decoders.framing import ChecksumSpec, Envelope, FrameSpec, LengthField
from decoders.mbus_records import RecordError, build_records, parse_records
from decoders.protocol import CommandFrame, Protocol

__all__ = ["MEDIA", "MBus", "manufacturer_code", "manufacturer_id"]

MEDIA = {
    0x00: "other", 0x01: "oil", 0x02: "electricity", 0x03: "gas", 0x04: "heat",
    0x05: "steam", 0x06: "warm_water", 0x07: "water", 0x08: "heat_cost_allocator",
    0x09: "compressed_air", 0x0A: "cooling_outlet", 0x0B: "cooling_inlet",
    0x0C: "heat_inlet", 0x0D: "heat_cooling", 0x0E: "bus_system", 0x0F: "unknown",
    0x15: "hot_water", 0x16: "cold_water", 0x17: "dual_water", 0x18: "pressure",
    0x19: "ad_converter",
}
_MEDIUM_CODES = {name: code for code, name in MEDIA.items()}

#: C field (FCB/FCV bits masked) -> function
FUNCTIONS = {0x40: "snd_nke", 0x53: "snd_ud", 0x5B: "req_ud2", 0x5A: "req_ud1",
             0x49: "req_status", 0x08: "rsp_ud", 0x00: "ack_link", 0x0B: "rsp_status"}
_FUNCTION_CODES = {name: code for code, name in FUNCTIONS.items()}

ACK = Envelope(name="ack", protocol="mbus-en13757", start=b"\xe5", header_size=1,
               fixed_size=1, max_frame=1)
SHORT = Envelope(name="short", protocol="mbus-en13757", start=b"\x10", header_size=3,
                 fixed_size=5, end=b"\x16",
                 checksum=ChecksumSpec(algorithm="mbus_sum", start=1, end=-2),
                 max_frame=5)
LONG = Envelope(name="long", protocol="mbus-en13757", start=b"\x68", header_size=4,
                length=LengthField(offset=1, size=1, add=6, repeat_at=2, minimum=3),
                marks=((3, b"\x68"),), end=b"\x16",
                checksum=ChecksumSpec(algorithm="mbus_sum", start=4, end=-2),
                max_frame=261)


def manufacturer_code(raw: int) -> str:
    """The three letters of an M-Bus manufacturer field (``0x30E2`` → ``LGB``); a field
    that is not three letters A–Z (or has bit 15 set) stays hex: ``0x7FFF``."""
    groups = [(raw >> shift) & 0x1F for shift in (10, 5, 0)]
    if raw > 0x7FFF or not all(1 <= g <= 26 for g in groups):
        return f"0x{raw:04X}"
    return "".join(chr(g + 64) for g in groups)


def manufacturer_id(code: str) -> int:
    """The 2-byte field of a manufacturer code (inverse of :func:`manufacturer_code`)."""
    if code.startswith("0x"):
        return int(code, 16)
    if len(code) != 3 or not all("A" <= c <= "Z" for c in code):
        raise ValueError(f"a manufacturer code is three capital letters, got {code!r}")
    return sum((ord(c) - 64) << shift for c, shift in zip(code, (10, 5, 0), strict=True))


class MBus(Protocol):
    """M-Bus link and application layer (see the module docstring)."""

    name = "mbus-en13757"
    title = "M-Bus EN 13757-2/-3 (wired meter bus)"

    def frame_specs(self) -> Sequence[FrameSpec]:
        return (ACK, SHORT, LONG)

    def decode(self, data: bytes) -> Frame:
        data = bytes(data)
        if not data:
            raise LengthError("empty frame", protocol=self.name, data=data, offset=0)
        first = data[0]
        if first == 0xE5:
            ACK.validate(data)
            return Frame(protocol=self.name, direction="reply", function="ack",
                         control=0xE5)
        if first == 0x10:
            SHORT.validate(data)
            control, address = data[1], data[2]
            return self._frame(control, address, header={"frame": "short"})
        if first == 0x68:
            LONG.validate(data)
            control, address, ci = data[4], data[5], data[6]
            body = data[7:-2]
            header: dict[str, Any] = {"ci": ci}
            items: list[DataItem] = []
            ident = None
            if ci in (0x72, 0x76) and len(body) >= 12:
                ident, fixed = self._variable_header(data, body)
                header.update(fixed)
                try:
                    items = parse_records(body[12:], base=19)
                except RecordError as exc:
                    raise FieldValueError(exc.reason, protocol=self.name, data=data,
                                          field="records", offset=exc.offset) from None
            elif ci in (0x72, 0x76):
                raise LengthError(f"CI {ci:02X} needs a 12-byte header, got {len(body)}",
                                  protocol=self.name, data=data, field="header",
                                  offset=7 + len(body))
            elif ci == 0x70 and len(body) == 1:
                items = [DataItem(name="error", value=(_APP_ERRORS.get(body[0],
                                                                       f"0x{body[0]:02X}"),))]
            elif body:
                items = [DataItem(name="data", value=body)]
            frame = self._frame(control, address, header=header, items=items,
                                identifier=ident)
            return frame
        raise FramingError(f"start byte {first:02X}: M-Bus frames start with E5, 10 or 68",
                           protocol=self.name, data=data, field="start", offset=0)

    def _variable_header(self, data: bytes, body: bytes) -> tuple[str, dict[str, Any]]:
        digits = body[0:4][::-1].hex()
        if not digits.isdigit():
            raise FieldValueError(f"identification number {digits.upper()} is not BCD",
                                  protocol=self.name, data=data, field="header.id", offset=7)
        raw_manufacturer = body[4] | body[5] << 8
        medium = MEDIA.get(body[7], body[7])
        fixed = {"manufacturer": manufacturer_code(raw_manufacturer),
                 "version": body[6], "medium": medium, "access_number": body[8],
                 "status": body[9], "signature": body[10] | body[11] << 8}
        return digits, fixed

    def _frame(self, control: int, address: int, *, header: dict[str, Any],
               items: list[DataItem] | None = None, identifier: str | None = None) -> Frame:
        from_master = bool(control & 0x40)
        # master: bit 5 FCB alternates (bit 4 FCV is part of the code); slave: ACD, DFC
        function = FUNCTIONS.get(control & ~(0x20 if from_master else 0x30),
                                 f"0x{control:02X}")
        if control & 0x20:
            header["fcb" if from_master else "acd"] = True
        if control & 0x10 and not from_master:
            header["dfc"] = True
        return Frame(protocol=self.name, direction="request" if from_master else "reply",
                     function=function, address=str(address), control=control,
                     identifier=identifier, header=header, items=tuple(items or ()))

    # ----------------------------------------------------------------- encode
    def encode(self, frame: Frame) -> bytes:
        if frame.function == "ack":
            return b"\xe5"
        control = frame.control or self._control(frame)
        try:
            address = int(frame.address or 0)
        except ValueError:
            raise EncodeError(f"primary address {frame.address!r} is not a number",
                              protocol=self.name, field="address") from None
        if frame.header.get("frame") == "short" or "ci" not in frame.header:
            return bytes([0x10, control, address, (control + address) & 0xFF, 0x16])
        ci = int(frame.header["ci"])
        body = bytearray()
        if ci in (0x72, 0x76):
            header = frame.header
            try:
                raw_manufacturer = manufacturer_id(header["manufacturer"])
                medium = header["medium"]
                body += bytes.fromhex(str(frame.identifier).zfill(8))[::-1]
                body += raw_manufacturer.to_bytes(2, "little")
                medium_code = _MEDIUM_CODES[medium] if isinstance(medium, str) else int(medium)
                body += bytes([header["version"], medium_code, header["access_number"],
                               header["status"]])
                body += int(header["signature"]).to_bytes(2, "little")
            except (KeyError, ValueError, TypeError) as exc:
                raise EncodeError(f"variable-data header: {exc}", protocol=self.name,
                                  field="header") from None
            body += build_records(frame.items)
        elif ci == 0x70 and frame.items:
            (name,) = frame.items[0].value
            body.append(_APP_ERROR_CODES.get(name, int(str(name), 16) if
                                             str(name).startswith("0x") else 0))
        else:
            data = frame.item("data")
            body += bytes(data.value) if data is not None else b""
        user = bytes([control, address, ci]) + bytes(body)
        if len(user) > 255:
            raise EncodeError(f"{len(user)} bytes of user data, M-Bus allows 255",
                              protocol=self.name, field="items")
        return bytes([0x68, len(user), len(user), 0x68]) + user + \
            bytes([sum(user) & 0xFF, 0x16])

    def _control(self, frame: Frame) -> int:
        code = _FUNCTION_CODES.get(frame.function)
        if code is None:
            raise EncodeError(f"unknown function {frame.function!r}", protocol=self.name,
                              field="function")
        return code | (0x20 if frame.header.get("fcb") or frame.header.get("acd") else 0) | \
            (0x10 if frame.header.get("dfc") else 0)

    # ----------------------------------------------------------------- commands
    def commands(self) -> Sequence[str]:
        return ("read_now",)

    def encode_command(self, command: str, address: str,
                       params: Mapping[str, Any] | None = None, *, sequence: int = 0,
                       timezone: str = "Asia/Shanghai") -> CommandFrame:
        if command != "read_now":
            raise CommandNotSupportedError(f"{self.name} has no frame for {command!r}",
                                           protocol=self.name, hint="supported: read_now")
        # REQ_UD2 with the frame-count bit alternating per request (sequence parity)
        request = Frame(protocol=self.name, direction="request", function="req_ud2",
                        address=str(int(address)), header={"frame": "short",
                                                           "fcb": bool(sequence & 1)})
        data = self.encode(request)
        return CommandFrame(protocol=self.name, command=command, address=request.address,
                            data=data, request=self.decode(data),
                            match_on=("address",))

    def matches(self, request: CommandFrame, reply: Frame) -> bool:
        if reply.protocol != self.name or reply.direction != "reply":
            return False
        return reply.function == "rsp_ud" and (
            reply.address == request.address or request.address in ("253", "254", "255"))


_APP_ERRORS = {0x00: "unspecified", 0x01: "unimplemented_ci", 0x02: "buffer_too_long",
               0x03: "too_many_records", 0x04: "premature_end_of_record",
               0x05: "more_than_10_dife", 0x06: "more_than_10_vife", 0x08: "application_busy",
               0x09: "too_many_readouts"}
_APP_ERROR_CODES = {name: code for code, name in _APP_ERRORS.items()}
