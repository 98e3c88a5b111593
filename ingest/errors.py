"""Errors of the front-end processors.

Each says whose fault it is: the peer's (a device sent something we refuse), the
deployment's (a setting, a file) or the environment's (Kafka down and the spool full).
"""

from __future__ import annotations

from schemas.errors import UnimeterError

__all__ = [
    "AdmissionRejectedError",
    "FileImportError",
    "IngestError",
    "PublishError",
    "SessionLimitError",
    "SpoolCorruptError",
    "SpoolFullError",
]


class IngestError(UnimeterError):
    """Root of the errors raised by ``ingest``."""


class PublishError(IngestError):
    """Data could not be made durable (neither acknowledged by Kafka nor spooled)."""


class SpoolFullError(PublishError):
    """Kafka is not acknowledging and the local spool has no room left.

    The FEP stops acknowledging devices (they keep their data and retry) until Kafka is back
    and the spool drains; acknowledged data is never dropped.
    """


class SpoolCorruptError(IngestError):
    """A spool segment holds a record whose length or checksum is wrong (a torn write)."""


class AdmissionRejectedError(IngestError):
    """A link reported for a device the ledger does not assign to it (the peer's fault)."""


class SessionLimitError(IngestError):
    """A peer broke a session limit (frame size, malformed-frame budget, connections)."""


class FileImportError(IngestError):
    """An upload file was refused; ``context['report']`` lists every rejected line."""
