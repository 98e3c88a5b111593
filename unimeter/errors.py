"""The error root (re-exported from ``schemas.errors``) and the errors of the CLI and services."""

from __future__ import annotations

from schemas.errors import ConfigurationError, MessageDecodeError, UnimeterError

__all__ = [
    "ConfigurationError",
    "DatabaseUnavailableError",
    "MessageDecodeError",
    "MigrationError",
    "ServiceError",
    "UnimeterError",
]


class ServiceError(UnimeterError):
    """A local service could not be installed, started, checked or stopped."""


class DatabaseUnavailableError(UnimeterError):
    """The database cannot be reached (down, wrong URL, wrong password)."""


class MigrationError(UnimeterError):
    """A migration failed or the recorded migrations disagree with the files."""
