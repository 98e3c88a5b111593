"""Q/GDW 376.1 class 1 and class 2 data (AFN 0C current data, AFN 0D frozen data).

A concentrator answers the master station's data requests — or uploads by itself — with a
sequence of *data units*, one per measuring point ``pN`` and function ``Fn``::

    DA DA DT DT | [Td] | content ...  | DA DA DT DT | [Td] | content ... | ...

    AFN 0C F33/F34/F129..F132   current energy registers (total and rates 1..M)
        read time (A.15: mm hh DD MM YY) | M | registers (M+1 values each)
    AFN 0D F1/F2/F161..F164     daily frozen energy registers, Td_d (A.20: DD MM YY) first
    AFN 0D F177..F180           monthly frozen energy registers, Td_m (A.21: MM YY) first
    AFN 0C F2                   terminal calendar clock (A.1: ss mm hh DD wk|MM YY)

    A.14 = 5 BCD bytes XXXXXX.XXXX kWh, A.11 = 4 BCD bytes XXXXXX.XX kvarh (LSB first);
    bytes EE = no data (the meter did not answer the concentrator).

Strategy: each unit becomes :class:`~decoders.frame.DataItem` s named after what they are
(``forward_active_energy`` = [total, rate 1 .. rate M], ``terminal_clock``), with ``id``
``pN:Fn`` and ``attrs`` naming the measuring point, the function, the read time and the
frozen period, so a head-end can attribute each value to the meter at that measuring point
(the ledger's ``point_no``). The content length of a unit follows from its function (and M),
so a frame of many points is walked unit by unit; a function not described here stops the
walk (the rest stays undecoded and is said to be so, never guessed). Pure functions, no I/O;
:func:`encode_energy_unit` builds units for tests and the simulator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from decoders.errors import FieldValueError, LengthError
from decoders.frame import DataItem

__all__ = [
    "ENERGY_FUNCTIONS",
    "EnergyFunction",
    "data_time",
    "decode_data_units",
    "encode_energy_unit",
    "point_frames",
]

Frozen = Literal["day", "month"] | None
Format = Literal["A.14", "A.11"]


@dataclass(frozen=True)
class EnergyFunction:
    """An energy data unit: its time label, and its registers in order (name, format)."""

    afn: int
    fn: int
    frozen: Frozen
    registers: tuple[tuple[str, Format], ...]
    title: str


_FWD: tuple[tuple[str, Format], ...] = (
    ("forward_active_energy", "A.14"), ("forward_reactive_energy", "A.11"),
    ("q1_reactive_energy", "A.11"), ("q4_reactive_energy", "A.11"))
_REV: tuple[tuple[str, Format], ...] = (
    ("reverse_active_energy", "A.14"), ("reverse_reactive_energy", "A.11"),
    ("q2_reactive_energy", "A.11"), ("q3_reactive_energy", "A.11"))


def _functions() -> dict[tuple[int, int], EnergyFunction]:
    table: list[EnergyFunction] = [
        EnergyFunction(0x0C, 33, None, _FWD, "current forward active/reactive energy"),
        EnergyFunction(0x0C, 34, None, _REV, "current reverse active/reactive energy"),
        EnergyFunction(0x0D, 1, "day", _FWD, "daily frozen forward active/reactive energy"),
        EnergyFunction(0x0D, 2, "day", _REV, "daily frozen reverse active/reactive energy"),
    ]
    singles = (_FWD[0], _FWD[1], _REV[0], _REV[1])
    for offset, register in enumerate(singles):
        table.append(EnergyFunction(0x0C, 129 + offset, None, (register,),
                                    f"current {register[0].replace('_', ' ')}"))
        table.append(EnergyFunction(0x0D, 161 + offset, "day", (register,),
                                    f"daily frozen {register[0].replace('_', ' ')}"))
        table.append(EnergyFunction(0x0D, 177 + offset, "month", (register,),
                                    f"monthly frozen {register[0].replace('_', ' ')}"))
    return {(f.afn, f.fn): f for f in table}


#: The energy data units decoded, by (AFN, Fn).
ENERGY_FUNCTIONS: dict[tuple[int, int], EnergyFunction] = _functions()

_SIZES = {"A.14": 5, "A.11": 4}
_PLACES = {"A.14": 4, "A.11": 2}
_UNITS = {"A.14": "kWh", "A.11": "kvarh"}


class _Reader:
    def __init__(self, data: bytes, body: bytes, base: int) -> None:
        self.data, self.body, self.base, self.pos = data, body, base, 0

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.body):
            raise LengthError(f"{field} needs {n} bytes, {len(self.body) - self.pos} remain",
                              protocol="qgdw376.1", data=self.data, field=field,
                              offset=self.base + len(self.body))
        chunk = self.body[self.pos:self.pos + n]
        self.pos += n
        return chunk

    @property
    def offset(self) -> int:
        return self.base + self.pos


def _bcd(chunk: bytes, field: str, reader: _Reader, offset: int) -> int | None:
    if all(b == 0xEE for b in chunk):
        return None
    text = chunk[::-1].hex()
    if not text.isdigit():
        raise FieldValueError(f"{field} is not BCD ({chunk.hex(' ').upper()})",
                              protocol="qgdw376.1", data=reader.data, field=field,
                              offset=offset)
    return int(text)


def _value(reader: _Reader, fmt: str, field: str) -> Decimal | None:
    offset = reader.offset
    number = _bcd(reader.take(_SIZES[fmt], field), field, reader, offset)
    return None if number is None else Decimal(number).scaleb(-_PLACES[fmt])


def _read_time(reader: _Reader, field: str) -> datetime | None:
    """A.15: minute, hour, day, month, year (BCD) — the concentrator's local time."""
    offset = reader.offset
    chunk = reader.take(5, field)
    if all(b == 0xEE for b in chunk):
        return None
    try:
        mi, hh, dd, mm, yy = (int(f"{b:02X}") for b in chunk)
        return datetime(2000 + yy, mm, dd, hh, mi)  # noqa: DTZ001 - concentrator local time
    except ValueError:
        raise FieldValueError(f"{field} is not a valid A.15 time ({chunk.hex(' ').upper()})",
                              protocol="qgdw376.1", data=reader.data, field=field,
                              offset=offset) from None


