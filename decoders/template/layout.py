"""Layouts: an ordered run of elements, parsed by construct or by the fast path.

Strategy: a :class:`Layout` is declared once from the template (header fields, a body rule,
one data identifier's data) and compiled once at load. It holds three equivalent parsers:

- ``struct`` — a declarative construct ``Struct`` whose fields are :class:`ElementAdapter`
  s (construct's own idiom for value conversions), interpreted;
- ``compiled`` — the same ``Struct`` after ``.compile()``; the adapters emit their own
  code so the compiled parser calls their conversion directly;
- ``fast`` — a plain loop over precomputed ``(element, offset, size)`` slices, the
  ``struct``-level fast path: no stream, no ``Container``.

They must agree on every input (``tests/decoders/test_layout.py`` checks it on every golden
frame and on hypothesis-generated ones); ``bench/decoders.py`` measures what each costs.
Building always goes through construct. A layout may hold one variable-size element
(``size: rest``); its size is whatever the other elements leave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Literal

from construct import Adapter, Bytes, Construct, Struct, this

from decoders.frame import DataItem
from decoders.template.elements import Element, ElementError

__all__ = ["ElementAdapter", "Engine", "Layout", "LayoutError"]

Engine = Literal["fast", "compiled", "interpreted"]


class LayoutError(ValueError):
    """An element failed: ``element`` is its name, ``offset`` the byte offset inside the
    layout's data, ``reason`` why."""

    def __init__(self, element: str, offset: int, reason: str) -> None:
        super().__init__(f"{element}: {reason}")
        self.element = element
        self.offset = offset
        self.reason = reason


class _ElementFailedError(Exception):
    """Carries an ElementError out of construct with the element that raised it."""

    def __init__(self, element: Element, error: ElementError) -> None:
        super().__init__(error.reason)
        self.element = element
        self.error = error


class ElementAdapter(Adapter):
    """A construct Adapter around one template element (bytes <-> typed value)."""

    def __init__(self, element: Element, subcon: Construct) -> None:
        super().__init__(subcon)
        self.element = element

    def _decode(self, obj: bytes, context: Any, path: str) -> Any:
        return self.decode_value(obj)

    def decode_value(self, raw: bytes) -> Any:
        try:
            return self.element.decode(raw)
        except ElementError as exc:
            raise _ElementFailedError(self.element, exc) from exc

    def _encode(self, obj: Any, context: Any, path: str) -> bytes:
        try:
            return self.element.encode(obj)
        except ElementError as exc:
            raise _ElementFailedError(self.element, exc) from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise _ElementFailedError(self.element, ElementError(f"cannot encode {obj!r}: {exc}")) \
                from exc

    def _emitparse(self, code: Any) -> str:
        # Compiled parsing calls the element's conversion on the bytes the compiled subcon
        # read; building stays with the (linked) interpreted adapter.
        self._compileinstance(code)
        return (f"linkedinstances[{id(self)}].decode_value("
                f"{self.subcon._compileparse(code)})")


class Layout:
    """An ordered run of elements (see the module docstring)."""

    def __init__(self, name: str, elements: Sequence[Element]) -> None:
        self.name = name
        self.elements = tuple(elements)
        variable = [e for e in self.elements if e.size is None]
        if len(variable) > 1:
            raise ValueError(f"layout {name}: only one element may have size 'rest', "
                             f"got {[e.name for e in variable]}")
        self.fixed_size = sum(e.size or 0 for e in self.elements)
        self.size: int | None = None if variable else self.fixed_size
        self.names = tuple(e.name for e in self.elements)
        fields = []
        for element in self.elements:
            raw = Bytes(element.size) if element.size is not None else \
                Bytes(this._params.variable_size)
            fields.append(element.name / ElementAdapter(element, raw))
        self.struct = Struct(*fields)
        self._fast: tuple[tuple[Element, int, int], ...] | None = None
        if variable == []:
            plan, offset = [], 0
            for element in self.elements:
                plan.append((element, offset, offset + (element.size or 0)))
                offset += element.size or 0
            self._fast = tuple(plan)

    @cached_property
    def compiled(self) -> Construct:
        """The compiled parser, generated on first use (compiling every layout of every
        variant at load would cost more than most processes ever parse with it)."""
        return self.struct.compile()

    def offsets(self, total: int) -> dict[str, int]:
        """Offset of each element for data of ``total`` bytes."""
        out, offset = {}, 0
        variable = total - self.fixed_size
        for element in self.elements:
            out[element.name] = offset
            offset += element.size if element.size is not None else variable
        return out

    def decode(self, data: bytes, engine: Engine = "fast") -> list[Any]:
        """Values of the elements, in order, from exactly the layout's bytes."""
        n = len(data)
        if (self.size is not None and n != self.size) or n < self.fixed_size:
            expected = self.size if self.size is not None else f"at least {self.fixed_size}"
            raise LayoutError(self.name, min(n, self.fixed_size),
                              f"{expected} bytes expected, got {n}")
        try:
            if engine == "fast" and self._fast is not None:
                return [element.decode(data[lo:hi]) for element, lo, hi in self._fast]
            if engine == "fast":
                return self._decode_sliced(data)
            parser = self.compiled if engine == "compiled" else self.struct
            container = parser.parse(data, variable_size=n - self.fixed_size)
            return [container[name] for name in self.names]
        except _ElementFailedError as failed:
            offset = self.offsets(n)[failed.element.name] + failed.error.offset
            raise LayoutError(failed.element.name, offset, failed.error.reason) from None
        except ElementError as exc:  # from the fast path
            raise self._locate(data, exc) from None

    def _decode_sliced(self, data: bytes) -> list[Any]:
        out, offset = [], 0
        variable = len(data) - self.fixed_size
        for element in self.elements:
            size = element.size if element.size is not None else variable
            out.append(element.decode(data[offset:offset + size]))
            offset += size
        return out

    def _locate(self, data: bytes, exc: ElementError) -> LayoutError:
        # The fast path does not track which element failed: find it again, once.
        offset = 0
        variable = len(data) - self.fixed_size
        for element in self.elements:
            size = element.size if element.size is not None else variable
            try:
                element.decode(data[offset:offset + size])
            except ElementError as again:
                return LayoutError(element.name, offset + again.offset, again.reason)
            offset += size
        return LayoutError(self.name, 0, exc.reason)

    def to_items(self, values: Sequence[Any], ident: str,
                 attrs: dict[str, Any] | None = None) -> list[DataItem]:
        items: list[DataItem] = []
        for element, value in zip(self.elements, values, strict=True):
            items.extend(element.to_items(value, ident, attrs))
        return items

    def encode(self, items: Mapping[str, DataItem]) -> bytes:
        """Build the layout's bytes from items by name (through construct)."""
        values: dict[str, Any] = {}
        for element in self.elements:
            try:
                values[element.name] = element.from_items(items)
            except ElementError as exc:
                raise LayoutError(element.name, 0, exc.reason) from None
        return self.encode_values(values)

    def encode_values(self, values: Mapping[str, Any]) -> bytes:
        variable = 0
        for element in self.elements:
            if element.size is None:
                try:
                    variable = len(element.encode(values[element.name]))
                except ElementError as exc:
                    raise LayoutError(element.name, 0, exc.reason) from None
        try:
            return bytes(self.struct.build(dict(values), variable_size=variable))
        except _ElementFailedError as failed:
            raise LayoutError(failed.element.name, 0, failed.error.reason) from None
