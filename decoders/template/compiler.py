"""Compiling a validated template into elements, layouts, a catalog and an envelope.

Strategy: everything a decoder needs at run time is resolved here, once: ``use:``
references, table names, identifier ranges and patterns, body rules per function, the
envelope of the framer. Each mistake the schema cannot see (an unknown table, a body naming
an element nobody declared, two variable-size elements in one layout) raises a
:class:`~decoders.errors.TemplateError` with the path inside the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from decoders.errors import TemplateError
from decoders.framing import ChecksumSpec, Envelope, LengthField
from decoders.template.elements import (
    AsciiElement,
    BcdElement,
    BcdStringElement,
    BitField,
    BitsElement,
    BytesElement,
    ConstElement,
    DateTimeElement,
    Element,
    EnumElement,
    FlagsElement,
    HexElement,
    ListElement,
    QuantityElement,
    UintElement,
)
from decoders.template.layout import Layout
from decoders.template.model import ElementSpec, EnvelopeSpec, FrameTemplate

__all__ = ["CatalogMatch", "CompiledBody", "CompiledCatalog", "Compiler", "build_envelope"]

#: Element names that are frame attributes rather than data items.
SPECIAL = frozenset({"identifier", "sequence"})


@dataclass
class CompiledBody:
    """One body rule: ``prefix`` elements, then the catalog ``items`` (if any), then
    ``suffix`` elements."""

    function_code: int | None          # None = any function
    direction: str
    abnormal: bool
    prefix: Layout
    suffix: Layout
    has_items: bool
    identifier: HexElement | None
    path: str

    def fits(self, size: int) -> bool:
        fixed = self.prefix.fixed_size + self.suffix.fixed_size
        if self.has_items or self.prefix.size is None or self.suffix.size is None:
            return size >= fixed
        return size == fixed

    def names(self) -> set[str]:
        return set(self.prefix.names) | set(self.suffix.names)


@dataclass
class CatalogMatch:
    identifier: str
    name: str
    layouts: tuple[Layout, ...]
    attrs: dict[str, Any] | None


@dataclass
class CompiledCatalog:
    exact: dict[str, tuple[str, tuple[Layout, ...]]] = field(default_factory=dict)
    ranges: list[tuple[int, int, int, str, tuple[Layout, ...]]] = field(default_factory=list)
    patterns: list[tuple[re.Pattern[str], str, tuple[Layout, ...]]] = field(default_factory=list)

    def lookup(self, identifier: str) -> CatalogMatch | None:
        hit = self.exact.get(identifier)
        if hit is not None:
            return CatalogMatch(identifier, hit[0], hit[1], None)
        if self.ranges or self.patterns:
            try:
                number = int(identifier, 16)
            except ValueError:
                return None
            for width, low, high, name, layouts in self.ranges:
                if len(identifier) == width and low <= number <= high:
                    return CatalogMatch(identifier, name, layouts,
                                        {"index": number - low + 1})
            for pattern, name, layouts in self.patterns:
                if pattern.fullmatch(identifier):
                    return CatalogMatch(identifier, name, layouts, None)
        return None

    def __contains__(self, identifier: str) -> bool:
        return self.lookup(identifier) is not None


def build_envelope(spec: EnvelopeSpec, protocol: str, name: str = "frame") -> Envelope:
    length = None
    if spec.length is not None:
        m = spec.length
        length = LengthField(offset=m.offset, size=m.size, order=m.order, add=m.add,
                             shift=m.shift, mask=m.mask, repeat_at=m.repeat_at,
                             minimum=m.minimum)
    checksum = None
    if spec.checksum is not None:
        c = spec.checksum
        checksum = ChecksumSpec(algorithm=c.algorithm, start=c.from_, end=c.to, order=c.order)
    return Envelope(
        name=name, protocol=protocol, start=bytes.fromhex(spec.start),
        header_size=spec.header_size, length=length, fixed_size=spec.size,
        end=bytes.fromhex(spec.end),
        marks=tuple((offset, bytes.fromhex(mark)) for offset, mark in spec.marks.items()),
        checksum=checksum,
        preamble=spec.preamble.byte if spec.preamble else None,
        preamble_max=spec.preamble.max if spec.preamble else 0,
        max_frame=spec.max_size)


class Compiler:
    """Turns a :class:`FrameTemplate` into run-time objects (see the module docstring)."""

    def __init__(self, template: FrameTemplate, file: str,
                 line_of: Callable[[Sequence[str | int]], int | None]) -> None:
        self.t = template
        self.file = file
        self._line_of = line_of

    def error(self, reason: str, path: Sequence[str | int]) -> TemplateError:
        return TemplateError(reason, file=self.file, path=".".join(str(p) for p in path),
                             line=self._line_of(path))

    # ------------------------------------------------------------- elements
    def resolve(self, spec: ElementSpec, path: Sequence[str | int], *,
                seen: tuple[str, ...] = ()) -> ElementSpec:
        if spec.use is None:
            return spec
        if spec.use in seen:
            raise self.error(f"'use: {spec.use}' refers to itself", path)
        base = self.t.types.get(spec.use) or self.t.elements.get(spec.use)
        if base is None:
            raise self.error(f"'use: {spec.use}' names no entry of 'types' or 'elements'; "
                             f"known: {sorted(set(self.t.types) | set(self.t.elements))}",
                             path)
        base = self.resolve(base, path, seen=(*seen, spec.use))
        merged = base.model_dump(exclude_unset=True, by_alias=True)
        merged.update(spec.model_dump(exclude_unset=True, by_alias=True))
        merged.pop("use", None)
        return ElementSpec.model_validate(merged)

    def table(self, ref: str | dict[int, str] | None, path: Sequence[str | int]) -> dict[int, str]:
        if ref is None:
            return {}
        if isinstance(ref, dict):
            return dict(ref)
        if ref not in self.t.tables:
            raise self.error(f"unknown table {ref!r}; known: {sorted(self.t.tables)}", path)
        return dict(self.t.tables[ref])

    def element(self, spec: ElementSpec, path: Sequence[str | int],
                name: str | None = None) -> Element:
        spec = self.resolve(spec, path)
        name = name or spec.name
        if name is None:
            raise self.error("element needs a 'name'", path)
        kind = spec.type
        if kind is None:
            raise self.error("element needs a 'type' (or 'use')", path)
        size = None if spec.size == "rest" else spec.size
        little = (spec.order or "little") == "little"
        try:
            return self._element(kind, spec, name, size, little, path)
        except ValueError as exc:
            raise self.error(str(exc), path) from None

    def _element(self, kind: str, spec: ElementSpec, name: str, size: int | None,
                 little: bool, path: Sequence[str | int]) -> Element:
        def need_size() -> int:
            if size is None:
                raise self.error(f"a {kind} element needs a fixed 'size'", path)
            return size

        big_default = (spec.order or "big") == "little"
        if kind in ("uint", "int"):
            return UintElement(name, need_size(), spec.description, little=big_default,
                               signed=kind == "int", decimals=spec.decimals,
                               unit=spec.unit or "")
        if kind == "bcd":
            return BcdElement(name, need_size(), spec.description, little=little,
                              decimals=spec.decimals, signed=bool(spec.signed),
                              absent=spec.absent, unit=spec.unit or "")
        if kind == "bcd_string":
            return BcdStringElement(name, need_size(), spec.description, little=little)
        if kind == "hex":
            return HexElement(name, size, spec.description, little=big_default)
        if kind == "bytes":
            return BytesElement(name, size, spec.description)
        if kind == "ascii":
            return AsciiElement(name, size, spec.description, pad=spec.pad or " ")
        if kind == "const":
            if spec.value is None:
                raise self.error("a const element needs 'value' (hex)", path)
            value = bytes.fromhex(spec.value)
            return ConstElement(name, len(value), spec.description, value=value)
        if kind == "enum":
            return EnumElement(name, need_size(), spec.description, little=big_default,
                               values=self.table(spec.values, (*path, "values")))
        if kind == "quantity":
            total = need_size()
            if total < 2:
                raise self.error("a quantity needs at least 2 bytes (value + unit code)", path)
            number = BcdElement("value", total - 1, little=little, decimals=spec.decimals,
                               signed=bool(spec.signed), absent=spec.absent)
            return QuantityElement(name, total, spec.description, value=number,
                                   units=self.table(spec.units, (*path, "units")),
                                   unit_first=spec.unit_position == "before")
        if kind == "datetime":
            if not spec.parts:
                raise self.error("a datetime element needs 'parts' (in wire order)", path)
            if len(set(spec.parts)) != len(spec.parts):
                raise self.error("datetime parts repeat", (*path, "parts"))
            return DateTimeElement(name, len(spec.parts), spec.description,
                                   parts=tuple(spec.parts))
        if kind == "bits":
            fields = tuple(BitField(field_name, f.bits[0], f.bits[1], f.values, f.flag)
                           for field_name, f in (spec.fields or {}).items())
            width = need_size() * 8
            for bit in fields:
                if bit.high >= width:
                    raise self.error(f"bit field {bit.name} reaches bit {bit.high}, the "
                                     f"element has {width} bits", (*path, "fields", bit.name))
            return BitsElement(name, need_size(), spec.description, little=little,
                               fields=fields)
        if kind == "flags":
            return FlagsElement(name, need_size(), spec.description, little=little,
                                bits=dict(spec.bits or {}))
        if kind == "list":
            if spec.of is None:
                raise self.error("a list element needs 'of' (the repeated element)", path)
            inner = self.element(spec.of, (*path, "of"), name="entry")
            return ListElement(name, None, spec.description, of=inner, count=spec.count,
                               unit=spec.unit or "")
        if kind == "identifier":
            return HexElement(name, need_size(), spec.description,
                              little=(spec.order or "big") == "little")
        if kind in ("control", "length"):
            return UintElement(name, need_size(), spec.description, little=big_default)
        raise self.error(f"unknown element type {kind!r}", path)

    def layout(self, name: str, specs: Sequence[ElementSpec | str],
               path: Sequence[str | int]) -> Layout:
        elements: list[Element] = []
        for index, spec in enumerate(specs):
            where = (*path, index)
            if isinstance(spec, str):
                declared = self.t.elements.get(spec)
                if declared is None:
                    raise self.error(f"unknown element {spec!r}; declare it under "
                                     f"'elements' (known: {sorted(self.t.elements)})", where)
                elements.append(self.element(declared, where, name=spec))
            else:
                elements.append(self.element(spec, where))
        names = [e.name for e in elements]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise self.error(f"element names repeat in one layout: {duplicates}", path)
        try:
            return Layout(name, elements)
        except ValueError as exc:
            raise self.error(str(exc), path) from None

    # ------------------------------------------------------------- sections
    def header(self) -> Layout:
        layout = self.layout("header", self.t.header, ("header",))
        for required in ("control", "length"):
            if required not in layout.names:
                raise self.error(f"the header needs a '{required}' element", ("header",))
        return layout

    def catalog(self) -> CompiledCatalog:
        out = CompiledCatalog()
        for key, entry in self.t.catalog.items():
            path = ("catalog", key)
            layouts = tuple(self.layout(f"{key}", specs, (*path, "layouts", i))
                            for i, specs in enumerate(entry.layouts))
            if ".." in key:
                low, _, high = key.partition("..")
                if not (_is_hex(low) and _is_hex(high)) or len(low) != len(high) or \
                        int(low, 16) > int(high, 16):
                    raise self.error("a range is LOW..HIGH, both hex of the same width", path)
                out.ranges.append((len(low), int(low, 16), int(high, 16), entry.name, layouts))
            elif "x" in key.lower() and _is_hex(key.lower().replace("x", "0")):
                pattern = re.compile("".join("[0-9A-F]" if c in "xX" else c
                                             for c in key.upper()))
                out.patterns.append((pattern, entry.name, layouts))
            elif _is_hex(key):
                out.exact[key.upper()] = (entry.name, layouts)
            else:
                raise self.error("an identifier is hex digits, a range LOW..HIGH, or a "
                                 "pattern with x for any nibble", path)
        return out

    def bodies(self, functions: dict[str, int]) -> list[CompiledBody]:
        out = []
        for index, body in enumerate(self.t.bodies):
            path = ("bodies", index)
            code: int | None
            if body.function == "any":
                code = None
            elif body.function in functions:
                code = functions[body.function]
            else:
                raise self.error(f"unknown function {body.function!r}; known: "
                                 f"{sorted(functions)} or 'any'", (*path, "function"))
            elements = list(body.elements)
            has_items = "items" in elements
            if elements.count("items") > 1:
                raise self.error("'items' may appear once", (*path, "elements"))
            split = elements.index("items") if has_items else len(elements)
            prefix = self.layout(f"body{index}", elements[:split], (*path, "elements"))
            suffix = self.layout(f"body{index}.suffix", elements[split + 1:],
                                 (*path, "elements"))
            if has_items and (prefix.size is None or suffix.size is None):
                raise self.error("elements around 'items' must have fixed sizes",
                                 (*path, "elements"))
            if prefix.size is None and suffix.names:
                raise self.error("a variable-size element must come last",
                                 (*path, "elements"))
            identifier = next((e for e in prefix.elements if e.name == "identifier"), None)
            if has_items and identifier is None:
                raise self.error("'items' needs an 'identifier' element before it",
                                 (*path, "elements"))
            out.append(CompiledBody(code, body.direction, body.abnormal, prefix, suffix,
                                    has_items, identifier if isinstance(identifier, HexElement)
                                    else None, ".".join(map(str, path))))
        return out


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)
