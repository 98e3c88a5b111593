"""Errors of the storage sink."""

from __future__ import annotations

from schemas.errors import UnimeterError

__all__ = ["SinkBackpressureError", "SinkError", "StorageUnavailableError"]


class SinkError(UnimeterError):
    """The sink cannot go on: a fault that retrying will not cure (permissions, schema)."""


class SinkBackpressureError(SinkError):
    """The destination cannot take the batch now; retry it after ``retry_after`` seconds.

    Raised by :meth:`sinks.base.BatchingSink.write`; the runner then discards the batch, seeks
    its partition back to the last committed offset and pauses consumption, so nothing is
    lost and nothing advances while the database is away.
    """

    def __init__(self, message: str, *, retry_after: float, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class StorageUnavailableError(SinkError):
    """The database did not answer (down, restarting, out of connections)."""
