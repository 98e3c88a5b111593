"""The error root of unimeter and the errors of the contracts package.

Every package derives its own errors (in its own ``errors.py``) from :class:`UnimeterError`,
so an operator-facing process can catch one root and still print a precise message.
An error carries three things besides its message: *where* (what object, file, field or
offset), *why*, and *hint* — the next thing the person reading it should do.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigurationError",
    "MessageDecodeError",
    "SchemaVersionError",
    "UnimeterError",
]


class UnimeterError(Exception):
    """Root of every error unimeter raises on purpose."""

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None,
                 **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint
        self.context = context

    def __str__(self) -> str:
        parts = [self.message]
        if self.where:
            parts.append(f"(at {self.where})")
        text = " ".join(parts)
        if self.hint:
            text += f" — {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, used by CLI error output and dead-letter records."""
        out: dict[str, Any] = {"error": type(self).__name__, "reason": self.message}
        if self.where:
            out["where"] = self.where
        if self.hint:
            out["hint"] = self.hint
        for key, value in self.context.items():
            out[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        return out


class ConfigurationError(UnimeterError):
    """A setting or configuration file is wrong; raised at start-up, never later."""


class MessageDecodeError(UnimeterError):
    """Bytes from Kafka are not a message we can read (the producer's fault, not ours)."""


class SchemaVersionError(MessageDecodeError):
    """A message carries a schema version newer than this code understands."""
