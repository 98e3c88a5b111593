"""Modbus RTU and Modbus TCP — framing, PDUs, exception replies, register maps.

RTU (serial)::

    unit | function | data .. | CRC-16/MODBUS (low byte first)

TCP (MBAP header, no CRC)::

    transaction (2) | protocol 0000 (2) | length (2) = unit + PDU | unit | function | data ..

Strategy: an RTU frame has no length field — its size follows from the function code and
the direction (a read request is 8 bytes, its reply 5 + byte count). The size table comes
from pymodbus's PDU classes (``rtu_frame_size`` / ``rtu_byte_count_pos``, looked up with
``DecodePDU.lookupPduClass``), the one part of pymodbus's framer that is sound for us: its
framer itself discards the whole buffer on a CRC error and logs instead of raising, which
loses frames on a noisy line. Our :class:`RtuSpec` tries the request and the reply reading
at each position and keeps the one whose CRC is right, resynchronising byte by byte.

The eight data functions (01–06, 0F, 10) and exception replies are decoded and encoded here
with ``struct``; every other function goes through pymodbus's PDU classes, whose failures
become our :class:`~decoders.errors.DecodeError`. A reply to a read carries no register
address, so the values of a register map (:mod:`decoders.modbus_map`) are attached with the
request in hand: ``proto.apply_map(command, reply)``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pymodbus.pdu.decoders import DecodePDU

from decoders.checksums import crc16_modbus
from decoders.errors import (
    ChecksumError,
    CommandNotSupportedError,
    EncodeError,
    FieldValueError,
    LengthError,
)
from decoders.frame import DataItem, Frame
from decoders.framing import (
    MEASURE_BAD_CHECKSUM,
    MEASURE_BAD_FRAME,
    MEASURE_BAD_LENGTH,
    MEASURE_NEED_DATA,
    MEASURE_NO_SYNC,
    FrameSpec,
)
from decoders.modbus_map import RegisterMap, load_register_maps
from decoders.protocol import CommandFrame, CommandOutcome, Protocol

__all__ = ["EXCEPTION_CODES", "FUNCTIONS", "ModbusRtu", "ModbusTcp", "RtuSpec", "TcpSpec"]

FUNCTIONS: dict[int, str] = {
    0x01: "read_coils", 0x02: "read_discrete_inputs", 0x03: "read_holding_registers",
    0x04: "read_input_registers", 0x05: "write_single_coil", 0x06: "write_single_register",
    0x07: "read_exception_status", 0x08: "diagnostics", 0x0B: "get_comm_event_counter",
    0x0C: "get_comm_event_log", 0x0F: "write_multiple_coils",
    0x10: "write_multiple_registers", 0x11: "report_server_id", 0x14: "read_file_record",
    0x15: "write_file_record", 0x16: "mask_write_register",
    0x17: "read_write_multiple_registers", 0x18: "read_fifo_queue",
    0x2B: "encapsulated_interface_transport",
}
_CODES = {name: code for code, name in FUNCTIONS.items()}

EXCEPTION_CODES: dict[int, str] = {
    0x01: "illegal_function", 0x02: "illegal_data_address", 0x03: "illegal_data_value",
    0x04: "server_device_failure", 0x05: "acknowledge", 0x06: "server_busy",
    0x08: "memory_parity_error", 0x0A: "gateway_path_unavailable",
    0x0B: "gateway_target_failed_to_respond",
}
_EXCEPTION_NAMES = {name: code for code, name in EXCEPTION_CODES.items()}

Expect = Literal["request", "reply", "either"]
_REQUEST_DECODER = DecodePDU(is_server=True)
_REPLY_DECODER = DecodePDU(is_server=False)


def pdu_size(pdu: bytes | bytearray, pos: int, reply: bool) -> int:
    """Size of the PDU at ``pdu[pos]`` (function code first), 0 if more bytes are needed,
    -1 if the function is unknown for that direction."""
    n = len(pdu) - pos
    if n < 1:
        return 0
    fc = pdu[pos]
    if fc & 0x80:
        return 2
    if fc in (1, 2, 3, 4):
        if not reply:
            return 5
        return 2 + pdu[pos + 1] if n >= 2 else 0
    if fc in (5, 6):
        return 5
    if fc in (0x0F, 0x10):
        if reply:
            return 5
        return 6 + pdu[pos + 5] if n >= 6 else 0
    decoder = _REPLY_DECODER if reply else _REQUEST_DECODER
    # pymodbus's size table is keyed on an RTU frame: unit byte first
    cls = decoder.lookupPduClass(b"\x00" + bytes(pdu[pos:pos + 8]))
    if cls is None:
        return -1
    try:
        rtu = cls.calculateRtuFrameSize(b"\x00" + bytes(pdu[pos:]))
    except Exception:
        return -1
    return rtu - 3 if rtu else 0


class RtuSpec:
    """The frame spec of Modbus RTU (see the module docstring)."""

    first_bytes: frozenset[int] | None = None
    max_size = 256

    def __init__(self, expect: Expect = "either") -> None:
        self.expect = expect
        self._readings = {"request": (False,), "reply": (True,),
                          "either": (True, False)}[expect]

    def measure(self, buf: bytes | bytearray, pos: int) -> int:
        n = len(buf) - pos
        if n < 4:
            return MEASURE_NEED_DATA if n < 2 or _known(buf[pos + 1]) else MEASURE_NO_SYNC
        waiting = False
        bad_crc = False
        for reply in self._readings:
            size = pdu_size(buf, pos + 1, reply)
            if size < 0:
                continue
            if size == 0 or n < size + 3:
                waiting = waiting or size + 3 <= self.max_size
                continue
            total = size + 3
            crc = buf[pos + total - 2] | buf[pos + total - 1] << 8
            if crc16_modbus(memoryview(buf)[pos:pos + total - 2]) == crc:
                return total
            bad_crc = True
        if waiting:
            return MEASURE_NEED_DATA
        return MEASURE_BAD_CHECKSUM if bad_crc else MEASURE_NO_SYNC


def _known(fc: int) -> bool:
    return (fc & 0x7F) in FUNCTIONS


class TcpSpec:
    """The frame spec of Modbus TCP: MBAP header with protocol id 0 and a length."""

    first_bytes: frozenset[int] | None = None
    max_size = 260

    def measure(self, buf: bytes | bytearray, pos: int) -> int:
        n = len(buf) - pos
        if n >= 4 and (buf[pos + 2] or buf[pos + 3]):
            return MEASURE_NO_SYNC
        if n < 8:
            return MEASURE_NEED_DATA
        length = buf[pos + 4] << 8 | buf[pos + 5]
        if not 2 <= length <= 254 or not _known(buf[pos + 7]):
            return MEASURE_BAD_LENGTH if _known(buf[pos + 7]) else MEASURE_NO_SYNC
        if n < 6 + length:
            return MEASURE_NEED_DATA
        pdu = buf[pos + 7:pos + 6 + length]
        for reply in (True, False):
            if pdu_size(pdu, 0, reply) == len(pdu):
                return 6 + length
        return MEASURE_BAD_FRAME


# ----------------------------------------------------------------------------- PDUs

def _bits(data: bytes, count: int | None = None) -> list[bool]:
    out = [bool(byte >> bit & 1) for byte in data for bit in range(8)]
    return out[:count] if count is not None else out


def _pack_bits(bits: Sequence[Any]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for index, bit in enumerate(bits):
        if bit:
            out[index // 8] |= 1 << (index % 8)
    return bytes(out)


def decode_pdu(protocol: str, frame: bytes, offset: int, reply: bool
               ) -> tuple[str, int, bool, list[DataItem]]:
    """``(function, code, abnormal, items)`` of the PDU ``frame[offset:]``."""
    pdu = frame[offset:]
    fc = pdu[0]
    if fc & 0x80:
        code = pdu[1]
        name = EXCEPTION_CODES.get(code, f"exception_0x{code:02X}")
        function = FUNCTIONS.get(fc & 0x7F, f"0x{fc & 0x7F:02X}")
        return function, fc, True, [DataItem(name="error", value=(name,))]
    function = FUNCTIONS.get(fc, f"0x{fc:02X}")
    body = pdu[1:]
    try:
        if fc in (1, 2, 3, 4) and not reply:
            address, quantity = struct.unpack(">HH", body)
            return function, fc, False, [DataItem(name="start_address", value=address),
                                         DataItem(name="quantity", value=quantity)]
        if fc in (1, 2) and reply:
            count = body[0]
            if count != len(body) - 1:
                raise LengthError(f"byte count {count}, {len(body) - 1} data bytes follow",
                                  protocol=protocol, data=frame, field="byte_count",
                                  offset=offset + 1)
            return function, fc, False, [DataItem(name="coils" if fc == 1 else "inputs",
                                                  value=_bits(body[1:]))]
        if fc in (3, 4) and reply:
            count = body[0]
            if count != len(body) - 1 or count % 2:
                raise LengthError(f"byte count {count} for {len(body) - 1} data bytes "
                                  "(registers are 2 bytes)", protocol=protocol, data=frame,
                                  field="byte_count", offset=offset + 1)
            registers = list(struct.unpack(f">{count // 2}H", body[1:]))
            return function, fc, False, [DataItem(name="registers", value=registers)]
        if fc == 5:
            address, value = struct.unpack(">HH", body)
            if value not in (0x0000, 0xFF00):
                raise FieldValueError(f"coil value {value:04X} is neither FF00 nor 0000",
                                      protocol=protocol, data=frame, field="value",
                                      offset=offset + 3)
            return function, fc, False, [DataItem(name="address", value=address),
                                         DataItem(name="value", value=value == 0xFF00)]
        if fc == 6:
            address, value = struct.unpack(">HH", body)
            return function, fc, False, [DataItem(name="address", value=address),
                                         DataItem(name="value", value=value)]
        if fc in (0x0F, 0x10) and reply:
            address, quantity = struct.unpack(">HH", body)
            return function, fc, False, [DataItem(name="start_address", value=address),
                                         DataItem(name="quantity", value=quantity)]
        if fc in (0x0F, 0x10):
            address, quantity, count = struct.unpack(">HHB", body[:5])
            data = body[5:]
            if count != len(data):
                raise LengthError(f"byte count {count}, {len(data)} data bytes follow",
                                  protocol=protocol, data=frame, field="byte_count",
                                  offset=offset + 5)
            if fc == 0x0F:
                values: list[Any] = _bits(data, quantity)
                if len(values) < quantity:
                    raise LengthError(f"{quantity} coils do not fit {count} bytes",
                                      protocol=protocol, data=frame, field="quantity",
                                      offset=offset + 3)
            else:
                if count != 2 * quantity:
                    raise LengthError(f"{quantity} registers need {2 * quantity} bytes, "
                                      f"byte count says {count}", protocol=protocol,
                                      data=frame, field="byte_count", offset=offset + 5)
                values = list(struct.unpack(f">{quantity}H", data))
            return function, fc, False, [DataItem(name="start_address", value=address),
                                         DataItem(name="values", value=values)]
    except struct.error as exc:
        raise LengthError(f"{function}: {exc}", protocol=protocol, data=frame,
                          field="pdu", offset=offset) from None
    return function, fc, False, _pymodbus_items(protocol, frame, offset, reply, function)


def _pymodbus_items(protocol: str, frame: bytes, offset: int, reply: bool,
                    function: str) -> list[DataItem]:
    decoder = _REPLY_DECODER if reply else _REQUEST_DECODER
    try:
        pdu = decoder.decode(frame[offset:])
    except Exception as exc:
        pdu, reason = None, str(exc)
    else:
        reason = "pymodbus could not decode it"
    if pdu is None:
        raise FieldValueError(f"{function}: {reason}", protocol=protocol, data=frame,
                              field="pdu", offset=offset)
    items = [DataItem(name="pdu", value=frame[offset:])]
    for attribute in ("sub_function_code", "address", "count", "registers", "bits",
                      "status"):
        value = getattr(pdu, attribute, None)
        if value not in (None, [], -1):
            items.append(DataItem(name=attribute, value=list(value)
                                  if isinstance(value, list | tuple) else value))
    return items


_ADDRESS_QUANTITY = struct.Struct(">BHH")
_MBAP = struct.Struct(">HHHB")


def encode_pdu(frame: Frame) -> bytes:
    """PDU bytes of a frame (function code first)."""
    fc = frame.control or _CODES.get(frame.function, 0)
    items_seq = frame.items
    if len(items_seq) == 2 and not frame.abnormal and (
            fc == 6 or (fc in (1, 2, 3, 4) and frame.direction == "request")
            or (fc in (0x0F, 0x10) and frame.direction == "reply")):
        # the common polls and single writes: no dict, one precompiled struct
        first, second = items_seq
        if first.name in ("start_address", "address") and \
                second.name in ("quantity", "value"):
            try:
                return _ADDRESS_QUANTITY.pack(fc, first.value, second.value)
            except struct.error as exc:
                raise EncodeError(f"{frame.function}: {exc}", protocol=frame.protocol,
                                  field="items") from None
    if not fc:
        raise EncodeError(f"unknown function {frame.function!r}", protocol=frame.protocol,
                          field="function")
    items = {i.name: i.value for i in frame.items}
    reply = frame.direction == "reply"
    try:
        if frame.abnormal:
            (name,) = items["error"]
            code = _EXCEPTION_NAMES.get(name)
            if code is None:
                code = int(name.rpartition("_0x")[2], 16)
            return bytes([fc | 0x80, code])
        if "pdu" in items:
            return bytes(items["pdu"])
        if fc in (1, 2, 3, 4) and not reply:
            return struct.pack(">BHH", fc, items["start_address"], items["quantity"])
        if fc in (1, 2):
            data = _pack_bits(items["coils" if fc == 1 else "inputs"])
            return struct.pack(">BB", fc, len(data)) + data
        if fc in (3, 4):
            registers = items["registers"]
            return struct.pack(f">BB{len(registers)}H", fc, 2 * len(registers), *registers)
        if fc == 5:
            return struct.pack(">BHH", fc, items["address"], 0xFF00 if items["value"] else 0)
        if fc == 6:
            return struct.pack(">BHH", fc, items["address"], items["value"])
        if fc in (0x0F, 0x10) and reply:
            return struct.pack(">BHH", fc, items["start_address"], items["quantity"])
        if fc == 0x0F:
            data = _pack_bits(items["values"])
            return struct.pack(">BHHB", fc, items["start_address"], len(items["values"]),
                               len(data)) + data
        if fc == 0x10:
            values = items["values"]
            return struct.pack(f">BHHB{len(values)}H", fc, items["start_address"],
                               len(values), 2 * len(values), *values)
    except (KeyError, ValueError, TypeError, struct.error) as exc:
        raise EncodeError(f"{frame.function}: cannot encode ({exc})", protocol=frame.protocol,
                          field="items") from None
    raise EncodeError(f"{frame.function}: give the raw PDU as item 'pdu'",
                      protocol=frame.protocol, field="items")


# ----------------------------------------------------------------------------- protocols

class _Modbus(Protocol):
    """What RTU and TCP share: PDUs, register maps, commands."""

    expect: Expect = "either"

    def __init__(self, register_map: RegisterMap | None = None,
                 maps: Mapping[str, RegisterMap] | None = None) -> None:
        self._maps = dict(maps) if maps is not None else load_register_maps()
        self.register_map = register_map
        self.variants = ("default", *sorted(self._maps))
        self.variant = register_map.name if register_map else "default"
        self._siblings: dict[str, _Modbus] = {}

    def with_variant(self, variant: str) -> Protocol:
        if variant in ("", "default"):
            return self
        if variant not in self._maps:
            raise CommandNotSupportedError(
                f"no register map {variant!r}; known: {sorted(self._maps)}",
                protocol=self.name, hint="add a map to decoders/protocols/modbus-maps/")
        if variant not in self._siblings:
            self._siblings[variant] = type(self)(self._maps[variant], self._maps)
        return self._siblings[variant]

    def _direction(self, frame: bytes, offset: int, size: int) -> bool:
        """Whether the PDU at ``offset`` (``size`` bytes) reads as a reply."""
        first = self.expect == "reply"  # the reading tried first
        if pdu_size(frame, offset, first) == size:
            return first
        if self.expect == "either" and pdu_size(frame, offset, not first) == size:
            return not first
        raise LengthError(f"a {size}-byte PDU does not fit function {frame[offset]:#04x} "
                          "as a request or a reply", protocol=self.name, data=frame,
                          field="pdu", offset=offset)

    # --------------------------------------------------------------- commands
    def commands(self) -> Sequence[str]:
        if self.register_map is None:
            return ()
        return ("read_now", *self.register_map.commands)

    def encode_command(self, command: str, address: str,
                       params: Mapping[str, Any] | None = None, *, sequence: int = 0,
                       timezone: str = "Asia/Shanghai") -> CommandFrame:
        if self.register_map is None:
            raise CommandNotSupportedError(
                f"{self.name} needs a register map for {command!r}", protocol=self.name,
                hint=f"use {self.name}:<map>, maps: {sorted(self._maps)}")
        try:
            unit = int(address)
        except ValueError:
            raise EncodeError(f"a Modbus address is the unit id 0..247, got {address!r}",
                              protocol=self.name, field="address") from None
        params = dict(params or {})
        if command == "read_now":
            blocks = self.register_map.blocks
            index = int(params.get("block", 0))
            if not 0 <= index < len(blocks):
                raise EncodeError(f"block {index}: the map has {len(blocks)}",
                                  protocol=self.name, field="block")
            block = blocks[index]
            items: list[DataItem] = [DataItem(name="start_address", value=block.start),
                                     DataItem(name="quantity", value=block.quantity)]
            function = block.function
        else:
            spec = self.register_map.commands.get(command)
            if spec is None:
                raise CommandNotSupportedError(
                    f"register map {self.register_map.name} has no {command!r}",
                    protocol=self.name, hint=f"supported: {list(self.commands())}")
            function, items = spec.items(params)
        request = Frame(protocol=self.name, direction="request", function=function,
                        address=str(unit), control=_CODES[function],
                        sequence=sequence & 0xFFFF if self.name == "modbus-tcp" else None,
                        items=tuple(items))
        data = self.encode(request)
        return CommandFrame(protocol=self.name, command=command, address=str(unit), data=data,
                            request=self.decode(data), expects_reply=unit != 0,
                            match_on=("address", "function", "sequence"))

    def apply_map(self, request: CommandFrame, reply: Frame) -> Frame:
        """The reply with the register map's named values as items (for reports)."""
        if self.register_map is None or reply.abnormal:
            return reply
        values = reply.values()
        start = request.request.values().get("start_address")
        if start is None or ("registers" not in values and "coils" not in values
                             and "inputs" not in values):
            return reply
        raw = values.get("registers", values.get("coils", values.get("inputs"))) or []
        items = self.register_map.decode(request.request.function, int(start), raw)
        return Frame(protocol=reply.protocol, direction=reply.direction,
                     function=reply.function, address=reply.address, control=reply.control,
                     sequence=reply.sequence, header={**reply.header,
                                                      "map": self.register_map.name},
                     items=tuple(items))

    def interpret(self, request: CommandFrame, reply: Frame) -> CommandOutcome:
        return super().interpret(request, self.apply_map(request, reply))


