"""M-Bus (EN 13757-3) data records: DIF/DIFE, VIF/VIFE, values, units and exponents.

A variable-data reply (CI 72) carries records::

    DIF [DIFE ..] VIF [VIFE ..] data ..     (repeated; 2F fillers; 0F/1F = maker data)

DIF: data field (bits 0-3), function (4-5: instantaneous, maximum, minimum, during error),
storage number LSB (6), extension (7). Each DIFE adds four storage bits, two tariff bits
and one sub-unit bit. VIF: quantity, unit and decimal exponent (``E001 0nnn`` = volume
m³ × 10^(nnn−6)); ``FD``/``FB`` select the extension tables, ``7C`` a plain-text unit,
``7F`` manufacturer specific; VIFEs follow while bit 7 is set.

Strategy: :func:`parse_records` returns one :class:`~decoders.frame.DataItem` per record:
``name`` the quantity in snake case (``volume``, ``time_point``, ``fabrication_no``),
``value`` scaled exactly (``Decimal``), ``unit``, and ``attrs`` with function, storage,
tariff, sub-unit and the DIF/VIF bytes as sent — so :func:`build_records` writes the very
same bytes back. Every malformed record raises ``ValueError`` with its offset; the caller
turns it into a DecodeError.
"""

from __future__ import annotations

import struct
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import numpy as np

from decoders.frame import DataItem

__all__ = ["RecordError", "build_records", "parse_records"]

FUNCTIONS = ("instantaneous", "maximum", "minimum", "error_state")
_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 6: 6, 7: 8}
_BCD_SIZES = {9: 1, 0xA: 2, 0xB: 3, 0xC: 4, 0xE: 6}

#: VIF extension table FD (EN 13757-3 table 14), the entries meters commonly send.
VIF_FD: dict[int, str] = {
    0x08: "access_number", 0x09: "medium", 0x0A: "manufacturer", 0x0B:
    "parameter_set_identification", 0x0C: "model_version", 0x0D: "hardware_version",
    0x0E: "firmware_version", 0x0F: "software_version", 0x10: "customer_location",
    0x11: "customer", 0x12: "access_code_user", 0x13: "access_code_operator",
    0x16: "password", 0x17: "error_flags", 0x18: "error_mask", 0x1A: "digital_output",
    0x1B: "digital_input", 0x1C: "baud_rate", 0x1D: "response_delay", 0x1E: "retry",
    0x3A: "dimensionless", 0x67: "special_supplier_information",
    0x74: "battery_remaining_days", 0x7C: "cumulation_counter",
}
_DURATION_UNITS = ("s", "min", "h", "d")


class RecordError(ValueError):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


def _primary_vif(vif: int) -> tuple[str, str, int, str]:
    """(name, unit, exponent, kind) of a primary VIF (bit 7 cleared)."""
    v = vif & 0x7F
    n = v & 0x07
    if v < 0x08:
        return "energy", "Wh", n - 3, "number"
    if v < 0x10:
        return "energy", "J", n, "number"
    if v < 0x18:
        return "volume", "m3", n - 6, "number"
    if v < 0x20:
        return "mass", "kg", n - 3, "number"
    if v < 0x24:
        return "on_time", _DURATION_UNITS[v & 3], 0, "number"
    if v < 0x28:
        return "operating_time", _DURATION_UNITS[v & 3], 0, "number"
    if v < 0x30:
        return "power", "W", n - 3, "number"
    if v < 0x38:
        return "power", "J/h", n, "number"
    if v < 0x40:
        return "volume_flow", "m3/h", n - 6, "number"
    if v < 0x48:
        return "volume_flow", "m3/min", n - 7, "number"
    if v < 0x50:
        return "volume_flow", "m3/s", n - 9, "number"
    if v < 0x58:
        return "mass_flow", "kg/h", n - 3, "number"
    if v < 0x5C:
        return "flow_temperature", "degC", (v & 3) - 3, "number"
    if v < 0x60:
        return "return_temperature", "degC", (v & 3) - 3, "number"
    if v < 0x64:
        return "temperature_difference", "K", (v & 3) - 3, "number"
    if v < 0x68:
        return "external_temperature", "degC", (v & 3) - 3, "number"
    if v < 0x6C:
        return "pressure", "bar", (v & 3) - 3, "number"
    if v == 0x6C:
        return "time_point", "", 0, "date"
    if v == 0x6D:
        return "time_point", "", 0, "datetime"
    if v == 0x6E:
        return "units_for_hca", "", 0, "number"
    if v < 0x74:
        return "averaging_duration", _DURATION_UNITS[v & 3], 0, "number"
    if v < 0x78:
        return "actuality_duration", _DURATION_UNITS[v & 3], 0, "number"
    if v == 0x78:
        return "fabrication_no", "", 0, "number"
    if v == 0x79:
        return "identification", "", 0, "number"
    if v == 0x7A:
        return "bus_address", "", 0, "number"
    return "reserved", "", 0, "number"


