"""Q/GDW 376.1 — the master-station ↔ concentrator protocol of Chinese power utilities.

::

    68 | L L | L L | 68 | C | A1 A1 | A2 A2 | A3 | AFN | SEQ | DA DA DT DT data .. |
       [PW ×16] [EC EC] [Tp ×6] | CS | 16

    L = user-data length << 2 | 2 (little endian, sent twice); CS = sum of C..last byte

C: DIR (bit 7, 1 = from the terminal), PRM (bit 6, 1 = initiating station), FCB/ACD (5),
FCV (4), function (0–3). A1 is the area code (BCD, shown high byte first), A2 the terminal
number, A3 the master-station address and group flag. SEQ: TpV, FIR, FIN, CON and the
sequence number. DA/DT name the measuring point ``pN`` and the function ``Fn``.

Strategy: the envelope is a template-style :class:`~decoders.framing.Envelope`; the
application layer decodes what a head-end needs from a concentrator link — link test
(AFN 02: F1 login, F2 logout, F3 heartbeat), confirm/deny (AFN 00) and data forwarding
(AFN 10 F1), whose content is decoded by the inner protocol (DL/T 645 meters behind the
concentrator), and the energy registers of class 1 / class 2 data (AFN 0C current, AFN 0D
frozen: :mod:`decoders.qgdw3761_data`, one item per measuring point and function).
``forward(command)`` wraps any unified command of an inner protocol, and
``matches``/``interpret`` unwrap the reply; ``request_data`` asks for class 1/2 data.
The raw data units are kept as well, so every frame re-encodes exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from decoders.errors import DecodeError, EncodeError, FieldValueError, LengthError
from decoders.frame import DataItem, Direction, Frame
from decoders.framing import ChecksumSpec, Envelope, FrameSpec, LengthField
from decoders.protocol import CommandFrame, CommandOutcome, Protocol
from decoders.qgdw3761_data import decode_data_units

__all__ = ["AFN_NAMES", "QGDW3761", "data_unit", "fn_of", "pn_of"]

ENVELOPE = Envelope(name="frame", protocol="qgdw376.1", start=b"\x68", header_size=6,
                    length=LengthField(offset=1, size=2, order="little", shift=2, add=8,
                                       repeat_at=3, minimum=8),
                    marks=((5, b"\x68"),), end=b"\x16",
                    checksum=ChecksumSpec(algorithm="sum8", start=6, end=-2),
                    max_frame=16383 + 8)

AFN_NAMES = {0x00: "confirm_deny", 0x01: "reset", 0x02: "link_test", 0x03: "relay_command",
             0x04: "set_parameters", 0x05: "control", 0x06: "authentication",
             0x08: "request_cascade_report", 0x09: "request_configuration",
             0x0A: "query_parameters", 0x0B: "request_task_data", 0x0C: "class1_data",
             0x0D: "class2_data", 0x0E: "class3_data", 0x0F: "file_transfer",
             0x10: "data_forwarding"}
_AFN_CODES = {name: code for code, name in AFN_NAMES.items()}
LINK_TEST = {1: "login", 2: "logout", 3: "heartbeat"}
CONFIRM = {1: "confirm_all", 2: "deny_all", 3: "confirm_deny_by_unit"}
#: AFNs whose downlink frames carry the 16-byte message authentication code PW
_WITH_PASSWORD = frozenset({0x01, 0x04, 0x05, 0x0F, 0x10})


def pn_of(da: bytes) -> list[int]:
    """Measuring points named by DA1 (bit mask) and DA2 (group); ``[0]`` for p0."""
    da1, da2 = da[0], da[1]
    if da1 == 0 and da2 == 0:
        return [0]
    if da1 == 0xFF and da2 == 0:
        return [-1]  # all measuring points
    return [(da2 - 1) * 8 + bit + 1 for bit in range(8) if da1 >> bit & 1]


def fn_of(dt: bytes) -> list[int]:
    """Functions named by DT1 (bit mask) and DT2 (group)."""
    return [dt[1] * 8 + bit + 1 for bit in range(8) if dt[0] >> bit & 1]


def data_unit(pn: int, fn: int) -> bytes:
    """DA DT for one measuring point and one function."""
    da = b"\x00\x00" if pn == 0 else bytes([1 << ((pn - 1) % 8), (pn - 1) // 8 + 1])
    return da + bytes([1 << ((fn - 1) % 8), (fn - 1) // 8])


class QGDW3761(Protocol):
    """Q/GDW 376.1 (see the module docstring). Variant ``no-password`` for terminals that
    do not expect the PW field in downlink frames."""

    name = "qgdw376.1"
    title = "Q/GDW 376.1 concentrator protocol (master station <-> terminal)"
    variants = ("default", "no-password")

    def __init__(self, variant: str = "default") -> None:
        self.variant = variant
        self._password = variant != "no-password"

    def with_variant(self, variant: str) -> Protocol:
        if variant in ("", self.variant):
            return self
        if variant not in self.variants:
            return super().with_variant(variant)
        return QGDW3761(variant)

    def frame_specs(self) -> Sequence[FrameSpec]:
        return (ENVELOPE,)

    # ----------------------------------------------------------------- decode
    def decode(self, data: bytes) -> Frame:
        data = bytes(data)
        begin, end = ENVELOPE.validate(data)
        protocol_id = data[begin + 1] & 0x03
        user = data[begin + 6:end - 2]
        if len(user) < 8:
            raise LengthError(f"user data of {len(user)} bytes; C, A, AFN and SEQ need 8",
                              protocol=self.name, data=data, field="user_data",
                              offset=begin + 6 + len(user))
        control = user[0]
        up = bool(control & 0x80)
        prm = bool(control & 0x40)
        a1 = user[1:3][::-1].hex().upper()
        a2 = user[3] | user[4] << 8
        a3 = user[5]
        afn, seq = user[6], user[7]
        header: dict[str, Any] = {
            "prm": prm, "fcb_acd": bool(control & 0x20), "fcv": bool(control & 0x10),
            "link_function": control & 0x0F, "a1": a1, "a2": a2,
            "msa": a3 >> 1, "group": bool(a3 & 1), "tpv": bool(seq & 0x80),
            "fir": bool(seq & 0x40), "fin": bool(seq & 0x20), "con": bool(seq & 0x10),
        }
        if protocol_id != 2:
            header["protocol_id"] = protocol_id
        body = user[8:]
        base = begin + 14
        # trailing auxiliary fields, last first
        if seq & 0x80:
            if len(body) < 6:
                raise LengthError("TpV is set but the frame has no room for Tp",
                                  protocol=self.name, data=data, field="tp", offset=base)
            header["tp"] = body[-6:].hex().upper()
            body = body[:-6]
        if up and control & 0x20:  # ACD: event counters follow
            if len(body) < 2:
                raise LengthError("ACD is set but the frame has no room for EC",
                                  protocol=self.name, data=data, field="ec", offset=base)
            header["ec"] = [body[-2], body[-1]]
            body = body[:-2]
        if not up and afn in _WITH_PASSWORD and self._password:
            if len(body) < 16:
                raise LengthError("this AFN carries the 16-byte PW in downlink frames "
                                  "(variant no-password if the terminal omits it)",
                                  protocol=self.name, data=data, field="pw", offset=base)
            header["pw"] = body[-16:].hex().upper()
            body = body[:-16]
        items, pn, fn = self._units(data, base, afn, up, body)
        function = AFN_NAMES.get(afn, f"afn_0x{afn:02X}")
        if afn == 0x02 and fn in LINK_TEST:
            function = LINK_TEST[fn]
        elif afn == 0x00 and fn in CONFIRM:
            function = CONFIRM[fn]
        direction: Direction = "report" if up and prm else ("reply" if up else "request")
        return Frame(protocol=self.name, direction=direction, function=function,
                     address=f"{a1}{a2:04X}", control=control,
                     abnormal=afn == 0x00 and fn == 2,
                     identifier=f"AFN{afn:02X}:p{pn}:F{fn}" if fn else f"AFN{afn:02X}",
                     sequence=seq & 0x0F, header=header, items=tuple(items))

    def _units(self, data: bytes, base: int, afn: int, up: bool, body: bytes
               ) -> tuple[list[DataItem], int, int]:
        if not body:
            return [], 0, 0
        if len(body) < 4:
            raise LengthError("a data unit needs DA and DT (4 bytes)", protocol=self.name,
                              data=data, field="data_unit", offset=base + len(body))
        da, dt, rest = body[0:2], body[2:4], body[4:]
        pns, fns = pn_of(da), fn_of(dt)
        if not fns:
            raise FieldValueError("DT names no function (DT1 = 0)", protocol=self.name,
                                  data=data, field="dt", offset=base + 2)
        pn, fn = pns[0] if pns else 0, fns[0]
        items: list[DataItem] = []
        if len(pns) != 1 or len(fns) != 1:
            items.append(DataItem(name="units", value={"pn": pns, "fn": fns}))
        if afn == 0x10 and fn == 1:
            items += self._forwarding(data, base + 4, up, rest)
        elif afn == 0x00 and fn == 3 and up is not None and rest:
            items += self._confirm_units(data, base + 4, rest)
        elif rest:
            items.append(DataItem(name="data", value=rest))
            if up and afn in (0x0C, 0x0D):  # class 1 / class 2 data: every unit, decoded
                items += decode_data_units(afn, body, data=data, base=base)
        if pns != [pn] or fns != [fn] or (da, dt) != (data_unit(pn, fn)[:2],
                                                      data_unit(pn, fn)[2:]):
            items.append(DataItem(name="dadt", value=(da + dt).hex().upper()))
        return items, pn, fn

    def _forwarding(self, data: bytes, base: int, up: bool, rest: bytes) -> list[DataItem]:
        head = 3 if up else 6
        if len(rest) < head:
            raise LengthError("AFN 10 F1 data is shorter than its fixed fields",
                              protocol=self.name, data=data, field="forwarding",
                              offset=base + len(rest))
        if up:
            port, length = rest[0], rest[1] | rest[2] << 8
            items = [DataItem(name="port", value=port)]
        else:
            port, control_word, frame_timeout, byte_timeout = rest[0], rest[1], rest[2], rest[3]
            length = rest[4] | rest[5] << 8
            items = [DataItem(name="port", value=port),
                     DataItem(name="comm_control", value=control_word),
                     DataItem(name="frame_timeout", value=frame_timeout),
                     DataItem(name="byte_timeout", value=byte_timeout)]
        content = rest[head:]
        if len(content) != length:
            reason = f"forwarded content length says {length}, {len(content)} bytes follow"
            if not up and self._password and len(content) < length:
                reason += ("; if the sender omits the 16-byte PW, decode with variant "
                           "qgdw376.1:no-password")
            raise LengthError(reason, protocol=self.name, data=data,
                              field="forwarding.length", offset=base + head - 2)
        items.append(DataItem(name="forwarded", value=content))
        inner = _inner_frame(content)
        if inner is not None:
            items.append(DataItem(name="forwarded_frame", value=inner.to_dict(),
                                  attrs={"protocol": inner.protocol}))
        return items

    def _confirm_units(self, data: bytes, base: int, rest: bytes) -> list[DataItem]:
        afn, units = rest[0], rest[1:]
        if len(units) % 5:
            raise LengthError("confirm/deny units are DA DT ERR (5 bytes each)",
                              protocol=self.name, data=data, field="units",
                              offset=base + 1 + len(units))
        results = [{"dadt": units[i:i + 4].hex().upper(), "error": units[i + 4]}
                   for i in range(0, len(units), 5)]
        return [DataItem(name="confirmed_afn", value=afn),
                DataItem(name="unit_results", value=results)]

    # ----------------------------------------------------------------- encode
    def encode(self, frame: Frame) -> bytes:
        header = frame.header
        try:
            afn_text, _, rest = (frame.identifier or "").partition(":")
            afn = int(afn_text[3:], 16)
            pn = fn = 0
            if rest:
                pn_text, _, fn_text = rest.partition(":")
                pn, fn = int(pn_text[1:]), int(fn_text[1:])
            address = frame.address
            a1 = bytes.fromhex(address[:4])[::-1]
            a2 = int(address[4:], 16)
        except (ValueError, IndexError):
            raise EncodeError(f"identifier {frame.identifier!r} / address {frame.address!r}: "
                              "expected 'AFNxx:pN:Fn' and A1 (4 hex) + A2 (4 hex)",
                              protocol=self.name, field="identifier") from None
        up = frame.direction != "request"
        control = frame.control or ((0x80 if up else 0) |
                                    (0x40 if header.get("prm", frame.direction != "reply")
                                     else 0) | int(header.get("link_function", 0)))
        seq = (frame.sequence or 0) & 0x0F
        for bit, key in ((0x80, "tpv"), (0x40, "fir"), (0x20, "fin"), (0x10, "con")):
            if header.get(key, key in ("fir", "fin")):
                seq |= bit
        a3 = (int(header.get("msa", 0)) << 1) | (1 if header.get("group") else 0)
        user = bytearray([control]) + a1 + a2.to_bytes(2, "little") + bytes([a3, afn, seq])
        values = {i.name: i for i in frame.items}
        if fn:
            dadt = values.get("dadt")
            user += bytes.fromhex(dadt.value) if dadt else data_unit(pn, fn)
        if afn == 0x10 and fn == 1:
            content = bytes(values["forwarded"].value)
            if up:
                user += bytes([values["port"].value]) + len(content).to_bytes(2, "little")
            else:
                user += bytes([values["port"].value, values["comm_control"].value,
                               values["frame_timeout"].value, values["byte_timeout"].value])
                user += len(content).to_bytes(2, "little")
            user += content
        elif afn == 0x00 and fn == 3 and "unit_results" in values:
            user.append(values["confirmed_afn"].value)
            for unit in values["unit_results"].value:
                user += bytes.fromhex(unit["dadt"]) + bytes([unit["error"]])
        elif "data" in values:
            user += bytes(values["data"].value)
        if "pw" in header:
            user += bytes.fromhex(header["pw"])
        elif not up and afn in _WITH_PASSWORD and self._password:
            user += bytes(16)
        if "ec" in header:
            user += bytes(header["ec"])
        if "tp" in header:
            user += bytes.fromhex(header["tp"])
        length = (len(user) << 2) | int(header.get("protocol_id", 2))
        field = length.to_bytes(2, "little")
        frame_bytes = b"\x68" + field + field + b"\x68" + bytes(user) + \
            bytes([sum(user) & 0xFF, 0x16])
        return frame_bytes

    # ----------------------------------------------------------------- link service
    def confirm(self, frame: Frame, *, msa: int | None = None) -> bytes:
        """The master station's AFN 00 F1 confirmation of a login / heartbeat / logout
        (same terminal address, the frame's sequence number as RSEQ)."""
        reply = Frame(protocol=self.name, direction="request", function="confirm_all",
                      address=frame.address, control=0x0B, identifier="AFN00:p0:F1",
                      sequence=frame.sequence,
                      header={"msa": frame.header.get("msa", 0) if msa is None else msa,
                              "fir": True, "fin": True, "con": False})
        return self.encode(reply)

    # ----------------------------------------------------------------- commands
    def commands(self) -> Sequence[str]:
        return ("forward",)

    def data_frame(self, terminal: str, afn: int, units: Sequence[bytes], *,
                   direction: Direction = "reply", sequence: int = 0) -> bytes:
        """A frame of class 1/2 data units (``DA DT [Td] content`` each, e.g. from
        :func:`~decoders.qgdw3761_data.encode_energy_unit`): a concentrator's answer
        (``reply``), its own upload (``report``), or with bare ``DA DT [Td]`` units the master
        station's request (``request``)."""
        if not units or len(units[0]) < 4:
            raise EncodeError("data units start with DA DT", protocol=self.name,
                              field="units")
        first = units[0]
        pns, fns = pn_of(first[:2]), fn_of(first[2:4])
        if len(pns) != 1 or len(fns) != 1:
            raise EncodeError("the first unit must name one point and one function",
                              protocol=self.name, field="units")
        rest = first[4:] + b"".join(units[1:])
        control = {"request": 0x4B, "reply": 0x88, "report": 0xC4}[direction]
        frame = Frame(protocol=self.name, direction=direction, function=AFN_NAMES[afn],
                      address=terminal, control=control,
                      identifier=f"AFN{afn:02X}:p{pns[0]}:F{fns[0]}", sequence=sequence & 0x0F,
                      header={"fir": True, "fin": True, "con": direction == "report"},
                      items=(DataItem(name="data", value=rest),) if rest else ())
        return self.encode(frame)

    def data_request(self, terminal: str, afn: int, points: Sequence[tuple[int, int]], *,
                     sequence: int = 0, label: date | None = None,
                     command: str = "read_now") -> CommandFrame:
        """:meth:`request_data` as a command: its reply (AFN 0C/0D of the same sequence,
        or a denial) is matched and interpreted like any other."""
        data = self.request_data(terminal, afn, points, sequence=sequence, label=label)
        return CommandFrame(protocol=self.name, command=command, address=terminal, data=data,
                            request=self.decode(data), match_on=("address", "sequence"))

    def request_data(self, terminal: str, afn: int, points: Sequence[tuple[int, int]], *,
                     sequence: int = 0, label: date | None = None) -> bytes:
        """The master station asks for class 1 (AFN 0C) or class 2 (AFN 0D) data of
        ``points`` = [(pN, Fn)]; frozen data names its day (or month) ``label``."""
        from decoders.qgdw3761_data import ENERGY_FUNCTIONS

        units = []
        for pn, fn in points:
            unit = data_unit(pn, fn)
            spec = ENERGY_FUNCTIONS.get((afn, fn))
            if spec is not None and spec.frozen:
                if label is None:
                    raise EncodeError(f"AFN {afn:02X} F{fn} needs the frozen "
                                      f"{spec.frozen}", protocol=self.name, field="label")
                unit += bytes.fromhex(f"{label.day:02d}" if spec.frozen == "day" else "")
                unit += bytes.fromhex(f"{label.month:02d}{label.year % 100:02d}")
            units.append(unit)
        return self.data_frame(terminal, afn, units, direction="request", sequence=sequence)

    def forward(self, inner: CommandFrame, terminal: str, *, port: int = 2,
                sequence: int = 0, comm_control: int = 0x6B, frame_timeout: int = 0x8A,
                byte_timeout: int = 0x10) -> CommandFrame:
        """Wrap a meter command (e.g. a DL/T 645 ``read_now``) in AFN 10 F1 for the
        concentrator ``terminal`` (A1+A2, 8 hex digits). ``comm_control`` 0x6B = 2400 bd,
        even parity, 8 data bits, 1 stop bit; ``frame_timeout`` 0x8A = 10 s."""
        request = Frame(protocol=self.name, direction="request", function="data_forwarding",
                        address=terminal, control=0x4A, identifier="AFN10:p0:F1",
                        sequence=sequence & 0x0F,
                        header={"fir": True, "fin": True, "con": False},
                        items=(DataItem(name="port", value=port),
                               DataItem(name="comm_control", value=comm_control),
                               DataItem(name="frame_timeout", value=frame_timeout),
                               DataItem(name="byte_timeout", value=byte_timeout),
                               DataItem(name="forwarded", value=inner.data)))
        data = self.encode(request)
        return CommandFrame(protocol=self.name, command=inner.command, address=terminal,
                            data=data, request=self.decode(data),
                            expects_reply=inner.expects_reply,
                            match_on=("address", "sequence"))

    def encode_command(self, command: str, address: str,
                       params: Mapping[str, Any] | None = None, *, sequence: int = 0,
                       timezone: str = "Asia/Shanghai") -> CommandFrame:
        """A unified command for a meter behind the concentrator at ``address``: params
        ``meter_protocol`` (default dlt645-2007), ``meter_address``, ``port`` and the
        inner command's own parameters."""
        from decoders.registry import get_protocol

        params = dict(params or {})
        inner_proto = get_protocol(str(params.pop("meter_protocol", "dlt645-2007")))
        meter = params.pop("meter_address", None)
        if meter is None:
            raise EncodeError("forwarding needs 'meter_address'", protocol=self.name,
                              field="meter_address")
        port = int(params.pop("port", 2))
        inner = inner_proto.encode_command(command, str(meter), params, sequence=sequence,
                                           timezone=timezone)
        return self.forward(inner, address, port=port, sequence=sequence)

    def matches(self, request: CommandFrame, reply: Frame) -> bool:
        if reply.protocol != self.name or reply.direction == "request":
            return False
        if reply.address != request.address:
            return False
        if request.request.sequence is not None and reply.sequence != request.request.sequence:
            return False
        asked = (request.request.identifier or "")[:5]  # AFN10 forwarding, AFN0C/0D data
        return (reply.identifier or "").startswith(asked) or \
            reply.function in ("deny_all", "confirm_all")

    def interpret(self, request: CommandFrame, reply: Frame) -> CommandOutcome:
        if reply.function == "deny_all":
            return CommandOutcome(status="device_error", command=request.command,
                                  error_code="denied", reason="the concentrator denied the "
                                  "request (AFN 00 F2)")
        if request.request.function in ("class1_data", "class2_data"):
            units = [i for i in reply.items if i.attrs and "pn" in i.attrs]
            points = sorted({int((i.attrs or {})["pn"]) for i in units})
            answered = sorted({int((i.attrs or {})["pn"]) for i in units
                               if not isinstance(i.value, list) or
                               any(v is not None for v in i.value)})
            return CommandOutcome(status="ok", command=request.command,
                                  data={"points": points, "answered": answered})
        content = reply.item("forwarded")
        if content is None or not content.value:
            return CommandOutcome(status="device_error", command=request.command,
                                  error_code="no_answer",
                                  reason="the meter did not answer the concentrator")
        inner = _inner_frame(bytes(content.value))
        if inner is None:
            return CommandOutcome(status="device_error", command=request.command,
                                  error_code="unreadable_answer",
                                  reason="the forwarded answer is not a frame we can read",
                                  data={"forwarded": bytes(content.value).hex().upper()})
        from decoders.registry import get_protocol

        inner_proto = get_protocol(inner.protocol)
        sent = request.request.item("forwarded")
        assert sent is not None
        inner_request = CommandFrame(protocol=inner.protocol, command=request.command,
                                     address=inner.address, data=bytes(sent.value),
                                     request=inner_proto.decode(bytes(sent.value)))
        if not inner_proto.matches(inner_request, inner):
            return CommandOutcome(status="device_error", command=request.command,
                                  error_code="mismatched_answer",
                                  reason="the forwarded answer does not answer the "
                                         "forwarded request (another meter or identifier)",
                                  data={"forwarded": inner.to_dict()})
        return inner_proto.interpret(inner_request, inner)


def _inner_frame(content: bytes) -> Frame | None:
    """The forwarded meter frame, decoded by the first meter protocol that accepts it."""
    from decoders.registry import get_protocol

    for name in ("dlt645-2007", "dlt645-1997", "cjt188-2004", "modbus-rtu"):
        try:
            return get_protocol(name).decode(content)
        except DecodeError:
            continue
    return None
