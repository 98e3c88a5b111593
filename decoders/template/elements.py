"""Element types of the frame-template format: bytes <-> typed values <-> data items.

Strategy: an :class:`Element` is one field of a layout (``current_volume: 4-byte BCD with
2 decimals, then a unit code``). It knows three things: how to turn its bytes into a value
(``decode``) and back (``encode``), how that value becomes :class:`~decoders.frame.DataItem`
s (``to_items``) and how to find its value again among items (``from_items``). The value
conversions are plain functions on ``bytes`` so that the construct Adapters
(:mod:`decoders.template.layout`) and the ``struct``-free fast path share one
implementation. A conversion problem raises :class:`ElementError` with the offset inside the
element; the layout adds the element's own offset and the field path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from decoders.frame import DataItem

__all__ = [
    "AsciiElement",
    "BcdElement",
    "BcdStringElement",
    "BitField",
    "BitsElement",
    "BytesElement",
    "ConstElement",
    "DateTimeElement",
    "Element",
    "ElementError",
    "EnumElement",
    "FlagsElement",
    "HexElement",
    "ListElement",
    "QuantityElement",
    "UintElement",
]


class ElementError(ValueError):
    """A value does not fit its element (decode: bad bytes; encode: bad value)."""

    def __init__(self, reason: str, offset: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


def _ordered(raw: bytes, little: bool) -> bytes:
    return raw[::-1] if little else raw


def bcd_digits(raw: bytes, little: bool) -> str:
    """The decimal digits of a packed-BCD field, most significant first."""
    text = _ordered(raw, little).hex()
    if not text.isdigit():
        bad = next(i for i, ch in enumerate(text) if not ch.isdigit())
        byte = bad // 2
        raise ElementError(f"not BCD: {text.upper()} (nibble {text[bad].upper()} > 9)",
                           len(raw) - 1 - byte if little else byte)
    return text


def digits_to_bcd(digits: str, size: int, little: bool) -> bytes:
    if not digits.isdigit() or len(digits) > size * 2:
        raise ElementError(f"{digits!r} does not fit {size} BCD bytes")
    raw = bytes.fromhex(digits.zfill(size * 2))
    return raw[::-1] if little else raw


def _decimal_from_digits(digits: str, decimals: int, negative: bool) -> Decimal:
    text = f"{digits[:-decimals]}.{digits[-decimals:]}" if decimals else digits
    return Decimal("-" + text if negative else text)


def _unscaled(value: Any, decimals: int, what: str) -> int:
    """``value`` × 10^decimals as an exact integer (refusing to round)."""
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        scaled = number.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise ElementError(f"{what}: {value} has more than {decimals} decimals")
        return int(scaled)
    except (InvalidOperation, ValueError) as exc:
        if isinstance(exc, ElementError):
            raise
        raise ElementError(f"{what}: {value!r} is not a number") from exc


@dataclass
class Element:
    """Base of every element type; ``size`` is ``None`` for "the rest of the data"."""

    name: str
    size: int | None
    description: str = ""
    kind: ClassVar[str] = ""

    # --- bytes <-> value --------------------------------------------------------
    def decode(self, raw: bytes) -> Any:
        raise NotImplementedError

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    # --- value <-> items --------------------------------------------------------
    def to_items(self, value: Any, ident: str, attrs: dict[str, Any] | None) -> list[DataItem]:
        return [DataItem(name=self.name, value=value, id=ident, attrs=attrs)]

    def from_items(self, items: Mapping[str, DataItem]) -> Any:
        item = items.get(self.name)
        if item is None:
            raise ElementError(f"no item {self.name!r} to encode")
        return item.value

    def fixed(self) -> bool:
        return self.size is not None

    def _check_size(self, raw: bytes) -> None:
        if self.size is not None and len(raw) != self.size:
            raise ElementError(f"{self.size} bytes expected, got {len(raw)}", len(raw))


@dataclass
class UintElement(Element):
    """Unsigned (or ``signed``) binary integer; with ``decimals`` a ``Decimal``."""

    little: bool = False
    signed: bool = False
    decimals: int | None = None
    unit: str = ""
    kind: ClassVar[str] = "uint"

    def decode(self, raw: bytes) -> Any:
        number = int.from_bytes(raw, "little" if self.little else "big", signed=self.signed)
        if self.decimals is None:
            return number
        return Decimal(number).scaleb(-self.decimals)

    def encode(self, value: Any) -> bytes:
        number = value if self.decimals is None and isinstance(value, int) else \
            _unscaled(value, self.decimals or 0, self.name)
        try:
            return number.to_bytes(self.size or 0, "little" if self.little else "big",
                                   signed=self.signed)
        except OverflowError as exc:
            raise ElementError(f"{value} does not fit {self.size} bytes") from exc

    def to_items(self, value: Any, ident: str, attrs: dict[str, Any] | None) -> list[DataItem]:
        return [DataItem(name=self.name, value=value, unit=self.unit, id=ident, attrs=attrs)]


@dataclass
class BcdElement(Element):
    """Packed BCD number; ``decimals`` set → ``Decimal``, else ``int``. ``signed`` uses the
    top bit of the most significant byte as the sign (DL/T 645); ``absent`` is the byte
    that, repeated, means "not available" (→ ``None``)."""

    little: bool = True
    decimals: int | None = None
    signed: bool = False
    absent: int | None = None
    unit: str = ""
    kind: ClassVar[str] = "bcd"

    def decode(self, raw: bytes) -> Any:
        if self.absent is not None and raw.count(self.absent) == len(raw):
            return None
        negative = False
        if self.signed:
            top = len(raw) - 1 if self.little else 0
            if raw[top] & 0x80:
                negative = True
                mutable = bytearray(raw)
                mutable[top] &= 0x7F
                raw = bytes(mutable)
        digits = bcd_digits(raw, self.little)
        if self.decimals is None:
            return -int(digits) if negative else int(digits)
        return _decimal_from_digits(digits, self.decimals, negative)

    def encode(self, value: Any) -> bytes:
        size = self.size or 0
        if value is None:
            if self.absent is None:
                raise ElementError(f"{self.name} has no 'not available' code")
            return bytes([self.absent]) * size
        number = _unscaled(value, self.decimals or 0, self.name) \
            if not isinstance(value, int) or self.decimals else value
        negative = number < 0 or (isinstance(value, Decimal) and value.is_signed())
        if negative and not self.signed:
            raise ElementError(f"{self.name}: {value} is negative, the field is unsigned")
        raw = digits_to_bcd(str(abs(number)), size, self.little)
        if self.signed and raw[size - 1 if self.little else 0] & 0x80:
            raise ElementError(f"{self.name}: {value} leaves no room for the sign bit")
        if negative:
            top = size - 1 if self.little else 0
            if raw[top] & 0x80:
                raise ElementError(f"{self.name}: {value} leaves no room for the sign bit")
            mutable = bytearray(raw)
            mutable[top] |= 0x80
            raw = bytes(mutable)
        return raw

    def to_items(self, value: Any, ident: str, attrs: dict[str, Any] | None) -> list[DataItem]:
        return [DataItem(name=self.name, value=value, unit=self.unit, id=ident, attrs=attrs)]


@dataclass
class BcdStringElement(Element):
    """BCD digits kept as a string (addresses, meter numbers): ``"78330123456789"``."""

    little: bool = True
    kind: ClassVar[str] = "bcd_string"

    def decode(self, raw: bytes) -> Any:
        # Addresses may hold AA (wildcard) or 99 (broadcast) bytes: keep them as hex text.
        return _ordered(raw, self.little).hex().upper()

    def encode(self, value: Any) -> bytes:
        text = str(value).strip().replace(" ", "")
        size = self.size or 0
        if len(text) > size * 2:
            raise ElementError(f"{self.name} {text!r} is longer than {size * 2} digits")
        try:
            raw = bytes.fromhex(text.rjust(size * 2, "0"))
        except ValueError as exc:
            raise ElementError(f"{self.name} {text!r} is not BCD/hex digits") from exc
        return _ordered(raw, self.little)


@dataclass
class HexElement(Element):
    """Opaque bytes shown as hex text (passwords, operator codes, vendor bytes)."""

    little: bool = False
    kind: ClassVar[str] = "hex"

    def decode(self, raw: bytes) -> Any:
        return _ordered(raw, self.little).hex().upper()

    def encode(self, value: Any) -> bytes:
        try:
            raw = bytes.fromhex(str(value).replace(" ", ""))
        except ValueError as exc:
            raise ElementError(f"{self.name}: {value!r} is not hex") from exc
        if self.size is not None and len(raw) != self.size:
            raise ElementError(f"{self.name}: {self.size} bytes expected, got {len(raw)}")
        return _ordered(raw, self.little)


@dataclass
class BytesElement(Element):
    """Raw bytes the template does not interpret further."""

    kind: ClassVar[str] = "bytes"

    def decode(self, raw: bytes) -> Any:
        return bytes(raw)

    def encode(self, value: Any) -> bytes:
        raw = bytes.fromhex(value.replace(" ", "")) if isinstance(value, str) else bytes(value)
        if self.size is not None and len(raw) != self.size:
            raise ElementError(f"{self.name}: {self.size} bytes expected, got {len(raw)}")
        return raw


@dataclass
class AsciiElement(Element):
    """Text in ASCII; ``pad`` fills a fixed-size field on encode."""

    pad: str = " "
    kind: ClassVar[str] = "ascii"

    def decode(self, raw: bytes) -> Any:
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ElementError(f"not ASCII text: {raw.hex(' ').upper()}", exc.start) from exc

    def encode(self, value: Any) -> bytes:
        raw = str(value).encode("ascii")
        if self.size is not None:
            if len(raw) > self.size:
                raise ElementError(f"{self.name}: {value!r} is longer than {self.size}")
            raw = raw.ljust(self.size, self.pad.encode("ascii"))
        return raw


@dataclass
class ConstElement(Element):
    """Fixed bytes (a second start byte, a reserved zero); not an item."""

    value: bytes = b""
    kind: ClassVar[str] = "const"

    def decode(self, raw: bytes) -> Any:
        if raw != self.value:
            raise ElementError(f"{self.value.hex(' ').upper()} expected, got "
                               f"{raw.hex(' ').upper()}")
        return raw

    def encode(self, value: Any) -> bytes:
        return self.value

    def to_items(self, value: Any, ident: str, attrs: dict[str, Any] | None) -> list[DataItem]:
        return []

    def from_items(self, items: Mapping[str, DataItem]) -> Any:
        return self.value


@dataclass
class EnumElement(Element):
    """An unsigned code with names; an unknown code stays an ``int``."""

    little: bool = False
    values: dict[int, str] = field(default_factory=dict)
    kind: ClassVar[str] = "enum"

    def __post_init__(self) -> None:
        self._codes = {name: code for code, name in self.values.items()}

    def decode(self, raw: bytes) -> Any:
        code = int.from_bytes(raw, "little" if self.little else "big")
        return self.values.get(code, code)

    def encode(self, value: Any) -> bytes:
        code = value if isinstance(value, int) else self._codes.get(value)
        if code is None:
            raise ElementError(f"{self.name}: unknown value {value!r}; known: "
                               f"{sorted(self._codes)}")
        try:
            return code.to_bytes(self.size or 0, "little" if self.little else "big")
        except OverflowError as exc:
            raise ElementError(f"{self.name}: {code} does not fit {self.size} bytes") from exc


@dataclass
class QuantityElement(Element):
    """A BCD value with a unit code byte after it (or before it: ``unit_first``)."""

    value: BcdElement = field(default_factory=lambda: BcdElement("value", 4))
    units: dict[int, str] = field(default_factory=dict)
    unit_first: bool = False
    kind: ClassVar[str] = "quantity"

    def __post_init__(self) -> None:
        self._codes = {name: code for code, name in self.units.items()}

    def decode(self, raw: bytes) -> Any:
        if self.unit_first:
            code, body = raw[0], raw[1:]
        else:
            code, body = raw[-1], raw[:-1]
        try:
            number = self.value.decode(body)
        except ElementError as exc:
            exc.offset += 1 if self.unit_first else 0
            raise
        return number, self.units.get(code, f"0x{code:02X}")

    def encode(self, value: Any) -> bytes:
        number, unit = value
        code = self._codes.get(unit)
        if code is None:
            if isinstance(unit, str) and unit.startswith("0x"):
                code = int(unit, 16)
            else:
                raise ElementError(f"{self.name}: unknown unit {unit!r}; known: "
                                   f"{sorted(self._codes)}")
        body = self.value.encode(number)
        return bytes([code]) + body if self.unit_first else body + bytes([code])

    def to_items(self, value: Any, ident: str, attrs: dict[str, Any] | None) -> list[DataItem]:
        return [DataItem(name=self.name, value=value[0], unit=value[1], id=ident, attrs=attrs)]

    def from_items(self, items: Mapping[str, DataItem]) -> Any:
        item = items.get(self.name)
        if item is None:
            raise ElementError(f"no item {self.name!r} to encode")
        return item.value, item.unit


#: Date/time parts a ``datetime`` element may contain, each one BCD byte.
DATETIME_PARTS = ("second", "minute", "hour", "day", "month", "year", "year_lo", "year_hi",
                  "weekday")


@dataclass
class DateTimeElement(Element):
    """A BCD date, time or both, one byte per part in wire order (``parts``).

    ``year`` is a two-digit year (20YY); ``year_lo``/``year_hi`` a four-digit year sent low
    pair first. Whole date+time → ``datetime`` (naive: the meter's local clock), date only →
    ``date``, time only → ``time``. A ``weekday`` part (DL/T 645, 0 = Sunday) becomes an extra
    item ``<name>_weekday``.
    """

    parts: tuple[str, ...] = ()
    kind: ClassVar[str] = "datetime"

    def __post_init__(self) -> None:
        self.size = len(self.parts)
        has = set(self.parts)
        self._has_date = {"day", "month"} <= has and bool(has & {"year", "year_lo"})
        self._has_time = {"hour", "minute"} <= has

    def decode(self, raw: bytes) -> Any:
        self._check_size(raw)
        values: dict[str, int] = {}
        for index, (part, byte) in enumerate(zip(self.parts, raw, strict=True)):
            hi, lo = byte >> 4, byte & 0x0F
            if hi > 9 or lo > 9:
                raise ElementError(f"{part} byte {byte:02X} is not BCD", index)
            values[part] = hi * 10 + lo
        year = values["year_hi"] * 100 + values["year_lo"] if "year_hi" in values \
            else 2000 + values.get("year", 0)
        try:
            if self._has_date and self._has_time:
                # The meter's local clock: naive on purpose, the report attaches the zone.
                stamp: Any = datetime(year, values["month"], values["day"],  # noqa: DTZ001
                                      values["hour"], values["minute"], values.get("second", 0))
            elif self._has_date:
                stamp = date(year, values["month"], values["day"])
            else:
                stamp = time(values.get("hour", 0), values.get("minute", 0),
                             values.get("second", 0))
        except ValueError as exc:
            raise ElementError(f"impossible {self.kind}: {raw.hex(' ').upper()} ({exc})") \
                from exc
        if "weekday" in values:
            return stamp, values["weekday"]
        return stamp

    def encode(self, value: Any) -> bytes:
        weekday = None
        if isinstance(value, tuple):
            value, weekday = value
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError as exc:
                raise ElementError(f"{self.name}: {value!r} is not an ISO date/time") from exc
        out = bytearray()
        for part in self.parts:
            if part in ("year", "year_lo"):
                number = value.year % 100
            elif part == "year_hi":
                number = value.year // 100
            elif part == "weekday":
                number = weekday if weekday is not None else (value.isoweekday() % 7)
            else:
                number = getattr(value, part)
            out.append((number // 10) << 4 | number % 10)
        return bytes(out)

    def to_items(self, value: Any, ident: str, attrs: dict[str, Any] | None) -> list[DataItem]:
        if isinstance(value, tuple):
            return [DataItem(name=self.name, value=value[0], id=ident, attrs=attrs),
                    DataItem(name=f"{self.name}_weekday", value=value[1], id=ident,
                             attrs=attrs)]
        return [DataItem(name=self.name, value=value, id=ident, attrs=attrs)]

    def from_items(self, items: Mapping[str, DataItem]) -> Any:
        item = items.get(self.name)
        if item is None:
            raise ElementError(f"no item {self.name!r} to encode")
        if "weekday" in self.parts:
            weekday = items.get(f"{self.name}_weekday")
            return item.value, (weekday.value if weekday is not None else None)
        return item.value


@dataclass(frozen=True)
class BitField:
    """Bits ``low..high`` of a ``bits`` element; ``values`` names codes, ``flag`` → bool."""

    name: str
    low: int
    high: int
    values: Mapping[int, str] | None = None
    flag: bool = False

    @property
    def mask(self) -> int:
        return (1 << (self.high - self.low + 1)) - 1


@dataclass
class BitsElement(Element):
    """An integer whose bits carry named fields (status words). The element itself becomes
    an item holding the whole word; each field becomes an item too."""

    little: bool = True
    fields: tuple[BitField, ...] = ()
    kind: ClassVar[str] = "bits"

    def decode(self, raw: bytes) -> Any:
        return int.from_bytes(raw, "little" if self.little else "big")

    def encode(self, value: Any) -> bytes:
        return int(value).to_bytes(self.size or 0, "little" if self.little else "big")

    def to_items(self, value: Any, ident: str, attrs: dict[str, Any] | None) -> list[DataItem]:
        out = [DataItem(name=self.name, value=value, id=ident, attrs=attrs)]
        for bit in self.fields:
            code = (value >> bit.low) & bit.mask
            field_value: Any = bool(code) if bit.flag else \
                (bit.values.get(code, code) if bit.values else code)
            out.append(DataItem(name=bit.name, value=field_value, id=ident, attrs=attrs))
        return out

    def from_items(self, items: Mapping[str, DataItem]) -> Any:
        word_item = items.get(self.name)
        word = int(word_item.value) if word_item is not None else 0
        for bit in self.fields:
            item = items.get(bit.name)
            if item is None:
                continue
            value = item.value
            if bit.flag:
                code = 1 if value else 0
            elif isinstance(value, str) and bit.values:
                codes = {name: c for c, name in bit.values.items()}
                if value not in codes:
                    raise ElementError(f"{bit.name}: unknown value {value!r}")
                code = codes[value]
            else:
                code = int(value)
            word = (word & ~(bit.mask << bit.low)) | ((code & bit.mask) << bit.low)
        if word_item is None and not any(b.name in items for b in self.fields):
            raise ElementError(f"no item {self.name!r} to encode")
        return word


@dataclass
class FlagsElement(Element):
    """An error or alarm word: the value is the tuple of the names of the bits set."""

    little: bool = True
    bits: dict[int, str] = field(default_factory=dict)
    kind: ClassVar[str] = "flags"

    def __post_init__(self) -> None:
        self._codes = {name: bit for bit, name in self.bits.items()}

    def decode(self, raw: bytes) -> Any:
        word = int.from_bytes(raw, "little" if self.little else "big")
        return tuple(self.bits.get(bit, f"bit{bit}")
                     for bit in range(len(raw) * 8) if word >> bit & 1)

    def encode(self, value: Any) -> bytes:
        word = 0
        names: Sequence[Any] = (value,) if isinstance(value, str | int) else value
        for name in names:
            if isinstance(name, int):
                word |= name
                continue
            bit = self._codes.get(name)
            if bit is None and name.startswith("bit") and name[3:].isdigit():
                bit = int(name[3:])
            if bit is None:
                raise ElementError(f"{self.name}: unknown flag {name!r}")
            word |= 1 << bit
        return word.to_bytes(self.size or 0, "little" if self.little else "big")


@dataclass
class ListElement(Element):
    """``count`` repetitions of one element (``count`` None = as many as the data holds);
    the value is a list."""

    of: Element = field(default_factory=lambda: BytesElement("item", 1))
    count: int | None = None
    unit: str = ""
    kind: ClassVar[str] = "list"

    def __post_init__(self) -> None:
        if self.of.size is None:
            raise ValueError("a list element needs a fixed-size item")
        self.size = self.of.size * self.count if self.count is not None else None

    def decode(self, raw: bytes) -> Any:
        step = self.of.size or 1
        if len(raw) % step:
            raise ElementError(f"{len(raw)} bytes is not a whole number of {step}-byte "
                               "entries", len(raw) - len(raw) % step)
        out = []
        for offset in range(0, len(raw), step):
            try:
                out.append(self.of.decode(raw[offset:offset + step]))
            except ElementError as exc:
                exc.offset += offset
                raise
        return out

    def encode(self, value: Any) -> bytes:
        if self.count is not None and len(value) != self.count:
            raise ElementError(f"{self.name}: {self.count} entries expected, got {len(value)}")
        return b"".join(self.of.encode(v) for v in value)

    def to_items(self, value: Any, ident: str, attrs: dict[str, Any] | None) -> list[DataItem]:
        return [DataItem(name=self.name, value=value, unit=self.unit, id=ident, attrs=attrs)]
