"""DLMS/COSEM application layer: xDLMS APDUs and A-XDR data, bytes <-> items.

::

    GET-Request-Normal   C0 01 | invoke-id-and-priority | class-id (2) | OBIS (6) |
                         attribute | access-selection (00, or 01 selector data)
    GET-Response-Normal  C4 01 | invoke-id-and-priority | 00 data  |  01 data-access-result
    general-glo-ciphering DB | system-title (len + bytes) | length | security control |
                         invocation counter (4) | ciphertext
    AARQ 60 / AARE 61 / RLRQ 62 / RLRE 63   BER-encoded ACSE

Strategy: the services a head-end reads meters with (GET request/response normal,
exception response, ciphered envelopes, association) are decoded here, exactly and
symmetrically, so ``encode(decode(x)) == x``; the ACSE APDUs are kept as sent with a
summary (result, diagnostic, negotiated PDU size). A-XDR values become plain
Python values with their DLMS type in ``attrs['type']``; arrays and structures keep each
element tagged (``{"type": ..., "value": ...}``) so they can be written back.

Why not the ``dlms-cosem`` package for this layer (it was the candidate, and stays the bench
peer): its ``GetResponseNormal.to_bytes`` fails on what its ``from_bytes`` returns, and its
ACSE parser prints to stdout — neither acceptable in a long-running FEP.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

import numpy as np

from decoders.frame import DataItem

__all__ = ["ApduError", "decode_apdu", "decode_axdr", "encode_apdu", "encode_axdr",
           "format_obis", "parse_obis"]

APDU_TAGS = {0x60: "aarq", 0x61: "aare", 0x62: "rlrq", 0x63: "rlre", 0xC0: "get_request",
             0xC4: "get_response", 0xC1: "set_request", 0xC5: "set_response",
             0xC3: "action_request", 0xC7: "action_response", 0x0F: "data_notification",
             0xD8: "exception_response", 0xDB: "general_glo_ciphering",
             0xDC: "general_ded_ciphering", 0x0E: "confirmed_service_error"}
_TAG_CODES = {name: code for code, name in APDU_TAGS.items()}
GET_KINDS = {1: "normal", 2: "next", 3: "with_list"}
DATA_ACCESS_RESULTS = {0: "success", 1: "hardware_fault", 2: "temporary_failure",
                       3: "read_write_denied", 4: "object_undefined",
                       9: "object_class_inconsistent", 11: "object_unavailable",
                       12: "type_unmatched", 13: "scope_of_access_violated",
                       14: "data_block_unavailable", 15: "long_get_aborted",
                       16: "no_long_get_in_progress", 17: "long_set_aborted",
                       18: "no_long_set_in_progress", 19: "data_block_number_invalid",
                       250: "other_reason"}

#: A-XDR tag -> (type name, fixed size or None)
AXDR_TYPES: dict[int, tuple[str, int | None]] = {
    0x00: ("null_data", 0), 0x01: ("array", None), 0x02: ("structure", None),
    0x03: ("boolean", 1), 0x04: ("bit_string", None), 0x05: ("double_long", 4),
    0x06: ("double_long_unsigned", 4), 0x09: ("octet_string", None),
    0x0A: ("visible_string", None), 0x0C: ("utf8_string", None), 0x0D: ("bcd", 1),
    0x0F: ("integer", 1), 0x10: ("long", 2), 0x11: ("unsigned", 1),
    0x12: ("long_unsigned", 2), 0x14: ("long64", 8), 0x15: ("long64_unsigned", 8),
    0x16: ("enum", 1), 0x17: ("float32", 4), 0x18: ("float64", 8),
    0x19: ("date_time", 12), 0x1A: ("date", 5), 0x1B: ("time", 4),
}
_AXDR_CODES = {name: code for code, (name, _) in AXDR_TYPES.items()}
_INT_FORMATS = {"double_long": ">i", "double_long_unsigned": ">I", "integer": ">b",
                "long": ">h", "unsigned": ">B", "long_unsigned": ">H", "long64": ">q",
                "long64_unsigned": ">Q", "enum": ">B", "bcd": ">b"}


class ApduError(ValueError):
    def __init__(self, reason: str, offset: int, field: str = "apdu") -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset
        self.field = field


def format_obis(raw: bytes) -> str:
    a, b, c, d, e, f = raw
    return f"{a}-{b}:{c}.{d}.{e}.{f}"


def parse_obis(text: str) -> bytes:
    cleaned = text.replace("-", ".").replace(":", ".").replace("*", ".")
    parts = [int(p) for p in cleaned.split(".")]
    if len(parts) != 6 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"OBIS code {text!r}: six numbers 0..255, as A-B:C.D.E.F")
    return bytes(parts)


def _ber_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise ApduError("length byte missing", pos)
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or count > 4 or pos + 1 + count > len(data):
        raise ApduError(f"bad BER length {first:02X}", pos)
    return int.from_bytes(data[pos + 1:pos + 1 + count], "big"), pos + 1 + count


def _ber_length_bytes(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


# ----------------------------------------------------------------------------- A-XDR

def decode_axdr(data: bytes, pos: int = 0, depth: int = 0) -> tuple[Any, str, int]:
    """``(value, type name, next position)`` of the A-XDR value at ``data[pos]``."""
    if depth > 16:
        raise ApduError("A-XDR nesting deeper than 16", pos, "data")
    if pos >= len(data):
        raise ApduError("A-XDR value missing", pos, "data")
    tag = data[pos]
    known = AXDR_TYPES.get(tag)
    if known is None:
        raise ApduError(f"unknown A-XDR type tag {tag:02X}", pos, "data")
    name, size = known
    pos += 1
    if name in ("array", "structure"):
        count, pos = _ber_length(data, pos)
        elements = []
        for _ in range(count):
            value, kind, pos = decode_axdr(data, pos, depth + 1)
            elements.append({"type": kind, "value": value})
        return elements, name, pos
    if name in ("octet_string", "visible_string", "utf8_string", "bit_string"):
        length, pos = _ber_length(data, pos)
        nbytes = (length + 7) // 8 if name == "bit_string" else length
        raw = data[pos:pos + nbytes]
        if len(raw) < nbytes:
            raise ApduError(f"{name} of {nbytes} bytes truncated", pos, "data")
        pos += nbytes
        if name == "visible_string":
            return raw.decode("latin-1"), name, pos
        if name == "utf8_string":
            try:
                return raw.decode("utf-8"), name, pos
            except UnicodeDecodeError:
                raise ApduError("utf8-string is not UTF-8", pos - nbytes, "data") from None
        if name == "bit_string":
            return {"bits": length, "hex": raw.hex().upper()}, name, pos
        return raw.hex().upper(), name, pos
    assert size is not None
    raw = data[pos:pos + size]
    if len(raw) < size:
        raise ApduError(f"{name} of {size} bytes truncated", pos, "data")
    pos += size
    if name == "null_data":
        return None, name, pos
    if name == "boolean":
        return raw[0] != 0 if raw[0] in (0, 1) else raw[0], name, pos
    if name in _INT_FORMATS:
        return struct.unpack(_INT_FORMATS[name], raw)[0], name, pos
    if name == "float32":
        return Decimal(str(np.float32(struct.unpack(">f", raw)[0]))), name, pos
    if name == "float64":
        return Decimal(repr(struct.unpack(">d", raw)[0])), name, pos
    return raw.hex().upper(), name, pos  # date_time, date, time: kept as sent (hex)


def encode_axdr(value: Any, kind: str) -> bytes:
    tag = _AXDR_CODES.get(kind)
    if tag is None:
        raise ValueError(f"unknown A-XDR type {kind!r}")
    out = bytearray([tag])
    if kind in ("array", "structure"):
        out += _ber_length_bytes(len(value))
        for element in value:
            out += encode_axdr(element["value"], element["type"])
    elif kind in ("octet_string", "visible_string", "utf8_string"):
        raw = bytes.fromhex(value) if kind == "octet_string" else \
            str(value).encode("latin-1" if kind == "visible_string" else "utf-8")
        out += _ber_length_bytes(len(raw)) + raw
    elif kind == "bit_string":
        out += _ber_length_bytes(int(value["bits"])) + bytes.fromhex(value["hex"])
    elif kind == "null_data":
        pass
    elif kind == "boolean":
        out.append(value if isinstance(value, int) and not isinstance(value, bool)
                   else (1 if value else 0))
    elif kind in _INT_FORMATS:
        out += struct.pack(_INT_FORMATS[kind], int(value))
    elif kind == "float32":
        out += struct.pack(">f", float(value))
    elif kind == "float64":
        out += struct.pack(">d", float(value))
    else:
        out += bytes.fromhex(value)
    return bytes(out)


def _data_items(value: Any, kind: str) -> list[DataItem]:
    return [DataItem(name="value", value=value, attrs={"type": kind})]


# ----------------------------------------------------------------------------- APDUs

def decode_apdu(apdu: bytes) -> tuple[str, list[DataItem], int | None]:
    """``(function, items, invoke id)`` of an xDLMS/ACSE APDU (offsets in errors are
    relative to the APDU)."""
    if not apdu:
        raise ApduError("empty APDU", 0)
    tag = apdu[0]
    name = APDU_TAGS.get(tag)
    if name is None:
        raise ApduError(f"unknown APDU tag {tag:02X}", 0, "apdu.tag")
    if name in ("get_request", "get_response"):
        if len(apdu) < 3:
            raise ApduError(f"{name} shorter than its header", len(apdu))
        kind = GET_KINDS.get(apdu[1])
        if kind is None:
            raise ApduError(f"{name} choice {apdu[1]:02X} unknown", 1, "apdu.choice")
        iid = apdu[2]
        items = [DataItem(name="invoke_id", value=iid & 0x0F),
                 DataItem(name="confirmed", value=bool(iid & 0x40)),
                 DataItem(name="high_priority", value=bool(iid & 0x80))]
        if iid & 0x30:
            items.append(DataItem(name="iid_reserved", value=(iid >> 4) & 3))
        function = f"{name}_{kind}"
        if kind == "normal" and name == "get_request":
            body = apdu[3:]
            if len(body) < 10:
                raise ApduError("GET-Request-Normal needs class, OBIS, attribute, "
                                "access selection", len(apdu))
            class_id = int.from_bytes(body[0:2], "big")
            items += [DataItem(name="class_id", value=class_id),
                      DataItem(name="obis", value=format_obis(body[2:8])),
                      DataItem(name="attribute", value=body[8])]
            if body[9] == 0:
                if len(body) != 10:
                    raise ApduError(f"{len(body) - 10} bytes after the request", 13)
                items.append(DataItem(name="access_selection", value=None))
            elif body[9] == 1:
                if len(body) < 11:
                    raise ApduError("access selector missing", len(apdu))
                value, kind_name, end = decode_axdr(body, 11)
                if end != len(body):
                    raise ApduError(f"{len(body) - end} bytes after the request",
                                    3 + end)
                items += [DataItem(name="access_selector", value=body[10]),
                          DataItem(name="access_parameters", value=value,
                                   attrs={"type": kind_name})]
            else:
                raise ApduError(f"access-selection flag {body[9]:02X}", 12,
                                "apdu.access_selection")
            return function, items, iid & 0x0F
        if kind == "normal" and name == "get_response":
            if len(apdu) < 4:
                raise ApduError("GET-Response-Normal without its result", len(apdu))
            if apdu[3] == 0:
                value, kind_name, end = decode_axdr(apdu, 4)
                if end != len(apdu):
                    raise ApduError(f"{len(apdu) - end} bytes after the data", end)
                items += _data_items(value, kind_name)
            elif apdu[3] == 1:
                if len(apdu) != 5:
                    raise ApduError("data-access-result is one byte", len(apdu))
                code = apdu[4]
                items.append(DataItem(name="error",
                                      value=(DATA_ACCESS_RESULTS.get(code, f"0x{code:02X}"),)))
            else:
                raise ApduError(f"result choice {apdu[3]:02X}", 3, "apdu.result")
            return function, items, iid & 0x0F
        items.append(DataItem(name="body", value=apdu[3:]))
        return function, items, iid & 0x0F
    if name == "general_glo_ciphering":
        st_length, pos = _ber_length(apdu, 1)
        system_title = apdu[pos:pos + st_length]
        if len(system_title) < st_length:
            raise ApduError("system title truncated", pos, "apdu.system_title")
        pos += st_length
        length, pos = _ber_length(apdu, pos)
        content = apdu[pos:]
        if len(content) != length or length < 5:
            raise ApduError(f"ciphered content length says {length}, {len(content)} bytes "
                            "follow", pos, "apdu.length")
        return name, [DataItem(name="system_title", value=system_title.hex().upper()),
                      DataItem(name="ciphered_length", value=length),
                      DataItem(name="security_control", value=content[0]),
                      DataItem(name="invocation_counter",
                               value=int.from_bytes(content[1:5], "big")),
                      DataItem(name="ciphertext", value=content[5:])], None
    if name == "exception_response" and len(apdu) == 3:
        return name, [DataItem(name="state_error", value=apdu[1]),
                      DataItem(name="service_error", value=apdu[2])], None
    items = [DataItem(name="apdu", value=apdu)]
    if name in ("aare", "aarq"):
        items += _acse_summary(apdu)
    return name, items, None


def _acse_summary(apdu: bytes) -> list[DataItem]:
    """Result, diagnostic and negotiated PDU size of an AARE; authentication of an AARQ.

    A minimal BER walk of the fields a head-end acts on (``dlms-cosem``'s ACSE parser
    prints to stdout, which a long-running FEP cannot have). Best effort: the APDU itself
    is kept as sent either way."""
    out: list[DataItem] = []
    try:
        length, pos = _ber_length(apdu, 1)
        end = min(len(apdu), pos + length)
        while pos < end:
            tag = apdu[pos]
            size, body = _ber_length(apdu, pos + 1)
            value = apdu[body:body + size]
            if tag == 0xA2 and apdu[0] == 0x61 and value[:2] == b"\x02\x01":
                out.append(DataItem(name="result", value={0: "accepted", 1: "rejected_permanent",
                                                          2: "rejected_transient"}
                                    .get(value[2], value[2])))
            elif tag == 0xA3 and apdu[0] == 0x61 and len(value) >= 5:
                out.append(DataItem(name="diagnostic", value=value[4]))
            elif tag == 0x8B and apdu[0] == 0x60:
                out.append(DataItem(name="mechanism_name", value=value.hex().upper()))
            elif tag == 0xBE and len(value) >= 2 and value[0] == 0x04:
                initiate = value[2:]
                if initiate[:1] == b"\x08" and len(initiate) >= 14:
                    out.append(DataItem(name="max_pdu_size",
                                        value=int.from_bytes(initiate[10:12], "big")))
            pos = body + size
    except (ApduError, IndexError):
        return out
    return out


def encode_apdu(function: str, items: list[DataItem] | tuple[DataItem, ...]) -> bytes:
    values = {i.name: i for i in items}
    if "apdu" in values:
        return bytes(values["apdu"].value)
    if function.startswith(("get_request_", "get_response_")):
        name = "get_request" if function.startswith("get_request_") else "get_response"
        kind = function[len(name) + 1:]
        tag = _TAG_CODES[name]
        choice = {v: k for k, v in GET_KINDS.items()}[kind]
        iid = int(values["invoke_id"].value) & 0x0F
        if values.get("confirmed") is None or values["confirmed"].value:
            iid |= 0x40
        if values.get("high_priority") is not None and values["high_priority"].value:
            iid |= 0x80
        if "iid_reserved" in values:
            iid |= (int(values["iid_reserved"].value) & 3) << 4
        out = bytearray([tag, choice, iid])
        if "body" in values:
            return bytes(out) + bytes(values["body"].value)
        if name == "get_request":
            out += int(values["class_id"].value).to_bytes(2, "big")
            out += parse_obis(str(values["obis"].value))
            out.append(int(values["attribute"].value))
            if "access_selector" in values:
                parameters = values["access_parameters"]
                out += bytes([1, int(values["access_selector"].value)])
                out += encode_axdr(parameters.value, (parameters.attrs or {})["type"])
            else:
                out.append(0)
            return bytes(out)
        if "error" in values:
            (reason,) = values["error"].value
            codes = {v: k for k, v in DATA_ACCESS_RESULTS.items()}
            code = codes.get(reason)
            return bytes(out) + bytes([1, code if code is not None else int(reason, 16)])
        data = values["value"]
        return bytes(out) + b"\x00" + encode_axdr(data.value, (data.attrs or {})["type"])
    if function == "general_glo_ciphering":
        title = bytes.fromhex(values["system_title"].value)
        content = bytes([values["security_control"].value]) + \
            int(values["invocation_counter"].value).to_bytes(4, "big") + \
            bytes(values["ciphertext"].value)
        return b"\xdb" + _ber_length_bytes(len(title)) + title + \
            _ber_length_bytes(len(content)) + content
    if function == "exception_response":
        return bytes([0xD8, values["state_error"].value, values["service_error"].value])
    raise ValueError(f"cannot encode {function!r} without its raw 'apdu' item")
