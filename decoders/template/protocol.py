"""A protocol defined entirely by a frame template (CJ/T 188, DL/T 645 ship this way).

Strategy: :func:`load_template` reads and validates a YAML file once and compiles the
default variant (and, lazily, the others) into a :class:`TemplateProtocol`. Decoding a
frame is: the envelope checks framing, length and checksum with exact offsets; the header
layout gives address and control; the control byte gives direction, abnormal flag and
function; the first body rule of that function whose size fits splits the data area into
identifier, sequence, the identifier's catalog layout and trailing fields. Encoding runs
the same steps backwards through construct and seals the checksum. A unified command is a
``commands:`` entry: a function, an identifier (fixed or computed from a parameter) and the
values of the layout's elements taken from command parameters or constants.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from decoders.errors import (
    CommandNotSupportedError,
    DecodeError,
    EncodeError,
    FieldValueError,
    LengthError,
    TemplateError,
)
from decoders.frame import DataItem, Direction, Frame
from decoders.framing import Envelope, FrameSpec
from decoders.protocol import CommandFrame, Protocol
from decoders.template.compiler import (
    SPECIAL,
    CatalogMatch,
    CompiledBody,
    CompiledCatalog,
    Compiler,
    build_envelope,
)
from decoders.template.fastpath import (
    Fallback,
    FastLayout,
    FastValues,
    compile_layout,
    compile_prologue,
    compile_values,
)
from decoders.template.layout import Engine, Layout, LayoutError
from decoders.template.loader import line_of, load_document, substitute, validate
from decoders.template.model import CommandSpec, CommandValue, FrameTemplate, IdentifierParam

__all__ = ["TemplateProtocol", "load_template"]


def load_template(path: Path | str, *, text: str | None = None,
                  engine: Engine = "fast") -> TemplateProtocol:
    """Load, validate and compile a meter-protocol template (default variant); raises
    :class:`~decoders.errors.TemplateError`. Every variant is validated now."""
    file = str(path)
    data, node = load_document(path, text)
    raw_params = data.get("parameters") or {}
    raw_variants = data.get("variants") or {"default": {}}
    if not isinstance(raw_params, dict) or not isinstance(raw_variants, dict):
        raise TemplateError("'parameters' and 'variants' are mappings", file=file)
    for variant, overrides in raw_variants.items():
        unknown = set(overrides or {}) - set(raw_params)
        if unknown:
            raise TemplateError(f"variant {variant!r} sets undeclared parameter(s) "
                                f"{sorted(unknown)}; declare them under 'parameters'",
                                file=file, path=f"variants.{variant}",
                                line=line_of(node, ("variants", variant)))
    models: dict[str, FrameTemplate] = {}
    for variant in ["default", *[v for v in raw_variants if v != "default"]]:
        params = {**raw_params, **(raw_variants.get(variant) or {})}
        models[variant] = validate(substitute(data, params, file, node), file, node)
    proto = TemplateProtocol(models, "default", file, node, engine=engine)
    for variant in models:
        if variant != "default":
            proto.with_variant(variant)  # compile now: template mistakes surface at load
    return proto


class TemplateProtocol(Protocol):
    """A meter protocol compiled from a template (see the module docstring)."""

    def __init__(self, models: Mapping[str, FrameTemplate], variant: str, file: str,
                 node: Any, *, engine: Engine = "fast") -> None:
        self._models = dict(models)
        self._file, self._node = file, node
        self._siblings: dict[str, TemplateProtocol] = {variant: self}
        self.engine: Engine = engine
        t = self._models[variant]
        self.template = t
        self.name = t.protocol
        self.title = t.title
        self.variant = variant
        self.variants = tuple(self._models)
        compiler = Compiler(t, file, lambda p: line_of(node, p))
        if t.envelope is None or t.control is None:
            raise TemplateError("not a meter-protocol template (kind: link?)", file=file)
        self.envelope: Envelope = build_envelope(t.envelope, t.protocol)
        self.preamble_count = t.envelope.preamble.count if t.envelope.preamble else 0
        self.header: Layout = compiler.header()
        self._start_len = len(self.envelope.start)
        if self._start_len + self.header.fixed_size != t.envelope.header_size:
            raise compiler.error(
                f"header elements take {self.header.fixed_size} bytes after the "
                f"{self._start_len} start byte(s), but envelope.header_size is "
                f"{t.envelope.header_size}", ("envelope", "header_size"))
        checksum_size = self.envelope.checksum.size if self.envelope.checksum else 0
        self._trailer = checksum_size + len(self.envelope.end)
        length = self.envelope.length
        self._length_base = (t.envelope.header_size + self._trailer - length.add) \
            if length else 0
        self._length_shift = length.shift if length else 0
        ctl = t.control
        self._dir_mask = 1 << ctl.direction_bit
        self._abn_mask = 1 << ctl.abnormal_bit if ctl.abnormal_bit is not None else 0
        self._follow_mask = 1 << ctl.follow_bit if ctl.follow_bit is not None else 0
        self._fn_mask = ctl.function_mask
        self._fn_names = dict(t.functions)
        self._fn_codes = {name: code for code, name in t.functions.items()}
        self.catalog: CompiledCatalog = compiler.catalog()
        self._bodies = compiler.bodies(self._fn_codes)
        self._by_key: dict[tuple[int, bool, bool], list[CompiledBody]] = {}
        ident_spec = t.elements.get("identifier")
        self._ident_little = (ident_spec.order or "big") == "little" if ident_spec else False
        self._ident_accept = tuple(ident_spec.accept or ()) if ident_spec else ()
        self._offset = t.data_offset
        if self._offset:
            self._sub = bytes((b - self._offset) & 0xFF for b in range(256))
            self._add = bytes((b + self._offset) & 0xFF for b in range(256))
        self._header_roles = [n for n in self.header.names]
        self._commands = dict(t.commands)
        self._fast_layouts: dict[int, FastLayout | None] = {}
        self._fast_value_fns: dict[int, FastValues | None] = {}
        self._fast_header: FastValues | None = None
        self._prologue: Any = None
        # Caches of the fast path; bounded by 256 control bytes × frame sizes, and by the
        # identifiers a link actually sends (capped below).
        self._plans: dict[tuple[int, int], Any] = {}
        self._idents: _BoundedCache = _BoundedCache(4096)
        self._check_commands(compiler)

    # ----------------------------------------------------------------- variants
    def with_variant(self, variant: str) -> TemplateProtocol:
        if variant in self._siblings:
            return self._siblings[variant]
        if variant not in self._models:
            raise CommandNotSupportedError(f"unknown variant {variant!r}; known: "
                                      f"{list(self._models)}", protocol=self.name)
        sibling = TemplateProtocol(self._models, variant, self._file, self._node,
                                   engine=self.engine)
        sibling._siblings = self._siblings
        self._siblings[variant] = sibling
        return sibling

    def with_engine(self, engine: Engine) -> TemplateProtocol:
        """The same protocol decoding through another engine (benchmarks, tests)."""
        clone = TemplateProtocol(self._models, self.variant, self._file, self._node,
                                 engine=engine)
        return clone

    def frame_specs(self) -> Sequence[FrameSpec]:
        return (self.envelope,)

    # ----------------------------------------------------------------- decode
    def _rules(self, code: int, direction: bool, abnormal: bool) -> list[CompiledBody]:
        key = (code, direction, abnormal)
        rules = self._by_key.get(key)
        if rules is None:
            want = "reply" if direction else "request"
            rules = [b for b in self._bodies
                     if b.direction == want and b.abnormal == abnormal
                     and b.function_code in (code, None)]
            rules.sort(key=lambda b: b.function_code is None)  # specific before 'any'
            self._by_key[key] = rules
        return rules

    def decode(self, data: bytes) -> Frame:
        if type(data) is not bytes:
            data = bytes(data)
        if self.engine == "fast":
            try:
                prologue = self._prologue
                if prologue is not None and prologue is not False:
                    opened = prologue(data)
                    frame = self._decode_fast_body(*opened) if opened is not None else None
                else:
                    frame = self._decode_fast(data)
            except (Fallback, ValueError, KeyError, IndexError, TypeError):
                frame = None
            if frame is not None:
                return frame
        return self._decode_general(data)

    # ----------------------------------------------------------------- fast path
    def _fast(self, layout: Layout) -> FastLayout | None:
        key = id(layout)
        if key not in self._fast_layouts:
            self._fast_layouts[key] = compile_layout(layout)
        return self._fast_layouts[key]

    def _fast_values(self, layout: Layout) -> FastValues | None:
        key = id(layout)
        if key not in self._fast_value_fns:
            self._fast_value_fns[key] = compile_values(layout)
        return self._fast_value_fns[key]

    def _decode_fast(self, data: bytes) -> Frame | None:
        """The success path of :meth:`_decode_general` through generated code and cached
        plans; ``None`` (or :class:`Fallback`) hands the frame to the general decoder."""
        prologue = self._prologue
        if prologue is None:
            prologue = self._prologue = compile_prologue(self) or False
        if prologue is not False:
            opened = prologue(data)
            if opened is None:
                return None
            b, address, control, header, area = opened
            return self._decode_fast_body(b, address, control, header, area)
        env = self.envelope
        n = len(data)
        b = 0
        preamble = env.preamble
        if preamble is not None:
            while b < n and data[b] == preamble:
                b += 1
            if b > env.preamble_max:
                return None
        hs = env.header_size
        if n - b < hs or data[b:b + self._start_len] != env.start:
            return None
        for offset, mark in env.marks:
            if data[b + offset:b + offset + len(mark)] != mark:
                return None
        length = env.length
        size = length.read(data, b) + length.add if length is not None \
            else env.fixed_size or 0
        if b + size != n or (env.end and not data.endswith(env.end)):
            return None
        checksum = env.checksum
        if checksum is not None:
            lo, hi = checksum.bounds(size)
            if checksum.size == 1 and checksum.algorithm in ("sum8", "mbus_sum"):
                if sum(data[b + lo:b + hi]) & 0xFF != data[b + hi]:
                    return None
            elif checksum.compute(data[b:]) != checksum.stored(data, b, size):
                return None
        header_fast = self._fast_header
        if header_fast is None:
            header_fast = self._fast_header = self._fast_values(self.header)
            if header_fast is None:
                return None
        header = {}
        address = ""
        control = 0
        for name, value in zip(self._header_roles,
                               header_fast(data, b + self._start_len, "", None), strict=True):
            if name == "address":
                address = value
            elif name == "control":
                control = value
            elif name != "length" and not isinstance(value, bytes):
                header[name] = value
        if b != self.preamble_count:
            header["preamble"] = b
        area = data[b + hs:n - self._trailer]
        if self._offset:
            area = area.translate(self._sub)
        return self._decode_fast_body(b, address, control, header, area)

    def _decode_fast_body(self, b: int, address: str, control: int, header: dict[str, Any],
                          area: bytes) -> Frame | None:
        asize = len(area)
        plan = self._plans.get((control, asize))
        if plan is None:
            plan = self._plans[(control, asize)] = self._plan(control, asize)
        if plan is False:
            return None
        function, is_reply, abnormal, body, prefix_fast, suffix_fast, psize, ssize, roles = plan
        if control & self._follow_mask:
            header["follow"] = True
        identifier: str | None = None
        sequence: int | None = None
        items: list[DataItem] = []
        for role, value in zip(roles, prefix_fast(area, 0, "", None), strict=True):
            if role == "identifier":
                identifier = value
            elif role == "sequence":
                sequence = value
            else:
                items.extend(role.to_items(value, "", None))
        if identifier is not None:
            target = self._idents.get((identifier, asize - psize - ssize))
            if target is None:
                target = self._idents[(identifier, asize - psize - ssize)] = \
                    self._ident_plan(identifier, asize - psize - ssize)
            final, order, layout_fast, attrs = target
            if order is not None:
                header["identifier_order"] = order
            identifier = final
            if items:
                items = [DataItem(name=i.name, value=i.value, unit=i.unit, id=final,
                                  attrs=i.attrs) for i in items]
            if body.has_items:
                if layout_fast is None:
                    return None
                items.extend(layout_fast(area, psize, final, attrs))
        elif body.has_items:
            return None
        if ssize:
            for element, value in zip(body.suffix.elements,
                                      suffix_fast(area, asize - ssize, "", None), strict=True):
                if element.name == "sequence":
                    sequence = value
                else:
                    items.extend(element.to_items(value, identifier or "", None))
        return Frame(protocol=self.name, direction="reply" if is_reply else "request",
                     function=function, address=address, control=control,
                     abnormal=abnormal, identifier=identifier, sequence=sequence,
                     header=header, items=tuple(items))

    def _plan(self, control: int, asize: int) -> Any:
        """What the fast path does with a control byte and a data-area size (cached)."""
        code = control & self._fn_mask
        function = self._fn_names.get(code)
        if function is None:
            return False
        is_reply = bool(control & self._dir_mask)
        abnormal = bool(control & self._abn_mask)
        for rule in self._rules(code, is_reply, abnormal):
            if rule.fits(asize):
                prefix_fast = self._fast_values(rule.prefix)
                suffix_fast = self._fast_values(rule.suffix)
                if prefix_fast is None or suffix_fast is None:
                    return False
                psize, ssize = rule.prefix.fixed_size, rule.suffix.fixed_size
                if not rule.has_items and psize + ssize != asize:
                    return False
                roles = tuple(e.name if e.name in SPECIAL else e for e in rule.prefix.elements)
                return (function, is_reply, abnormal, rule, prefix_fast, suffix_fast,
                        psize, ssize, roles)
        return False

    def _ident_plan(self, identifier: str, dsize: int) -> tuple[str, str | None,
                                                               FastLayout | None,
                                                               dict[str, Any] | None]:
        """Identifier as decoded → (final identifier, wire order if swapped, the fast
        layout for ``dsize`` data bytes, item attrs); cached per (identifier, size)."""
        order = None
        match = self.catalog.lookup(identifier)
        if match is None and self._ident_accept:
            swapped = bytes.fromhex(identifier)[::-1].hex().upper()
            match = self.catalog.lookup(swapped)
            if match is not None:
                order = "big" if self._ident_little else "little"
                identifier = swapped
        if match is None:
            return identifier, order, None, None
        for layout in match.layouts:
            if layout.size == dsize:
                return identifier, order, self._fast(layout), match.attrs
        for layout in match.layouts:
            if layout.size is None and dsize >= layout.fixed_size:
                return identifier, order, _variable_items(layout, dsize), match.attrs
        return identifier, order, None, match.attrs

    # ----------------------------------------------------------------- general path
    def _decode_general(self, data: bytes) -> Frame:
        begin, end = self.envelope.validate(data)
        hstart = begin + self._start_len
        hend = begin + self.envelope.header_size
        try:
            values = self.header.decode(data[hstart:hend], self.engine)
        except LayoutError as exc:
            raise FieldValueError(exc.reason, protocol=self.name, data=data,
                                  field=f"header.{exc.element}",
                                  offset=hstart + exc.offset) from None
        header: dict[str, Any] = {}
        address = ""
        control = 0
        for name, value in zip(self._header_roles, values, strict=True):
            if name == "address":
                address = value
            elif name == "control":
                control = value
            elif name != "length":
                if isinstance(value, bytes):
                    continue  # const
                header[name] = value
        if begin != self.preamble_count:
            header["preamble"] = begin
        is_reply = bool(control & self._dir_mask)
        abnormal = bool(control & self._abn_mask)
        if control & self._follow_mask:
            header["follow"] = True
        code = control & self._fn_mask
        function = self._fn_names.get(code) or f"0x{code:02X}"
        area = data[hend:end - self._trailer]
        if self._offset:
            area = area.translate(self._sub)
        identifier, sequence, items = self._decode_body(data, hend, area, code, is_reply,
                                                        abnormal, header)
        direction: Direction = "reply" if is_reply else "request"
        return Frame(protocol=self.name, direction=direction, function=function,
                     address=address, control=control, abnormal=abnormal,
                     identifier=identifier, sequence=sequence, header=header,
                     items=tuple(items))

    def _decode_body(self, data: bytes, base: int, area: bytes, code: int, is_reply: bool,
                     abnormal: bool, header: dict[str, Any]
                     ) -> tuple[str | None, int | None, list[DataItem]]:
        size = len(area)
        body = None
        for rule in self._rules(code, is_reply, abnormal):
            if rule.fits(size):
                body = rule
                break
        if body is None:
            # A function (or body size) the template does not describe: keep the bytes.
            return None, None, ([DataItem(name="data", value=area)] if area else [])
        engine = self.engine
        prefix, suffix = body.prefix, body.suffix
        psize = prefix.fixed_size
        ssize = suffix.fixed_size
        identifier = None
        sequence = None
        items: list[DataItem] = []
        try:
            if body.has_items or prefix.size is not None:
                pvalues = prefix.decode(area[:psize] if body.has_items or suffix.names
                                        else area, engine)
            else:
                pvalues = prefix.decode(area, engine)
        except LayoutError as exc:
            raise self._field_error(exc, data, base, "body") from None
        for element, value in zip(prefix.elements, pvalues, strict=True):
            if element.name == "identifier":
                identifier = value
            elif element.name == "sequence":
                sequence = value
            else:
                items.extend(element.to_items(value, identifier or "", None))
        match: CatalogMatch | None = None
        if identifier is not None:
            match = self.catalog.lookup(identifier)
            if match is None and self._ident_accept:
                swapped = bytes.fromhex(identifier)[::-1].hex().upper()
                alt = self.catalog.lookup(swapped)
                if alt is not None:
                    header["identifier_order"] = "big" if self._ident_little else "little"
                    identifier, match = swapped, alt
            if match is not None:
                # items decoded before the identifier was final carry its id
                items = [DataItem(name=i.name, value=i.value, unit=i.unit, id=identifier,
                                  attrs=i.attrs) if i.id != identifier else i for i in items]
        if body.has_items:
            data_area = area[psize:size - ssize]
            items.extend(self._decode_items(data, base + psize, data_area, identifier, match))
            if suffix.names:
                try:
                    svalues = suffix.decode(area[size - ssize:], engine)
                except LayoutError as exc:
                    exc.offset += size - ssize
                    raise self._field_error(exc, data, base, "body") from None
                for element, value in zip(suffix.elements, svalues, strict=True):
                    if element.name == "sequence":
                        sequence = value
                    else:
                        items.extend(element.to_items(value, identifier or "", None))
        return identifier, sequence, items

    def _decode_items(self, data: bytes, base: int, area: bytes, identifier: str | None,
                      match: CatalogMatch | None) -> list[DataItem]:
        if match is None:
            return [DataItem(name="data", value=area, id=identifier or "")] if area else []
        size = len(area)
        chosen = None
        for layout in match.layouts:
            if layout.size == size or (layout.size is None and size >= layout.fixed_size):
                chosen = layout
                break
        extra = b""
        if chosen is None:
            shorter = [lay for lay in match.layouts
                       if lay.size is not None and lay.size < size]
            if not shorter:
                sizes = sorted({lay.size if lay.size is not None else lay.fixed_size
                                for lay in match.layouts})
                raise LengthError(f"identifier {identifier} ({match.name}) carries "
                                  f"{size} data bytes; its layouts take {sizes}",
                                  protocol=self.name, data=data, field=f"items.{identifier}",
                                  offset=base + size)
            chosen = max(shorter, key=lambda lay: lay.size or 0)
            extra = area[chosen.size:]
            area = area[:chosen.size]
        try:
            values = chosen.decode(area, self.engine)
        except LayoutError as exc:
            raise self._field_error(exc, data, base, f"items.{identifier}") from None
        items = chosen.to_items(values, identifier or "", match.attrs)
        if extra:
            items.append(DataItem(name="extra_data", value=extra, id=identifier or ""))
        return items

    def _field_error(self, exc: LayoutError, data: bytes, base: int,
                     where: str) -> DecodeError:
        return FieldValueError(exc.reason, protocol=self.name, data=data,
                               field=f"{where}.{exc.element}", offset=base + exc.offset)

    # ----------------------------------------------------------------- encode
    def encode(self, frame: Frame) -> bytes:
        if frame.protocol != self.name:
            raise EncodeError(f"frame of protocol {frame.protocol!r} given to {self.name}",
                              protocol=self.name)
        code = self._function_code(frame.function)
        is_reply = frame.direction == "reply"
        control = code | (self._dir_mask if is_reply else 0) | \
            (self._abn_mask if frame.abnormal else 0) | \
            (self._follow_mask if frame.header.get("follow") else 0)
        area = self._encode_body(frame, code, is_reply)
        if self._offset:
            area = area.translate(self._add)
        frame_size = self.envelope.header_size + len(area) + self._trailer
        header_values: dict[str, Any] = {}
        for element in self.header.elements:
            name = element.name
            if name == "address":
                header_values[name] = frame.address
            elif name == "control":
                header_values[name] = control
            elif name == "length":
                header_values[name] = (len(area) + self._length_base) << self._length_shift \
                    if self.envelope.length else len(area)
            elif element.kind == "const":
                header_values[name] = element.encode(None)
            elif name in frame.header:
                header_values[name] = frame.header[name]
            else:
                raise EncodeError(f"header field {name!r} missing from frame.header",
                                  protocol=self.name, field=f"header.{name}")
        try:
            head = self.header.encode_values(header_values)
        except LayoutError as exc:
            raise EncodeError(exc.reason, protocol=self.name,
                              field=f"header.{exc.element}") from None
        if self.envelope.max_frame < frame_size:
            raise EncodeError(f"the frame would be {frame_size} bytes, the protocol allows "
                              f"{self.envelope.max_frame}", protocol=self.name, field="items")
        out = bytearray(self.envelope.start)
        out += head
        out += area
        out += bytes(self._trailer - len(self.envelope.end))
        out += self.envelope.end
        self.envelope.seal(out)
        preamble = frame.header.get("preamble", self.preamble_count)
        if preamble and self.envelope.preamble is not None:
            return bytes([self.envelope.preamble]) * int(preamble) + bytes(out)
        return bytes(out)

    def _function_code(self, function: str) -> int:
        code = self._fn_codes.get(function)
        if code is not None:
            return code
        if function.startswith("0x"):
            try:
                return int(function, 16)
            except ValueError:
                pass
        raise EncodeError(f"unknown function {function!r}; known: {sorted(self._fn_codes)}",
                          protocol=self.name, field="function")

    def _encode_body(self, frame: Frame, code: int, is_reply: bool) -> bytes:
        by_name: dict[str, DataItem] = {}
        for item in frame.items:
            by_name.setdefault(item.name, item)
        rules = self._rules(code, is_reply, frame.abnormal)
        raw_only = frame.identifier is None and frame.sequence is None and \
            len(frame.items) == 1 and "data" in by_name
        # A body no rule described was kept whole as one "data" item: send it back as is.
        body = None if raw_only else self._choose_body(rules, frame, by_name)
        if body is None:
            raw = by_name.get("data")
            return bytes(raw.value) if raw is not None else b""
        identifier = frame.identifier
        ident_order = frame.header.get("identifier_order")
        out = bytearray()
        for layout in ((body.prefix, body.suffix) if not body.has_items else (body.prefix,)):
            out += self._encode_layout(layout, frame, by_name, identifier, ident_order)
        if body.has_items:
            match = self.catalog.lookup(identifier) if identifier is not None else None
            out += self._encode_items(match, by_name, identifier)
            out += self._encode_layout(body.suffix, frame, by_name, identifier, ident_order)
        return bytes(out)

    def _choose_body(self, rules: list[CompiledBody], frame: Frame,
                     by_name: Mapping[str, DataItem]) -> CompiledBody | None:
        fallback = None
        for rule in rules:
            names = rule.names()
            needed = names - SPECIAL
            if any(n not in by_name for n in needed
                   if not _is_const(rule, n)):
                continue
            if "identifier" in names and frame.identifier is None:
                continue
            if "sequence" in names and frame.sequence is None:
                continue
            if fallback is None:
                fallback = rule
            if ("identifier" in names) == (frame.identifier is not None) and \
                    ("sequence" in names) == (frame.sequence is not None):
                return rule
        return fallback

    def _encode_layout(self, layout: Layout, frame: Frame, by_name: Mapping[str, DataItem],
                       identifier: str | None, ident_order: str | None) -> bytes:
        values: dict[str, Any] = {}
        for element in layout.elements:
            if element.name == "identifier":
                ident = identifier or ""
                if ident_order is not None and \
                        (ident_order == "little") != self._ident_little:
                    ident = bytes.fromhex(ident)[::-1].hex()
                values["identifier"] = ident
            elif element.name == "sequence":
                values["sequence"] = frame.sequence
            else:
                try:
                    values[element.name] = element.from_items(by_name)
                except ValueError as exc:
                    raise EncodeError(str(exc), protocol=self.name,
                                      field=f"body.{element.name}") from None
        try:
            return layout.encode_values(values)
        except LayoutError as exc:
            raise EncodeError(exc.reason, protocol=self.name,
                              field=f"body.{exc.element}") from None

    def _encode_items(self, match: CatalogMatch | None, by_name: Mapping[str, DataItem],
                      identifier: str | None) -> bytes:
        extra = by_name.get("extra_data")
        if match is None:
            raw = by_name.get("data")
            return bytes(raw.value) if raw is not None else b""
        last_error: LayoutError | None = None
        for layout in match.layouts:
            if not all(_present(e, by_name) for e in layout.elements):
                continue
            try:
                out = layout.encode(by_name)
            except LayoutError as exc:
                last_error = exc
                continue
            return out + (bytes(extra.value) if extra is not None else b"")
        if last_error is not None:
            raise EncodeError(last_error.reason, protocol=self.name,
                              field=f"items.{identifier}.{last_error.element}")
        wanted = [list(layout.names) for layout in match.layouts]
        raise EncodeError(f"identifier {identifier} ({match.name}) needs items {wanted}",
                          protocol=self.name, field=f"items.{identifier}")

    # ----------------------------------------------------------------- commands
    def commands(self) -> Sequence[str]:
        return tuple(self._commands)

    def _check_commands(self, compiler: Compiler) -> None:
        for name, spec in self._commands.items():
            path = ("commands", name)
            if spec.function not in self._fn_codes:
                raise compiler.error(f"unknown function {spec.function!r}; known: "
                                     f"{sorted(self._fn_codes)}", (*path, "function"))
            if isinstance(spec.identifier, str) and spec.identifier not in self.catalog:
                raise compiler.error(f"identifier {spec.identifier} is not in the catalog",
                                     (*path, "identifier"))

    @cached_property
    def matching(self) -> tuple[Any, ...]:
        return tuple(self.template.matching)

    def encode_command(self, command: str, address: str,
                       params: Mapping[str, Any] | None = None, *, sequence: int = 0,
                       timezone: str = "Asia/Shanghai") -> CommandFrame:
        spec = self._commands.get(command)
        if spec is None:
            raise CommandNotSupportedError(
                f"{self.name} ({self.variant}) has no frame for {command!r}",
                protocol=self.name, field="command",
                hint=f"supported: {sorted(self._commands)}")
        params = dict(params or {})
        identifier = self._command_identifier(command, spec, params)
        items = [DataItem(name=element, value=self._command_value(command, element, source,
                                                                   params, timezone))
                 for element, source in spec.values.items()]
        header = {name: self._command_value(command, name, source, params, timezone)
                  for name, source in self.template.command_header.items()}
        request = Frame(protocol=self.name, direction="request", function=spec.function,
                        address=spec.address or address, identifier=identifier,
                        sequence=sequence & 0xFF, header=header, items=tuple(items))
        rules = self._rules(self._fn_codes[spec.function], False, False)
        body = self._choose_body(rules, request, {i.name: i for i in items})
        if body is None or "sequence" not in body.names():
            request = Frame(protocol=self.name, direction="request", function=spec.function,
                            address=request.address, identifier=identifier, header=header,
                            items=tuple(items))
        data = self.encode(request)
        request = self.decode(data)  # the typed request exactly as sent
        return CommandFrame(protocol=self.name, command=command, address=request.address,
                            data=data, request=request,
                            expects_reply=spec.reply == "expected",
                            match_on=self.matching)

    def _command_identifier(self, command: str, spec: CommandSpec,
                            params: Mapping[str, Any]) -> str | None:
        ident = spec.identifier
        if ident is None or isinstance(ident, str):
            return ident
        assert isinstance(ident, IdentifierParam)
        raw = params.get(ident.param, ident.default)
        if raw is None:
            raise EncodeError(f"{command} needs parameter {ident.param!r}", protocol=self.name,
                              field=ident.param)
        if ident.base is None:
            text = str(raw).upper()
            if not text or any(c not in "0123456789ABCDEF" for c in text):
                raise EncodeError(f"{ident.param} must be a hex identifier, got {raw!r}",
                                  protocol=self.name, field=ident.param)
            return text
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise EncodeError(f"{ident.param} must be an integer, got {raw!r}",
                              protocol=self.name, field=ident.param) from None
        if (ident.minimum is not None and number < ident.minimum) or \
                (ident.maximum is not None and number > ident.maximum):
            raise EncodeError(f"{ident.param}={number} is outside {ident.minimum}.."
                              f"{ident.maximum}", protocol=self.name, field=ident.param)
        base = ident.base.replace(" ", "")
        return f"{int(base, 16) + number + ident.offset:0{len(base)}X}"

    def _command_value(self, command: str, element: str, source: CommandValue,
                       params: Mapping[str, Any], timezone: str) -> Any:
        if source.param is None:
            return source.value
        value = params.get(source.param)
        if value is not None and source.index is not None:
            try:
                value = list(value)[source.index]
            except (IndexError, TypeError):
                value = None
        if value is None:
            value = source.default
        if value is None:
            raise EncodeError(f"{command} needs parameter {source.param!r}"
                              + (f"[{source.index}]" if source.index is not None else ""),
                              protocol=self.name, field=source.param)
        if source.as_ == "local_time":
            value = _local_time(value, timezone, self.name, source.param)
        elif isinstance(value, float):
            value = Decimal(str(value))
        elif isinstance(value, str) and _looks_decimal(value):
            with contextlib.suppress(InvalidOperation):
                value = Decimal(value)
        return value


def _variable_items(layout: Layout, size: int) -> FastLayout:
    """Items of a variable-size layout (a block of energies) for the fast path."""

    def items(area: bytes, offset: int, ident: str,
              attrs: dict[str, Any] | None) -> list[DataItem]:
        return layout.to_items(layout.decode(area[offset:offset + size]), ident, attrs)

    return items


class _BoundedCache(dict[Any, Any]):
    """A dict that forgets everything when full (identifiers come from the wire)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        if len(self) >= self.limit:
            self.clear()
        super().__setitem__(key, value)


def _looks_decimal(text: str) -> bool:
    return bool(text) and text.replace(".", "", 1).lstrip("-").isdigit() and "." in text


def _present(element: Any, by_name: Mapping[str, DataItem]) -> bool:
    if element.kind == "const":
        return True
    if element.name in by_name:
        return True
    fields = getattr(element, "fields", ())
    return any(f.name in by_name for f in fields)


def _is_const(rule: CompiledBody, name: str) -> bool:
    for element in (*rule.prefix.elements, *rule.suffix.elements):
        if element.name == name:
            return element.kind == "const"
    return False


def _local_time(value: Any, timezone: str, protocol: str, param: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise EncodeError(f"{param} must be an ISO 8601 time, got {value!r}",
                              protocol=protocol, field=param) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)  # noqa: DTZ001
    if not isinstance(value, datetime):
        raise EncodeError(f"{param} must be a datetime", protocol=protocol, field=param)
    if value.tzinfo is not None:
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise EncodeError(f"unknown time zone {timezone!r}", protocol=protocol,
                              field="timezone") from None
        value = value.astimezone(zone).replace(tzinfo=None)
    local: datetime = value
    return local