class ModbusRtu(_Modbus):
    """Modbus RTU (serial, CRC); ``modbus-rtu:<map>`` binds a register map."""

    name = "modbus-rtu"
    title = "Modbus RTU (serial, CRC-16)"

    def frame_specs(self) -> Sequence[FrameSpec]:
        return (RtuSpec(self.expect),)

    def decode(self, data: bytes) -> Frame:
        data = bytes(data)
        n = len(data)
        if n < 4:
            raise LengthError(f"truncated: {n} bytes, an RTU frame has at least 4",
                              protocol=self.name, data=data, field="pdu", offset=n)
        crc = data[-2] | data[-1] << 8
        expected = crc16_modbus(data[:-2])
        if crc != expected:
            raise ChecksumError(f"crc16_modbus is {crc:04X}, the content gives {expected:04X}",
                                protocol=self.name, data=data, field="checksum",
                                offset=n - 2)
        if not _known(data[1]):
            raise FieldValueError(f"unknown function code {data[1]:#04x}", protocol=self.name,
                                  data=data, field="function", offset=1)
        reply = self._direction(data[:-2], 1, n - 3)
        function, fc, abnormal, items = decode_pdu(self.name, data[:-2], 1, reply)
        return Frame(protocol=self.name, direction="reply" if reply else "request",
                     function=function, address=str(data[0]), control=fc,
                     abnormal=abnormal, items=tuple(items))

    def encode(self, frame: Frame) -> bytes:
        body = bytes([_unit(frame)]) + encode_pdu(frame)
        return body + crc16_modbus(body).to_bytes(2, "little")