def _td(reader: _Reader, frozen: Frozen, field: str) -> date:
    offset = reader.offset
    chunk = reader.take(3 if frozen == "day" else 2, field)
    try:
        digits = [int(f"{b:02X}") for b in chunk]
        if frozen == "day":
            return date(2000 + digits[2], digits[1], digits[0])
        return date(2000 + digits[1], digits[0], 1)
    except ValueError:
        raise FieldValueError(f"{field} is not a valid {frozen} label "
                              f"({chunk.hex(' ').upper()})", protocol="qgdw376.1",
                              data=reader.data, field=field, offset=offset) from None


def _clock(reader: _Reader, field: str) -> datetime:
    """A.1: second, minute, hour, day, week (bits 7-5) | month (BCD), year."""
    offset = reader.offset
    chunk = reader.take(6, field)
    try:
        ss, mi, hh, dd = (int(f"{b:02X}") for b in chunk[:4])
        mm = int(f"{chunk[4] & 0x1F:02X}")
        yy = int(f"{chunk[5]:02X}")
        return datetime(2000 + yy, mm, dd, hh, mi, ss)  # noqa: DTZ001 - terminal clock
    except ValueError:
        raise FieldValueError(f"{field} is not a valid A.1 clock ({chunk.hex(' ').upper()})",
                              protocol="qgdw376.1", data=reader.data, field=field,
                              offset=offset) from None


def data_time(read_at: datetime | None, frozen: Frozen, label: date | None) -> datetime | None:
    """When a value held: frozen values at the end of their day or month (the concentrator
    freezes at 24:00 and labels the value with the day or month that ended), current values
    at the time the concentrator read the meter. Local time, no zone."""
    if frozen == "day" and label is not None:
        return datetime.combine(label + timedelta(days=1), datetime.min.time())
    if frozen == "month" and label is not None:
        nxt = date(label.year + (label.month == 12), label.month % 12 + 1, 1)
        return datetime.combine(nxt, datetime.min.time())
    return read_at


def _points_functions(da: bytes, dt: bytes) -> tuple[list[int], list[int]]:
    from decoders.qgdw3761 import fn_of, pn_of

    return pn_of(da), fn_of(dt)


def decode_data_units(afn: int, body: bytes, *, data: bytes, base: int) -> list[DataItem]:
    """Every data unit of an uplink AFN 0C/0D body (``base`` = its offset in ``data``)."""
    reader = _Reader(data, body, base)
    items: list[DataItem] = []
    while reader.pos < len(body):
        start = reader.offset
        da, dt = reader.take(2, "da"), reader.take(2, "dt")
        points, functions = _points_functions(da, dt)
        if points == [-1] or not functions:
            items.append(_undecoded(reader, start, "DA names all points or DT no function"))
            return items
        for pn in points:
            for fn in functions:
                unit = _unit(reader, afn, pn, fn)
                if unit is None:
                    reader.pos = start - base
                    items.append(_undecoded(reader, start, f"AFN {afn:02X} F{fn} is not "
                                                           "described (decoders/qgdw3761_data.py)"))
                    return items
                items.extend(unit)
    return items


def _undecoded(reader: _Reader, start: int, reason: str) -> DataItem:
    rest = reader.body[start - reader.base:]
    reader.pos = len(reader.body)
    return DataItem(name="undecoded_units", value=rest,
                    attrs={"offset": start, "reason": reason})


