"""DLMS/COSEM transports: HDLC (IEC 62056-46), the TCP/UDP wrapper (IEC 62056-47), bare APDUs.

HDLC::

    7E | format 1010 S LLL LLLLLLLL | destination | source | control | [HCS | LLC | info]
       | FCS | 7E        (HCS, FCS = CRC-16/X.25 sent low byte first; addresses end at a
                          byte whose bit 0 is set; LLC E6 E6 00 request, E6 E7 00 reply)

Wrapper::

    version 0001 | source wPort | destination wPort | length  (all 2 bytes, big endian) | APDU

Strategy: both transports are :class:`~decoders.framing.Envelope` s (the HDLC length is the
11 low bits of the format field; the wrapper's "start" is its version 00 01); the APDU inside
is decoded by :mod:`decoders.dlms_apdu`. The HDLC address, control (I, RR, RNR, SNRM, DISC,
UA, DM, FRMR, UI with N(S), N(R), P/F) and LLC are header fields, so frames re-encode
exactly. Commands: ``read_now`` is a GET-Request-Normal of an OBIS attribute (default the
active energy import 1-0:1.8.0.255, class 3, attribute 2); replies match by invoke id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from decoders.checksums import crc16_x25
from decoders.dlms_apdu import ApduError, decode_apdu, encode_apdu, parse_obis
from decoders.errors import ChecksumError, EncodeError, FieldValueError, LengthError
from decoders.frame import DataItem, Direction, Frame
from decoders.framing import ChecksumSpec, Envelope, FrameSpec, LengthField
from decoders.protocol import CommandFrame, Protocol

__all__ = ["DlmsApdu", "DlmsHdlc", "DlmsWrapper"]

HDLC = Envelope(name="hdlc", protocol="dlms-hdlc", start=b"\x7e", header_size=3,
                length=LengthField(offset=1, size=2, order="big", mask=0x07FF, add=2,
                                   minimum=5),
                end=b"\x7e", checksum=ChecksumSpec(algorithm="crc16_x25", start=1, end=-3),
                max_frame=2050)
WRAPPER = Envelope(name="wrapper", protocol="dlms-wrapper", start=b"\x00\x01",
                   header_size=8, length=LengthField(offset=6, size=2, order="big", add=8,
                                                     minimum=1),
                   max_frame=65535 + 8)

_REQUEST_TAGS = frozenset({0xC0, 0xC1, 0xC3, 0x60, 0x62})
_REPLY_TAGS = frozenset({0xC4, 0xC5, 0xC7, 0x61, 0x63, 0xD8, 0x0E})
_U_FRAMES = {0x83: "snrm", 0x43: "disc", 0x63: "ua", 0x0F: "dm", 0x87: "frmr", 0x03: "ui"}
_U_CODES = {name: code for code, name in _U_FRAMES.items()}
LLC_REQUEST = b"\xe6\xe6\x00"
LLC_REPLY = b"\xe6\xe7\x00"


def _refused(items: Sequence[DataItem]) -> bool:
    """A data-access-result or an exception response: the meter refused."""
    return any(i.name in ("error", "state_error") for i in items)


def _apdu_direction(apdu: bytes) -> Direction:
    if apdu and apdu[0] in _REQUEST_TAGS:
        return "request"
    if apdu and apdu[0] in _REPLY_TAGS:
        return "reply"
    return "report"


class _Dlms(Protocol):
    """Commands shared by the transports."""

    def commands(self) -> Sequence[str]:
        return ("read_now",)

    def _get_request(self, params: Mapping[str, Any], sequence: int) -> bytes:
        try:
            obis = str(params.get("obis", "1-0:1.8.0.255"))
            parse_obis(obis)
            items = [DataItem(name="invoke_id", value=sequence & 0x0F),
                     DataItem(name="confirmed", value=True),
                     DataItem(name="high_priority", value=True),
                     DataItem(name="class_id", value=int(params.get("class_id", 3))),
                     DataItem(name="obis", value=obis),
                     DataItem(name="attribute", value=int(params.get("attribute", 2)))]
            return encode_apdu("get_request_normal", items)
        except (ValueError, TypeError) as exc:
            raise EncodeError(f"GET request: {exc}", protocol=self.name,
                              field="obis") from None

    def matches(self, request: CommandFrame, reply: Frame) -> bool:
        if reply.protocol != request.protocol or reply.direction != "reply":
            return False
        if not reply.function.startswith("get_response"):
            return False
        return reply.sequence == request.request.sequence


class DlmsApdu(_Dlms):
    """A bare xDLMS/ACSE APDU (no transport)."""

    name = "dlms-apdu"
    title = "DLMS/COSEM APDU (xDLMS, ACSE)"

    def frame_specs(self) -> Sequence[FrameSpec]:
        return ()

    def framer(self, *, max_buffer: int = 65536) -> Any:
        raise EncodeError("a bare APDU has no framing: use dlms-hdlc or dlms-wrapper",
                          protocol=self.name)

    def decode(self, data: bytes) -> Frame:
        data = bytes(data)
        try:
            function, items, invoke = decode_apdu(data)
        except ApduError as exc:
            raise FieldValueError(exc.reason, protocol=self.name, data=data, field=exc.field,
                                  offset=exc.offset) from None
        return Frame(protocol=self.name, direction=_apdu_direction(data), function=function,
                     control=data[0], sequence=invoke, abnormal=_refused(items),
                     items=tuple(items))

    def encode(self, frame: Frame) -> bytes:
        try:
            return encode_apdu(frame.function, frame.items)
        except (KeyError, ValueError, TypeError) as exc:
            raise EncodeError(f"{frame.function}: {exc}", protocol=self.name,
                              field="items") from None

    def encode_command(self, command: str, address: str,
                       params: Mapping[str, Any] | None = None, *, sequence: int = 0,
                       timezone: str = "Asia/Shanghai") -> CommandFrame:
        if command != "read_now":
            return super().encode_command(command, address, params)
        data = self._get_request(params or {}, sequence)
        return CommandFrame(protocol=self.name, command=command, address=address, data=data,
                            request=self.decode(data), match_on=("sequence",))


class DlmsWrapper(_Dlms):
    """DLMS/COSEM over TCP or UDP with the IEC 62056-47 wrapper (port 4059)."""

    name = "dlms-wrapper"
    title = "DLMS/COSEM wrapper (IEC 62056-47, TCP/UDP)"

    def frame_specs(self) -> Sequence[FrameSpec]:
        return (WRAPPER,)

    def decode(self, data: bytes) -> Frame:
        data = bytes(data)
        WRAPPER.validate(data)
        source, destination = data[2] << 8 | data[3], data[4] << 8 | data[5]
        apdu = data[8:]
        try:
            function, items, invoke = decode_apdu(apdu)
        except ApduError as exc:
            raise FieldValueError(exc.reason, protocol=self.name, data=data,
                                  field=exc.field, offset=8 + exc.offset) from None
        return Frame(protocol=self.name, direction=_apdu_direction(apdu), function=function,
                     address=str(destination), control=apdu[0], sequence=invoke,
                     abnormal=_refused(items),
                     header={"source_wport": source, "destination_wport": destination},
                     items=tuple(items))

    def encode(self, frame: Frame) -> bytes:
        try:
            apdu = encode_apdu(frame.function, frame.items)
        except (KeyError, ValueError, TypeError) as exc:
            raise EncodeError(f"{frame.function}: {exc}", protocol=self.name,
                              field="items") from None
        source = int(frame.header.get("source_wport", 16))
        destination = int(frame.header.get("destination_wport", frame.address or 1))
        return b"\x00\x01" + source.to_bytes(2, "big") + destination.to_bytes(2, "big") + \
            len(apdu).to_bytes(2, "big") + apdu

    def encode_command(self, command: str, address: str,
                       params: Mapping[str, Any] | None = None, *, sequence: int = 0,
                       timezone: str = "Asia/Shanghai") -> CommandFrame:
        if command != "read_now":
            return super().encode_command(command, address, params)
        params = dict(params or {})
        apdu = self._get_request(params, sequence)
        request = DlmsApdu().decode(apdu)
        frame = Frame(protocol=self.name, direction="request", function=request.function,
                      address=str(address or 1), sequence=request.sequence,
                      header={"source_wport": int(params.get("client_wport", 16)),
                              "destination_wport": int(address or 1)},
                      items=request.items)
        data = self.encode(frame)
        return CommandFrame(protocol=self.name, command=command, address=frame.address,
                            data=data, request=self.decode(data), match_on=("sequence",))


def _address(data: bytes, pos: int, end: int) -> int:
    """Offset just past the HDLC address starting at ``pos``."""
    for index in range(pos, min(end, pos + 4)):
        if data[index] & 1:
            return index + 1
    raise LengthError("an HDLC address ends at a byte with bit 0 set (1, 2 or 4 bytes)",
                      protocol="dlms-hdlc", data=data, field="address", offset=pos)


def _describe_address(raw: bytes) -> dict[str, int]:
    if len(raw) == 1:
        return {"sap": raw[0] >> 1}
    half = len(raw) // 2
    upper = lower = 0
    for byte in raw[:half]:
        upper = upper << 7 | byte >> 1
    for byte in raw[half:]:
        lower = lower << 7 | byte >> 1
    return {"logical": upper, "physical": lower}


class DlmsHdlc(_Dlms):
    """DLMS/COSEM over HDLC (optical port, RS-485, and most DLMS modems)."""

    name = "dlms-hdlc"
    title = "DLMS/COSEM HDLC (IEC 62056-46)"

    def frame_specs(self) -> Sequence[FrameSpec]:
        return (HDLC,)

    def decode(self, data: bytes) -> Frame:
        data = bytes(data)
        _, end = HDLC.validate(data)
        fcs_at = end - 3
        if data[1] >> 4 != 0xA:
            raise FieldValueError(f"frame format type {data[1] >> 4:X}, DLMS uses type 3 "
                                  "(A)", protocol=self.name, data=data, field="format",
                                  offset=1)
        dest_end = _address(data, 3, fcs_at)
        src_end = _address(data, dest_end, fcs_at)
        if src_end >= fcs_at:
            raise LengthError("no control byte", protocol=self.name, data=data,
                              field="control", offset=src_end)
        control = data[src_end]
        header: dict[str, Any] = {
            "segmented": bool(data[1] & 0x08),
            "destination": data[3:dest_end].hex().upper(),
            "source": data[dest_end:src_end].hex().upper(),
            **{f"destination_{k}": v for k, v in
               _describe_address(data[3:dest_end]).items()},
            **{f"source_{k}": v for k, v in _describe_address(data[dest_end:src_end]).items()},
        }
        kind, fields = _control(control)
        header["frame_kind"] = kind
        header.update(fields)
        info_start = src_end + 1
        items: list[DataItem] = []
        function = kind
        sequence = fields.get("ns")
        direction: Direction = "reply" if dest_end - 3 == 1 else "request"
        if info_start < fcs_at:
            if fcs_at - info_start < 2:
                raise LengthError("an information field needs an HCS first", protocol=self.name,
                                  data=data, field="hcs", offset=info_start)
            hcs = data[info_start] | data[info_start + 1] << 8
            expected = crc16_x25(data[1:info_start])
            if hcs != expected:
                raise ChecksumError(f"HCS is {hcs:04X}, the header gives {expected:04X}",
                                    protocol=self.name, data=data, field="hcs",
                                    offset=info_start)
            info = data[info_start + 2:fcs_at]
            apdu_at = info_start + 2
            if info[:3] in (LLC_REQUEST, LLC_REPLY) and kind in ("i", "ui") \
                    and not header["segmented"]:
                header["llc"] = info[:3].hex().upper()
                apdu = info[3:]
                apdu_at += 3
                try:
                    function, apdu_items, invoke = decode_apdu(apdu)
                except ApduError as exc:
                    raise FieldValueError(exc.reason, protocol=self.name, data=data,
                                          field=exc.field, offset=apdu_at + exc.offset) \
                        from None
                items = apdu_items
                sequence = invoke
                direction = "request" if info[:3] == LLC_REQUEST else "reply"
            else:
                items = [DataItem(name="info", value=info)]
        return Frame(protocol=self.name, direction=direction, function=function,
                     address=header["destination"], control=control, sequence=sequence,
                     abnormal=_refused(items), header=header, items=tuple(items))

    def encode(self, frame: Frame) -> bytes:
        header = frame.header
        try:
            destination = bytes.fromhex(header.get("destination", frame.address))
            source = bytes.fromhex(header["source"])
        except (KeyError, ValueError):
            raise EncodeError("HDLC frames need header 'destination' and 'source' (hex)",
                              protocol=self.name, field="header") from None
        control = frame.control or _control_code(header)
        info = b""
        if "llc" in header:
            try:
                info = bytes.fromhex(header["llc"]) + encode_apdu(frame.function, frame.items)
            except (KeyError, ValueError, TypeError) as exc:
                raise EncodeError(f"{frame.function}: {exc}", protocol=self.name,
                                  field="items") from None
        elif frame.item("info") is not None:
            info = bytes(frame.values()["info"])
        body_length = 2 + len(destination) + len(source) + 1 + (2 + len(info) if info else 0) + 2
        if body_length > 0x7FF:
            raise EncodeError(f"{body_length} bytes exceed one HDLC frame (2047); segment "
                              "the APDU", protocol=self.name, field="items")
        fmt = 0xA000 | (0x0800 if header.get("segmented") else 0) | body_length
        out = bytearray(b"\x7e") + fmt.to_bytes(2, "big") + destination + source + \
            bytes([control])
        if info:
            out += crc16_x25(out[1:]).to_bytes(2, "little") + info
        out += crc16_x25(out[1:]).to_bytes(2, "little") + b"\x7e"
        return bytes(out)

    def encode_command(self, command: str, address: str,
                       params: Mapping[str, Any] | None = None, *, sequence: int = 0,
                       timezone: str = "Asia/Shanghai") -> CommandFrame:
        """``address``: the server's HDLC address as sent (hex, e.g. ``0223``); params
        ``client`` (hex, default ``21`` = public client 16), ``ns``/``nr`` (the link's
        send and receive counters), plus the GET parameters."""
        if command != "read_now":
            return super().encode_command(command, address, params)
        params = dict(params or {})
        apdu = self._get_request(params, sequence)
        request = DlmsApdu().decode(apdu)
        ns, nr = int(params.get("ns", 0)) & 7, int(params.get("nr", 0)) & 7
        frame = Frame(protocol=self.name, direction="request", function=request.function,
                      address=address, control=(nr << 5) | 0x10 | (ns << 1),
                      sequence=request.sequence,
                      header={"destination": address, "source": params.get("client", "21"),
                              "llc": LLC_REQUEST.hex().upper()},
                      items=request.items)
        data = self.encode(frame)
        return CommandFrame(protocol=self.name, command=command, address=address, data=data,
                            request=self.decode(data), match_on=("sequence",))


def _control(control: int) -> tuple[str, dict[str, Any]]:
    if control & 1 == 0:
        return "i", {"ns": (control >> 1) & 7, "nr": control >> 5,
                     "poll_final": bool(control & 0x10)}
    if control & 3 == 1:
        kind = {0: "rr", 1: "rnr"}.get((control >> 2) & 3, f"s{(control >> 2) & 3}")
        return kind, {"nr": control >> 5, "poll_final": bool(control & 0x10)}
    base = control & ~0x10
    return _U_FRAMES.get(base, f"u_0x{base:02X}"), {"poll_final": bool(control & 0x10)}


def _control_code(header: Mapping[str, Any]) -> int:
    kind = header.get("frame_kind", "i")
    pf = 0x10 if header.get("poll_final") else 0
    if kind == "i":
        return (int(header.get("nr", 0)) << 5) | pf | (int(header.get("ns", 0)) << 1)
    if kind in ("rr", "rnr"):
        return (int(header.get("nr", 0)) << 5) | pf | (0x01 if kind == "rr" else 0x05)
    return _U_CODES.get(kind, 0x03) | pf
