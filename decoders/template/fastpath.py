"""The fast path: Python source generated from a template's layouts, compiled once.

Strategy: construct (compiled or not) pays for a stream, a ``Container`` per layout and a
method call per field; a hot CJ/T 188 901F reply spends most of its time there. For every
fixed-size layout this module writes a straight-line function — slices at constant offsets,
``bytes.hex()`` for BCD, a dict lookup for unit codes, ``int.from_bytes`` for binary —
that returns the layout's data items at once, the way construct's own compiler writes code,
but down to the items the frame needs. Element types it does not inline are called through
their ``decode`` method.

The fast path only ever takes the *success* path: on anything unusual (a bad BCD digit, an
unknown body size) it raises :class:`Fallback` and the general decoder runs, which reports
the precise error. So both paths agree by construction on errors, and
``tests/decoders/test_layout.py`` checks they agree on values. ``bench/decoders.py`` shows
what it is worth against compiled and interpreted construct.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from decoders.frame import DataItem
from decoders.template.elements import (
    BcdElement,
    BcdStringElement,
    BitsElement,
    DateTimeElement,
    Element,
    EnumElement,
    HexElement,
    QuantityElement,
    UintElement,
)
from decoders.template.layout import Layout

__all__ = ["Fallback", "FastLayout", "FastValues", "compile_layout", "compile_prologue",
           "compile_values"]

FastLayout = Callable[[bytes, int, str, "dict[str, Any] | None"], list[DataItem]]
FastValues = Callable[[bytes, int, str, "dict[str, Any] | None"], tuple[Any, ...]]


class Fallback(Exception):  # noqa: N818 - a signal, not an error
    """The fast path declines this input; the general decoder takes over."""


def _slice(lo: int, hi: int, little: bool) -> str:
    return f"d[o+{lo}:o+{hi}]" + ("[::-1]" if little else "")


#: packed-BCD byte -> its value 0..99, or -1 when a nibble is above 9
BCD_BYTE = tuple((b >> 4) * 10 + (b & 15) if b >> 4 < 10 and b & 15 < 10 else -1
                 for b in range(256))


class _Writer:
    def __init__(self, layout: Layout, values_only: bool = False) -> None:
        self.layout = layout
        self.values_only = values_only
        self.values: list[str] = []
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"D": Decimal, "DI": DataItem, "F": Fallback,
                                    "datetime": datetime, "date": date, "time": time,
                                    "B": BCD_BYTE}
        self.items: list[str] = []

    def const(self, value: Any) -> str:
        name = f"K{len(self.env)}"
        self.env[name] = value
        return name

    def bcd_value(self, var: str, element: BcdElement, lo: int, hi: int) -> None:
        if element.signed or element.absent is not None:
            ref = self.const(element)
            self.lines.append(f"{var} = {ref}.decode(d[o+{lo}:o+{hi}])")
            return
        self.lines.append(f"s = {_slice(lo, hi, element.little)}.hex()")
        self.lines.append("if not s.isdigit(): raise F")
        k = element.decimals
        if k is None:
            self.lines.append(f"{var} = int(s)")
        elif k == 0:
            self.lines.append(f"{var} = D(s)")
        else:
            self.lines.append(f"{var} = D(s[:-{k}] + '.' + s[-{k}:])")

    def item(self, name: str, value: str, unit: str) -> None:
        if self.values_only:
            return
        self.items.append(f"DI(name={name!r}, value={value}, unit={unit}, id=ident, attrs=attrs)")

    def element(self, index: int, element: Element, lo: int) -> None:
        hi = lo + (element.size or 0)
        var = f"v{index}"
        name = element.name
        self.values.append(var)
        if self.values_only and isinstance(element, QuantityElement | BitsElement):
            # values mode returns what Element.decode returns: (value, unit) / the word
            ref = self.const(element)
            self.lines.append(f"{var} = {ref}.decode(d[o+{lo}:o+{hi}])")
            return
        if isinstance(element, QuantityElement):
            code_at, body_lo = (lo, lo + 1) if element.unit_first else (hi - 1, lo)
            self.bcd_value(var, element.value, body_lo, body_lo + (element.size or 0) - 1)
            units = self.const(element.units)
            self.lines.append(f"c = d[o+{code_at}]")
            self.lines.append(f"u{index} = {units}.get(c) or '0x%02X' % c")
            self.item(name, var, f"u{index}")
        elif isinstance(element, BcdElement):
            self.bcd_value(var, element, lo, hi)
            self.item(name, var, repr(element.unit))
        elif isinstance(element, BcdStringElement | HexElement):
            self.lines.append(f"{var} = {_slice(lo, hi, element.little)}.hex().upper()")
            self.item(name, var, "''")
        elif isinstance(element, UintElement) and element.decimals is None \
                and not element.signed:
            if element.size == 1:
                self.lines.append(f"{var} = d[o+{lo}]")
            else:
                order = "'little'" if element.little else "'big'"
                self.lines.append(f"{var} = int.from_bytes(d[o+{lo}:o+{hi}], {order})")
            self.item(name, var, repr(element.unit))
        elif isinstance(element, EnumElement) and element.size == 1:
            table = self.const(element.values)
            self.lines.append(f"c = d[o+{lo}]")
            self.lines.append(f"{var} = {table}.get(c, c)")
            self.item(name, var, "''")
        elif isinstance(element, DateTimeElement) and "weekday" not in element.parts:
            self.datetime(var, element, lo, hi)
            self.item(name, var, "''")
        elif isinstance(element, BitsElement):
            order = "'little'" if element.little else "'big'"
            self.lines.append(f"{var} = int.from_bytes(d[o+{lo}:o+{hi}], {order})")
            self.item(name, var, "''")
            for bit in element.fields:
                expr = f"({var} >> {bit.low}) & {bit.mask}"
                if bit.flag:
                    value = f"bool({expr})"
                elif bit.values:
                    table = self.const(dict(bit.values))
                    self.lines.append(f"c = {expr}")
                    value = f"{table}.get(c, c)"
                else:
                    value = expr
                self.lines.append(f"b{index}_{bit.low} = {value}")
                self.item(bit.name, f"b{index}_{bit.low}", "''")
        else:
            ref = self.const(element)
            self.lines.append(f"{var} = {ref}.decode(d[o+{lo}:o+{hi}])")
            if not self.values_only:
                self.lines.append(f"for it in {ref}.to_items({var}, ident, attrs): "
                                  "out.append(it)")

    def datetime(self, var: str, element: DateTimeElement, lo: int, hi: int) -> None:
        # one table lookup per BCD byte; -1 marks a bad nibble
        names = [f"t{i}" for i in range(len(element.parts))]
        self.lines.append(", ".join(names) + " = " +
                          ", ".join(f"B[d[o+{lo + i}]]" for i in range(len(names))) +
                          ("," if len(names) == 1 else ""))
        self.lines.append(f"if min({', '.join(names)}{',' if len(names) == 1 else ''}) < 0: "
                          "raise F")
        pos = {part: i for i, part in enumerate(element.parts)}

        def part(name: str, default: str = "0") -> str:
            return f"t{pos[name]}" if name in pos else default

        if "year_hi" in pos:
            year = f"{part('year_hi')} * 100 + {part('year_lo')}"
        else:
            year = f"2000 + {part('year')}"
        has_date = {"day", "month"} <= pos.keys() and ("year" in pos or "year_lo" in pos)
        has_time = {"hour", "minute"} <= pos.keys()
        if has_date and has_time:
            expr = (f"datetime({year}, {part('month')}, {part('day')}, {part('hour')}, "
                    f"{part('minute')}, {part('second')})")
        elif has_date:
            expr = f"date({year}, {part('month')}, {part('day')})"
        else:
            expr = f"time({part('hour')}, {part('minute')}, {part('second')})"
        self.lines.append("try:")
        self.lines.append(f"    {var} = {expr}")
        self.lines.append("except ValueError: raise F from None")

    def build(self) -> FastLayout:
        offset = 0
        body: list[str] = ["out = []"]
        direct = True  # no element appends on its own: return one list literal
        for index, element in enumerate(self.layout.elements):
            self.lines = []
            self.element(index, element, offset)
            body.extend(self.lines)
            if any("out.append" in line for line in self.lines):
                direct = False
            offset += element.size or 0
        if self.values_only:
            body[0] = "pass"
            body.append(f"return ({', '.join(self.values)}{',' if self.values else ''})")
        elif direct:
            body[0] = "pass"
            body.append("return [" + ", ".join(i for i in self.items if i) + "]")
        else:
            # keep the order: interleave generated items with the appending elements
            body = ["out = []"]
            self.items = []
            offset = 0
            for index, element in enumerate(self.layout.elements):
                before = len(self.items)
                self.lines = []
                self.element(index, element, offset)
                body.extend(self.lines)
                body.extend(f"out.append({item})" for item in self.items[before:] if item)
                offset += element.size or 0
            body.append("return out")
        source = "def fast(d, o, ident, attrs):\n" + "\n".join("    " + line for line in body)
        namespace = dict(self.env)
        exec(compile(source, f"<fast path {self.layout.name}>", "exec"), namespace)  # noqa: S102
        function: FastLayout = namespace["fast"]
        function.__doc__ = source  # kept for inspection
        return function


def compile_layout(layout: Layout) -> FastLayout | None:
    """The generated function of a fixed-size layout giving its data items, or ``None``
    (variable size)."""
    if layout.size is None:
        return None
    return _Writer(layout).build()


def compile_values(layout: Layout) -> FastValues | None:
    """The generated function of a fixed-size layout giving its values in element order
    (what ``Element.decode`` returns), for headers and body frames around the items."""
    if layout.size is None:
        return None
    return _Writer(layout, values_only=True).build()  # type: ignore[return-value]


def compile_prologue(proto: Any) -> Callable[[bytes], Any] | None:
    """A generated function checking a template protocol's envelope (preamble, start,
    marks, length, end, 8-bit sum) and reading its header, with every constant inlined:
    ``data -> (begin, address, control, header, data_area) | None``. ``None`` when the
    envelope uses something it does not inline (CRCs, multi-byte length fields)."""
    env = proto.envelope
    length = env.length
    checksum = env.checksum
    if length is None or length.size != 1 or length.mask is not None or length.shift or \
            length.repeat_at is not None or len(env.start) != 1 or len(env.end) > 1:
        return None
    if checksum is not None and (checksum.algorithm not in ("sum8", "mbus_sum")
                                 or checksum.end >= 0):
        return None
    writer = _Writer(proto.header, values_only=True)
    lines = ["n = len(data)", "b = 0"]
    if env.preamble is not None:
        lines += [f"while b < n and data[b] == {env.preamble}: b += 1",
                  f"if b > {env.preamble_max}: return None"]
    lines += [f"if n - b < {env.header_size} or data[b] != {env.start[0]}: return None"]
    for offset, mark in env.marks:
        lines.append(f"if data[b+{offset}:b+{offset + len(mark)}] != {mark!r}: return None")
    lines.append(f"if b + data[b+{length.offset}] + {length.add} != n: return None")
    if env.end:
        lines.append(f"if data[n-1] != {env.end[0]}: return None")
    trailer = (checksum.size if checksum else 0) + len(env.end)
    if checksum is not None:
        lines.append(f"if sum(data[b+{checksum.start}:n{checksum.end}]) & 255 != "
                     f"data[n{checksum.end}]: return None")
    # header values, inlined at offset o = b + len(start)
    offset = 0
    writer.lines = []
    for index, element in enumerate(proto.header.elements):
        writer.element(index, element, offset)
        offset += element.size or 0
    lines.append(f"d = data; o = b + {len(env.start)}")
    lines += writer.lines
    header_parts = []
    address = "''"
    control = "0"
    for index, element in enumerate(proto.header.elements):
        if element.name == "address":
            address = f"v{index}"
        elif element.name == "control":
            control = f"v{index}"
        elif element.name != "length" and element.kind != "const":
            header_parts.append(f"{element.name!r}: v{index}")
    lines.append("header = {" + ", ".join(header_parts) + "}")
    if env.preamble is not None:
        lines.append(f"if b != {proto.preamble_count}: header['preamble'] = b")
    area = f"data[b+{env.header_size}:n-{trailer}]" if trailer else \
        f"data[b+{env.header_size}:]"
    namespace = dict(writer.env)
    if proto.template.data_offset:
        area += ".translate(SUB)"
        namespace["SUB"] = proto._sub
    lines.append(f"return b, {address}, {control}, header, {area}")
    source = "def prologue(data):\n" + "\n".join("    " + line for line in lines)
    exec(compile(source, f"<fast path {proto.name} prologue>", "exec"), namespace)  # noqa: S102
    function: Callable[[bytes], Any] = namespace["prologue"]
    function.__doc__ = source
    return function