def _bcd(raw: bytes, offset: int) -> int:
    if not raw:
        return 0
    digits = raw[::-1].hex()
    negative = digits[0] == "f"
    if negative:
        digits = digits[1:]
    if not digits.isdigit():
        raise RecordError(f"BCD value {raw[::-1].hex().upper()} has a non-decimal digit",
                          offset)
    return -int(digits) if negative else int(digits)


def _date_g(raw: bytes, offset: int) -> Any:
    day, month = raw[0] & 0x1F, raw[1] & 0x0F
    year = ((raw[0] & 0xE0) >> 5) | ((raw[1] & 0xF0) >> 1)
    try:
        return date(2000 + year, month, day)
    except ValueError:
        return None


def _datetime_f(raw: bytes, offset: int) -> Any:
    if raw[0] & 0x80:  # "invalid" flag
        return None
    minute, hour = raw[0] & 0x3F, raw[1] & 0x1F
    day, month = raw[2] & 0x1F, raw[3] & 0x0F
    year = ((raw[2] & 0xE0) >> 5) | ((raw[3] & 0xF0) >> 1)
    try:
        return datetime(2000 + year, month, day, hour, minute)  # noqa: DTZ001 - meter clock
    except ValueError:
        return None


def _datetime_i(raw: bytes, offset: int) -> Any:
    second, minute, hour = raw[0] & 0x3F, raw[1] & 0x3F, raw[2] & 0x1F
    day, month = raw[3] & 0x1F, raw[4] & 0x0F
    year = ((raw[3] & 0xE0) >> 5) | ((raw[4] & 0xF0) >> 1)
    try:
        return datetime(2000 + year, month, day, hour, minute, second)  # noqa: DTZ001
    except ValueError:
        return None


