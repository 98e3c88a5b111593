"""DTU link packets — registration, heartbeat, logout — recognised by template.

A DTU forwards serial frames over TCP transparently; on connect it usually sends a
registration packet carrying its id, then heartbeats every N seconds, interleaved with the
meter frames it forwards. A *link template* (``kind: link``) says what those packets look
like, so the FEP can recognise them by configuration.

Strategy: each packet spec becomes a :class:`~decoders.framing.FrameSpec`, so one framer
built from ``link.frame_specs() + meter_protocol.frame_specs()`` splits the mixed stream;
``decode`` of a link packet gives a :class:`~decoders.frame.Frame` with ``direction
'report'``, ``function`` the packet kind (``registration``, ``heartbeat``…) and
``address`` the DTU id. ``encode`` builds the same packets (the simulator sends them);
``reply_to(frame)`` gives the answer a DTU expects, if any.

An ``ack`` packet (``kind: ack``) is what the FEP sends a DTU that stores and forwards its
meters' uploads, once an upload is safe on the platform side; a pattern group named ``ref``
identifies the upload (the FEP puts the CRC-32 of the upload's bytes there, 8 hex digits).

Packet matchers:

- ``literal`` / ``ascii_literal`` — exact bytes (a fixed heartbeat such as ``FE`` or
  ``www.usr.cn``);
- ``pattern`` — an ASCII regular expression with a fixed ``size`` or a ``terminator``;
  named groups become items, the group named by ``device_id`` the address;
- ``envelope`` + ``elements`` — a binary vendor format: start/length/checksum/end like any
  meter frame, then elements decoded like a catalog layout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decoders.errors import EncodeError, FramingError, LengthError, TemplateError
from decoders.frame import DataItem, Frame
from decoders.framing import (
    MEASURE_NEED_DATA,
    MEASURE_NO_SYNC,
    Envelope,
    FrameSpec,
)
from decoders.protocol import Protocol
from decoders.template.compiler import Compiler, build_envelope
from decoders.template.layout import Layout, LayoutError
from decoders.template.loader import line_of, load_document, substitute, validate
from decoders.template.model import FrameTemplate, LinkPacketSpec

__all__ = ["LinkPacketFormat", "LinkTemplate", "load_link_template"]

_PRINTABLE = frozenset(range(0x20, 0x7F))


@dataclass
class LinkPacketFormat:
    """One compiled packet spec; also the :class:`FrameSpec` the framer uses."""

    spec: LinkPacketSpec
    protocol: str
    literal: bytes | None = None
    regex: re.Pattern[bytes] | None = None
    terminator: bytes = b""
    envelope: Envelope | None = None
    layout: Layout | None = None

    def __post_init__(self) -> None:
        spec = self.spec
        if self.literal is not None:
            self.first_bytes: frozenset[int] | None = frozenset({self.literal[0]})
            self.max_size = len(self.literal)
        elif self.envelope is not None:
            self.first_bytes = self.envelope.first_bytes
            self.max_size = self.envelope.max_size
        else:
            assert self.regex is not None
            self.first_bytes = _pattern_first_bytes(self.regex)
            self.max_size = spec.size or spec.max_size

    def measure(self, buf: bytes | bytearray, pos: int) -> int:
        if self.literal is not None:
            have = bytes(buf[pos:pos + len(self.literal)])
            if have == self.literal:
                return len(self.literal)
            return MEASURE_NEED_DATA if self.literal.startswith(have) else MEASURE_NO_SYNC
        if self.envelope is not None:
            return self.envelope.measure(buf, pos)
        assert self.regex is not None
        if self.spec.size is not None:
            size = self.spec.size
            if len(buf) - pos < size:
                return MEASURE_NEED_DATA if _printable(buf, pos, len(buf)) else MEASURE_NO_SYNC
            return size if self.regex.fullmatch(bytes(buf[pos:pos + size])) else MEASURE_NO_SYNC
        end = buf.find(self.terminator, pos, pos + self.max_size)
        if end == -1:
            if len(buf) - pos < self.max_size and \
                    _printable(buf, pos, len(buf), self.terminator):
                return MEASURE_NEED_DATA
            return MEASURE_NO_SYNC
        size = end - pos + len(self.terminator)
        return size if self.regex.fullmatch(bytes(buf[pos:end])) else MEASURE_NO_SYNC

    def matches(self, data: bytes) -> bool:
        return bool(data) and self.measure(data, 0) == len(data)


def _pattern_first_bytes(regex: re.Pattern[bytes]) -> frozenset[int] | None:
    """The bytes a match of ``regex`` can start with, when its first item is a literal
    character or a character class; None (any byte) otherwise. Lets the framer skip garbage
    with ``find`` instead of trying the pattern at every byte."""
    import re._parser as sre_parse  # type: ignore[import-not-found]  # re's own parser

    try:
        parsed = sre_parse.parse(regex.pattern.decode("latin-1"))
    except (re.error, UnicodeDecodeError):  # pragma: no cover - compiled already
        return None
    return _first_of(list(parsed), sre_parse)


def _first_of(items: list[Any], sre_parse: Any) -> frozenset[int] | None:
    while items and items[0][0] is sre_parse.AT:  # ^ anchors
        items = items[1:]
    if not items:
        return None
    op, arg = items[0]
    if op is sre_parse.LITERAL:
        return frozenset({arg})
    if op is sre_parse.IN:
        out: set[int] = set()
        for kind, value in arg:
            if kind is sre_parse.LITERAL:
                out.add(value)
            elif kind is sre_parse.RANGE:
                out.update(range(value[0], value[1] + 1))
            else:
                return None  # negated classes, categories: any byte may start it
        return frozenset(out)
    if op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT) and arg[0] >= 1:
        return _first_of(list(arg[2]), sre_parse)
    return None


def _printable(buf: bytes | bytearray, lo: int, hi: int, also: bytes = b"") -> bool:
    """Could these bytes still become an ASCII packet (text, or its terminator)?"""
    return all(b in _PRINTABLE or b in also for b in buf[lo:hi])


class LinkTemplate(Protocol):
    """DTU link packets of one vendor family (see the module docstring)."""

    def __init__(self, template: FrameTemplate, file: str, node: Any) -> None:
        self.template = template
        self.name = template.protocol
        self.title = template.title
        compiler = Compiler(template, file, lambda p: line_of(node, p))
        self.formats: list[LinkPacketFormat] = []
        for index, spec in enumerate(template.packets):
            path = ("packets", index)
            kwargs: dict[str, Any] = {}
            if spec.literal is not None:
                kwargs["literal"] = bytes.fromhex(spec.literal)
            elif spec.ascii_literal is not None:
                kwargs["literal"] = spec.ascii_literal.encode("ascii")
            elif spec.pattern is not None:
                try:
                    kwargs["regex"] = re.compile(spec.pattern.encode("ascii"))
                except re.error as exc:
                    raise compiler.error(f"bad regular expression: {exc}",
                                         (*path, "pattern")) from None
                kwargs["terminator"] = bytes.fromhex(spec.terminator or "")
            else:
                assert spec.envelope is not None
                kwargs["envelope"] = build_envelope(spec.envelope, self.name, spec.name)
                kwargs["layout"] = compiler.layout(spec.name, spec.elements,
                                                   (*path, "elements"))
            if spec.device_id is not None:
                groups = kwargs["regex"].groupindex if "regex" in kwargs else {}
                names = kwargs["layout"].names if "layout" in kwargs else ()
                if spec.device_id not in groups and spec.device_id not in names:
                    raise compiler.error(f"device_id {spec.device_id!r} names no group or "
                                         "element", (*path, "device_id"))
            self.formats.append(LinkPacketFormat(spec, self.name, **kwargs))

    def frame_specs(self) -> Sequence[FrameSpec]:
        return tuple(self.formats)

    def decode(self, data: bytes) -> Frame:
        data = bytes(data)
        for fmt in self.formats:
            if not fmt.matches(data):
                continue
            spec = fmt.spec
            items: list[DataItem] = []
            address = ""
            if fmt.regex is not None:
                body = data[:len(data) - len(fmt.terminator)] if fmt.terminator else data
                match = fmt.regex.fullmatch(body)
                assert match is not None
                for group, value in match.groupdict().items():
                    text = value.decode("ascii") if value is not None else None
                    if group == spec.device_id:
                        address = text or ""
                    else:
                        items.append(DataItem(name=group, value=text))
            elif fmt.layout is not None and fmt.envelope is not None:
                begin, _ = fmt.envelope.validate(data)
                hs = begin + fmt.envelope.header_size
                trailer = (fmt.envelope.checksum.size if fmt.envelope.checksum else 0) + \
                    len(fmt.envelope.end)
                try:
                    values = fmt.layout.decode(data[hs:len(data) - trailer])
                except LayoutError as exc:
                    raise FramingError(exc.reason, protocol=self.name, data=data,
                                       field=f"{spec.name}.{exc.element}",
                                       offset=hs + exc.offset) from None
                for element, value in zip(fmt.layout.elements, values, strict=True):
                    if element.name == spec.device_id:
                        address = str(value)
                    else:
                        items.extend(element.to_items(value, "", None))
            return Frame(protocol=self.name, direction="report", function=spec.kind,
                         address=address, header={"packet": spec.name}, items=tuple(items))
        if not data:
            raise LengthError("empty packet", protocol=self.name, data=data, offset=0)
        raise FramingError(f"matches none of the packets {[f.spec.name for f in self.formats]}",
                           protocol=self.name, data=data, field="packet", offset=0)

    def encode(self, frame: Frame) -> bytes:
        wanted = frame.header.get("packet")
        for fmt in self.formats:
            spec = fmt.spec
            if (wanted is not None and spec.name != wanted) or \
                    (wanted is None and spec.kind != frame.function):
                continue
            if fmt.literal is not None:
                return fmt.literal
            if fmt.layout is not None and fmt.envelope is not None:
                return self._encode_envelope(fmt, frame)
            return self._encode_pattern(fmt, frame)
        raise EncodeError(f"no packet {wanted or frame.function!r} in this link template",
                          protocol=self.name, field="function")

    def _encode_pattern(self, fmt: LinkPacketFormat, frame: Frame) -> bytes:
        assert fmt.regex is not None
        values = {i.name: str(i.value) for i in frame.items}
        if fmt.spec.device_id:
            values[fmt.spec.device_id] = frame.address
        missing = [g for g in fmt.regex.groupindex if g not in values]
        if missing:
            raise EncodeError(f"packet {fmt.spec.name!r} needs the item(s) {missing}",
                              protocol=self.name, field=fmt.spec.name)
        # Rebuild from the pattern: each named group becomes its value, the literal text
        # around the groups is kept (link packet patterns are literal text plus groups).
        pattern = fmt.regex.pattern.decode("ascii")
        pieces = re.split(r"\(\?P<(\w+)>[^)]*\)[*+?]?(?:\{[^}]*\})?", pattern)
        text = "".join(values[piece] if index % 2 else piece.strip("^$").replace("\\", "")
                       for index, piece in enumerate(pieces))
        data = text.encode("ascii") + fmt.terminator
        if not fmt.matches(data):
            raise EncodeError(f"{values} do not fit the packet pattern",
                              protocol=self.name, field=fmt.spec.name)
        return data

    def _encode_envelope(self, fmt: LinkPacketFormat, frame: Frame) -> bytes:
        assert fmt.layout is not None
        assert fmt.envelope is not None
        env = fmt.envelope
        by_name = {i.name: i for i in frame.items}
        if fmt.spec.device_id:
            by_name[fmt.spec.device_id] = DataItem(name=fmt.spec.device_id, value=frame.address)
        try:
            body = fmt.layout.encode(by_name)
        except LayoutError as exc:
            raise EncodeError(exc.reason, protocol=self.name,
                              field=f"{fmt.spec.name}.{exc.element}") from None
        trailer = (env.checksum.size if env.checksum else 0) + len(env.end)
        size = env.header_size + len(body) + trailer
        out = bytearray(env.start) + bytearray(env.header_size - len(env.start)) + body
        out += bytes(trailer - len(env.end)) + env.end
        for offset, mark in env.marks:
            out[offset:offset + len(mark)] = mark
        if env.length is not None:
            raw = (size - env.length.add) << env.length.shift
            field = raw.to_bytes(env.length.size, env.length.order)
            out[env.length.offset:env.length.offset + env.length.size] = field
            if env.length.repeat_at is not None:
                out[env.length.repeat_at:env.length.repeat_at + env.length.size] = field
        env.seal(out)
        return bytes(out)

    def reply_to(self, frame: Frame) -> bytes | None:
        """The bytes the DTU expects in answer to this packet, if any."""
        for fmt in self.formats:
            if fmt.spec.name == frame.header.get("packet") and fmt.spec.reply:
                return bytes.fromhex(fmt.spec.reply)
        return None


def load_link_template(path: Path | str, *, text: str | None = None,
                       variant: str = "default") -> LinkTemplate:
    """Load and validate a link template; raises :class:`~decoders.errors.TemplateError`."""
    file = str(path)
    data, node = load_document(path, text)
    params = {**(data.get("parameters") or {}),
              **((data.get("variants") or {}).get(variant) or {})}
    model = validate(substitute(data, params, file, node), file, node)
    if model.kind != "link":
        raise TemplateError("not a link template (kind: link)", file=file, path="kind",
                            line=line_of(node, ("kind",)))
    return LinkTemplate(model, file, node)
