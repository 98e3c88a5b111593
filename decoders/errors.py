"""The errors of the protocol engine, and whose fault each one is.

Strategy: every error says *whose fault* it is (``fault``), as h11 does, because the
caller's reaction depends on it:

- ``peer`` — the device sent bytes that are not a valid frame (:class:`DecodeError` and its
  family). The FEP counts it, keeps the bytes in the dead-letter topic and carries on.
- ``caller`` — our caller asked for something the protocol cannot express
  (:class:`EncodeError`, :class:`CommandNotSupportedError`). A bug or a bad command request.
- ``configuration`` — a frame or report template is wrong (:class:`TemplateError`); raised
  at load time only, never while decoding.

A decode error carries the protocol, the field path inside the frame (``header.address``,
``body.901F.current_volume``), the byte offset from the first byte given to the decoder, a
hex excerpt around that offset and the reason. ``to_dict()`` is what ``unimeter decode``
prints and what a dead-letter record keeps.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from schemas.errors import ConfigurationError, UnimeterError

__all__ = [
    "ChecksumError",
    "CommandNotSupportedError",
    "DecodeError",
    "EncodeError",
    "Fault",
    "FieldValueError",
    "FramingError",
    "LengthError",
    "TemplateError",
    "TrailingBytesError",
    "UnknownProtocolError",
    "hex_excerpt",
]

Fault = Literal["peer", "caller", "configuration"]

_EXCERPT_RADIUS = 8


def hex_excerpt(data: bytes, offset: int | None, radius: int = _EXCERPT_RADIUS) -> str:
    """Up to ``radius`` bytes either side of ``offset`` as spaced hex, the byte at ``offset``
    in brackets: ``68 10 [4C] 33 22``. Without an offset, the first ``2*radius`` bytes."""
    if not data:
        return ""
    if offset is None:
        head = data[: 2 * radius]
        return head.hex(" ").upper() + (" …" if len(data) > len(head) else "")
    offset = max(0, min(offset, len(data)))
    lo, hi = max(0, offset - radius), min(len(data), offset + radius + 1)
    parts = [f"{b:02X}" for b in data[lo:hi]]
    if offset < len(data):
        parts[offset - lo] = f"[{parts[offset - lo]}]"
    else:
        parts.append("[]")  # the missing byte just past the end
    return ("… " if lo else "") + " ".join(parts) + (" …" if hi < len(data) else "")


class DecodeError(UnimeterError):
    """Bytes from a device are not a valid frame of the protocol: the peer's fault.

    ``field`` is the path of the offending field, ``offset`` the byte offset in the data
    that was handed to the decoder, ``excerpt`` the bytes around it.
    """

    fault: ClassVar[Fault] = "peer"

    def __init__(self, reason: str, *, protocol: str, data: bytes = b"",
                 field: str | None = None, offset: int | None = None,
                 hint: str | None = None) -> None:
        where = ", ".join(p for p in (
            protocol,
            f"field {field}" if field else "",
            f"byte {offset}" if offset is not None else "",
        ) if p)
        super().__init__(reason, where=where, hint=hint or self.default_hint)
        self.reason = reason
        self.protocol = protocol
        self.field = field
        self.offset = offset
        self.excerpt = hex_excerpt(data, offset)

    default_hint: ClassVar[str] = ("the device sent a malformed frame; it is kept in the "
                                   "dead-letter topic — check the device's protocol variant")

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "fault": self.fault, "protocol": self.protocol,
                "reason": self.reason, "field": self.field, "offset": self.offset,
                "excerpt": self.excerpt, "hint": self.hint}


class FramingError(DecodeError):
    """A start, second-start or end byte is not where the frame format puts it."""


class LengthError(DecodeError):
    """The frame is shorter or longer than its length field says, or the length field lies."""


class TrailingBytesError(LengthError):
    """A complete frame is followed by more bytes (``decode`` takes exactly one frame; use a
    framer to split a stream). ``offset`` is where the extra bytes begin."""


class ChecksumError(DecodeError):
    """The checksum of the frame does not match its content."""


class FieldValueError(DecodeError):
    """A field holds a value its type forbids (a BCD nibble above 9, an impossible date…)."""


class EncodeError(UnimeterError):
    """A frame or command cannot be encoded as given: the caller's fault."""

    fault: ClassVar[Fault] = "caller"

    def __init__(self, reason: str, *, protocol: str, field: str | None = None,
                 hint: str | None = None, **context: Any) -> None:
        where = protocol + (f", field {field}" if field else "")
        super().__init__(reason, where=where, hint=hint, protocol=protocol, field=field,
                         **context)
        self.reason = reason
        self.protocol = protocol
        self.field = field


class CommandNotSupportedError(EncodeError):
    """The protocol (or the chosen variant) has no frame for this unified command."""


class TemplateError(ConfigurationError):
    """A frame or report template is invalid: names the file, the path inside it and why."""

    fault: ClassVar[Fault] = "configuration"

    def __init__(self, reason: str, *, file: str, path: str = "", line: int | None = None,
                 hint: str | None = None) -> None:
        where = file + (f":{line}" if line else "") + (f" at {path}" if path else "")
        super().__init__(reason, where=where,
                         hint=hint or "fix the template; see CONTRIBUTING.md "
                                      "'How to add a protocol / a frame template'",
                         file=file, path=path, line=line)
        self.reason = reason
        self.file = file
        self.path = path
        self.line = line


class UnknownProtocolError(UnimeterError):
    """No protocol of that name is registered (built in, or through an entry point)."""

    fault: ClassVar[Fault] = "caller"