def parse_records(data: bytes, base: int = 0) -> list[DataItem]:
    """Items of the records in ``data`` (offsets in errors are ``base`` + position)."""
    items: list[DataItem] = []
    pos, n = 0, len(data)
    while pos < n:
        start = pos
        dif = data[pos]
        if dif == 0x2F:  # idle filler
            run = pos
            while run < n and data[run] == 0x2F:
                run += 1
            items.append(DataItem(name="idle_filler", value=run - pos))
            pos = run
            continue
        if dif in (0x0F, 0x1F):  # manufacturer-specific data to the end
            items.append(DataItem(name="manufacturer_specific", value=bytes(data[pos + 1:]),
                                  attrs={"dif": f"{dif:02X}"}))
            return items
        pos += 1
        storage, tariff, subunit, shift = (dif >> 6) & 1, 0, 0, 1
        extension = dif & 0x80
        difes = 0
        while extension:
            if pos >= n:
                raise RecordError("record ends inside its DIFEs", base + pos)
            dife = data[pos]
            storage |= (dife & 0x0F) << shift
            tariff |= ((dife >> 4) & 3) << (2 * difes)
            subunit |= ((dife >> 6) & 1) << difes
            shift += 4
            difes += 1
            extension = dife & 0x80
            pos += 1
            if difes > 10:
                raise RecordError("more than 10 DIFEs", base + pos)
        dif_end = pos
        if pos >= n:
            raise RecordError("record ends before its VIF", base + pos)
        vif = data[pos]
        pos += 1
        name, unit, exponent, kind = "", "", 0, "number"
        plain_unit = None
        if vif in (0x7C, 0xFC):
            length = data[pos] if pos < n else 0
            plain_unit = bytes(data[pos + 1:pos + 1 + length])[::-1].decode("latin-1")
            pos += 1 + length
            name, unit = "plain_text_unit", plain_unit
        elif vif in (0xFD, 0xFB):
            if pos >= n:
                raise RecordError("record ends inside its VIF extension", base + pos)
            code = data[pos] & 0x7F
            if vif == 0xFD:
                name = VIF_FD.get(code, f"vif_fd_{code:02x}")
            else:
                name = f"vif_fb_{code:02x}"
                if code < 0x02:
                    name, unit, exponent = "energy", "MWh", (code & 1) - 1
                elif 0x08 <= code < 0x0A:
                    name, unit, exponent = "energy", "GJ", (code & 1) - 1
        elif vif in (0x7F, 0xFF):
            name = "manufacturer_vif"
        else:
            name, unit, exponent, kind = _primary_vif(vif)
        # VIFEs (for FD/FB the first "VIFE" is the table entry itself)
        last = data[pos - 1] if vif not in (0x7C, 0xFC) else vif
        if vif in (0xFD, 0xFB):
            last = data[pos]
            pos += 1
        while last & 0x80:
            if pos >= n:
                raise RecordError("record ends inside its VIFEs", base + pos)
            last = data[pos]
            pos += 1
        vif_end = pos
        field = dif & 0x0F
        value: Any
        if field == 0 or field == 8:
            value = None
        elif field in _INT_SIZES:
            size = _INT_SIZES[field]
            raw = data[pos:pos + size]
            if len(raw) < size:
                raise RecordError(f"{size}-byte value truncated", base + pos)
            if kind == "date" and size == 2:
                value = _date_g(raw, base + pos)
            elif kind == "datetime" and size == 4:
                value = _datetime_f(raw, base + pos)
            elif kind == "datetime" and size == 6:
                value = _datetime_i(raw, base + pos)
            else:
                value = int.from_bytes(raw, "little", signed=True)
            if value is None:
                value = int.from_bytes(raw, "little")
                kind = "invalid_date"
            pos += size
        elif field == 5:
            raw = data[pos:pos + 4]
            if len(raw) < 4:
                raise RecordError("real value truncated", base + pos)
            value = Decimal(str(np.float32(struct.unpack("<f", raw)[0])))
            pos += 4
        elif field in _BCD_SIZES:
            size = _BCD_SIZES[field]
            raw = data[pos:pos + size]
            if len(raw) < size:
                raise RecordError(f"{size}-byte BCD value truncated", base + pos)
            value = _bcd(raw, base + pos)
            if value == 0 and raw[-1] >> 4 == 0xF:
                kind = "negative_zero"  # "-0": kept as sent
            pos += size
        elif field == 0x0D:
            if pos >= n:
                raise RecordError("variable-length value without its length byte", base + pos)
            lvar = data[pos]
            pos += 1
            if lvar < 0xC0:
                raw = data[pos:pos + lvar]
                if len(raw) < lvar:
                    raise RecordError("text value truncated", base + pos)
                value = raw[::-1].decode("latin-1")
                kind = "text"
                pos += lvar
            elif lvar < 0xE0:
                size = lvar & 0x0F
                raw = data[pos:pos + size]
                if len(raw) < size:
                    raise RecordError("BCD value truncated", base + pos)
                value = _bcd(raw, base + pos) * (-1 if lvar >= 0xD0 else 1)
                kind = "lvar_bcd"
                pos += size
            elif lvar <= 0xFA:
                size = lvar - 0xE0 if lvar < 0xF0 else 4 * (lvar - 0xEC)
                raw = data[pos:pos + size]
                if len(raw) < size:
                    raise RecordError("binary value truncated", base + pos)
                value = bytes(raw)
                kind = "lvar_binary"
                pos += size
            else:
                raise RecordError(f"LVAR {lvar:02X} is reserved", base + pos - 1)
        else:
            raise RecordError(f"DIF {dif:02X}: data field {field:X} cannot be read", base + start)
        if isinstance(value, int) and kind == "number" and exponent:
            value = Decimal(value).scaleb(exponent)
        attrs: dict[str, Any] = {"function": FUNCTIONS[(dif >> 4) & 3], "storage": storage,
                                 "dif": data[start:dif_end].hex().upper(),
                                 "vif": data[dif_end:vif_end].hex().upper()}
        if difes:
            attrs["tariff"] = tariff
            attrs["subunit"] = subunit
        if kind not in ("number", "date", "datetime"):
            attrs["kind"] = kind
        if kind in ("lvar_bcd", "lvar_binary"):
            attrs["lvar"] = data[vif_end]
        if isinstance(value, date | datetime):
            # flag bits (summer time, invalid, week) are kept as sent
            attrs["raw"] = data[vif_end:pos].hex().upper()
        items.append(DataItem(name=name, value=value, unit=unit, attrs=attrs))
    return items


