"""Errors of the aggregates package."""

from __future__ import annotations

from schemas.errors import UnimeterError

__all__ = ["AggregateError", "AggregatesNotInstalledError"]


class AggregateError(UnimeterError):
    """An aggregate refresh or query failed."""


class AggregatesNotInstalledError(AggregateError):
    """The database has no aggregate relations yet (migrations not applied)."""