def _unit(reader: _Reader, afn: int, pn: int, fn: int) -> list[DataItem] | None:
    ident = f"p{pn}:F{fn}"
    if afn == 0x0C and fn == 2:
        clock = _clock(reader, f"{ident}.clock")
        return [DataItem(name="terminal_clock", value=clock, id=ident,
                         attrs={"pn": pn, "fn": fn, "afn": afn})]
    spec = ENERGY_FUNCTIONS.get((afn, fn))
    if spec is None:
        return None
    label = _td(reader, spec.frozen, f"{ident}.td") if spec.frozen else None
    read_at = _read_time(reader, f"{ident}.read_time")
    rates = reader.take(1, f"{ident}.rates")[0]
    if rates > 14:
        raise FieldValueError(f"{ident}: {rates} tariff rates (at most 14)",
                              protocol="qgdw376.1", data=reader.data, field=f"{ident}.rates",
                              offset=reader.offset - 1)
    attrs: dict[str, Any] = {"pn": pn, "fn": fn, "afn": afn, "rates": rates}
    if read_at is not None:
        attrs["read_at"] = read_at
    if spec.frozen:
        attrs["frozen"] = spec.frozen
        attrs["frozen_label"] = label
    at = data_time(read_at, spec.frozen, label)
    if at is not None:
        attrs["data_time"] = at
    items = []
    for name, fmt in spec.registers:
        values = [_value(reader, fmt, f"{ident}.{name}[{i}]") for i in range(rates + 1)]
        items.append(DataItem(name=name, value=values, unit=_UNITS[fmt], id=ident,
                              attrs=dict(attrs)))
    return items


# ----------------------------------------------------------------------------- encoding


def _bcd_bytes(number: int, size: int) -> bytes:
    return bytes.fromhex(f"{number:0{size * 2}d}")[::-1]


def _enc_value(value: Decimal | None, fmt: str) -> bytes:
    size = _SIZES[fmt]
    if value is None:
        return b"\xee" * size
    return _bcd_bytes(int(value.scaleb(_PLACES[fmt])), size)


def encode_energy_unit(afn: int, fn: int, pn: int, *, read_at: datetime | None,
                       values: Sequence[Sequence[Decimal | None]],
                       label: date | None = None) -> bytes:
    """DA DT and content of one energy unit: ``values`` per register of the function,
    each [total, rate 1 .. rate M] (M the same for all)."""
    from decoders.qgdw3761 import data_unit

    spec = ENERGY_FUNCTIONS[(afn, fn)]
    if len(values) != len(spec.registers):
        raise ValueError(f"F{fn} has {len(spec.registers)} registers, got {len(values)}")
    out = bytearray(data_unit(pn, fn))
    if spec.frozen == "day":
        assert label is not None
        out += bytes.fromhex(f"{label.day:02d}{label.month:02d}{label.year % 100:02d}")
    elif spec.frozen == "month":
        assert label is not None
        out += bytes.fromhex(f"{label.month:02d}{label.year % 100:02d}")
    if read_at is None:
        out += b"\xee" * 5
    else:
        out += bytes.fromhex(f"{read_at.minute:02d}{read_at.hour:02d}{read_at.day:02d}"
                             f"{read_at.month:02d}{read_at.year % 100:02d}")
    rates = len(values[0]) - 1
    out.append(rates)
    for (_, fmt), register in zip(spec.registers, values, strict=True):
        if len(register) != rates + 1:
            raise ValueError("every register needs the same number of rates")
        for value in register:
            out += _enc_value(value, fmt)
    return bytes(out)


def point_frames(frame: Any) -> list[tuple[int, Any]]:
    """A decoded AFN 0C/0D frame split per data unit: (pN, a frame of that unit's items plus
    ``data_time`` and ``frozen``), for report templates that speak of one meter at a time
    (header ``afn`` is ``0C``/``0D``, ``fn`` the function)."""
    from decoders.frame import Frame

    groups: dict[str, list[DataItem]] = {}
    for item in frame.items:
        if item.attrs and "pn" in item.attrs and item.id:
            groups.setdefault(item.id, []).append(item)
    out = []
    for ident, items in groups.items():
        attrs = items[0].attrs or {}
        extra = []
        if attrs.get("data_time") is not None:
            extra.append(DataItem(name="data_time", value=attrs["data_time"]))
        if attrs.get("frozen"):
            extra.append(DataItem(name="frozen", value=attrs["frozen"]))
        out.append((int(attrs["pn"]), Frame(
            protocol=frame.protocol, direction=frame.direction, function=frame.function,
            address=frame.address, identifier=f"AFN{attrs['afn']:02X}:{ident}",
            sequence=frame.sequence,
            header={"afn": f"{attrs['afn']:02X}", "fn": attrs["fn"]},
            items=(*items, *extra))))
    return out