class ModbusTcp(_Modbus):
    """Modbus TCP (MBAP header); ``modbus-tcp:<map>`` binds a register map."""

    name = "modbus-tcp"
    title = "Modbus TCP (MBAP)"

    def frame_specs(self) -> Sequence[FrameSpec]:
        return (TcpSpec(),)

    def decode(self, data: bytes) -> Frame:
        data = bytes(data)
        n = len(data)
        if n < 8:
            raise LengthError(f"truncated: {n} bytes, MBAP header and function need 8",
                              protocol=self.name, data=data, field="header", offset=n)
        transaction, protocol_id, length, unit = struct.unpack(">HHHB", data[:7])
        if protocol_id != 0:
            raise FieldValueError(f"protocol id {protocol_id:04X}, Modbus is 0000",
                                  protocol=self.name, data=data, field="protocol_id",
                                  offset=2)
        if length != n - 6:
            raise LengthError(f"length field says {length}, {n - 6} bytes follow it",
                              protocol=self.name, data=data, field="length", offset=4)
        if not _known(data[7]):
            raise FieldValueError(f"unknown function code {data[7]:#04x}", protocol=self.name,
                                  data=data, field="function", offset=7)
        reply = self._direction(data, 7, n - 7)
        function, fc, abnormal, items = decode_pdu(self.name, data, 7, reply)
        return Frame(protocol=self.name, direction="reply" if reply else "request",
                     function=function, address=str(unit), control=fc, abnormal=abnormal,
                     sequence=transaction, items=tuple(items))

    def encode(self, frame: Frame) -> bytes:
        pdu = encode_pdu(frame)
        return _MBAP.pack((frame.sequence or 0) & 0xFFFF, 0, len(pdu) + 1, _unit(frame)) + pdu


def _unit(frame: Frame) -> int:
    address = frame.address
    if address.isdigit() and len(address) <= 3:
        unit = int(address)
        if unit <= 255:
            return unit
    try:
        unit = int(address or 0)
    except ValueError:
        raise EncodeError(f"unit id {frame.address!r} is not a number", protocol=frame.protocol,
                          field="address") from None
    if not 0 <= unit <= 255:
        raise EncodeError(f"unit id {unit} is outside 0..255", protocol=frame.protocol,
                          field="address")
    return unit