def build_records(items: list[DataItem] | tuple[DataItem, ...]) -> bytes:
    """The record bytes of items made by :func:`parse_records`."""
    out = bytearray()
    for item in items:
        if item.name == "idle_filler":
            out += b"\x2f" * int(item.value)
            continue
        attrs = item.attrs or {}
        if item.name == "manufacturer_specific":
            out += bytes.fromhex(attrs.get("dif", "0F")) + bytes(item.value)
            continue
        dif_bytes = bytes.fromhex(attrs["dif"])
        vif_bytes = bytes.fromhex(attrs["vif"])
        out += dif_bytes + vif_bytes
        field = dif_bytes[0] & 0x0F
        value = item.value
        kind = attrs.get("kind", "")
        if field in (0, 8):
            continue
        if field in _INT_SIZES:
            size = _INT_SIZES[field]
            if isinstance(value, datetime | date):
                raw_time = attrs.get("raw")
                kept = bytes.fromhex(raw_time) if raw_time else b""
                out += kept if kept and len(kept) == size and \
                    _same_time(kept, value, size) else _encode_time(value, size)
            else:
                number = value if isinstance(value, int) else _unscale(value, vif_bytes)
                out += number.to_bytes(size, "little", signed=number < 0 or
                                       kind != "invalid_date")
        elif field == 5:
            out += struct.pack("<f", float(value))
        elif field in _BCD_SIZES:
            number = value if isinstance(value, int) else _unscale(value, vif_bytes)
            raw_bcd = _bcd_bytes(number, _BCD_SIZES[field])
            if number == 0 and kind == "negative_zero":
                raw_bcd = raw_bcd[:-1] + bytes([raw_bcd[-1] | 0xF0])
            out += raw_bcd
        elif field == 0x0D:
            if kind == "text":
                raw = str(value).encode("latin-1")[::-1]
                out += bytes([len(raw)]) + raw
            elif kind == "lvar_bcd":
                size = attrs["lvar"] & 0x0F if "lvar" in attrs else \
                    max(1, (len(str(abs(int(value)))) + 1) // 2)
                negative = value < 0 or (value == 0 and attrs.get("lvar", 0) >= 0xD0)
                out += bytes([(0xD0 if negative else 0xC0) | size])
                out += _bcd_bytes(abs(int(value)), size) if size else b""
            else:
                raw = bytes(value)
                lvar = attrs.get("lvar")
                if lvar is None:
                    lvar = 0xE0 + len(raw) if len(raw) < 16 else 0xEC + len(raw) // 4
                out += bytes([lvar]) + raw
    return bytes(out)


def _same_time(raw: bytes, value: date | datetime, size: int) -> bool:
    decoded = _date_g(raw, 0) if size == 2 else \
        (_datetime_f(raw, 0) if size == 4 else _datetime_i(raw, 0))
    return bool(decoded == value)


def _unscale(value: Any, vif_bytes: bytes) -> int:
    vif = vif_bytes[0]
    exponent = 0
    if vif not in (0x7C, 0xFC, 0xFD, 0xFB, 0x7F, 0xFF):
        _, _, exponent, _ = _primary_vif(vif)
    elif vif == 0xFB and len(vif_bytes) > 1:
        code = vif_bytes[1] & 0x7F
        if code < 0x02 or 0x08 <= code < 0x0A:
            exponent = (code & 1) - 1
    return int(Decimal(value).scaleb(-exponent))


def _bcd_bytes(number: int, size: int) -> bytes:
    digits = "f" + str(-number).zfill(size * 2 - 1) if number < 0 \
        else str(number).zfill(size * 2)
    return bytes.fromhex(digits)[::-1]


def _encode_time(value: date | datetime, size: int) -> bytes:
    year = value.year - 2000
    if size == 2:
        return bytes([(value.day & 0x1F) | ((year & 0x07) << 5),
                      (value.month & 0x0F) | ((year & 0x78) << 1)])
    assert isinstance(value, datetime)
    day = (value.day & 0x1F) | ((year & 0x07) << 5)
    month = (value.month & 0x0F) | ((year & 0x78) << 1)
    if size == 4:
        return bytes([value.minute, value.hour, day, month])
    return bytes([value.second, value.minute, value.hour, day, month, 0])
