"""Errors of the control plane (ledger, import, topology, outbox, sync, commands)."""

from __future__ import annotations

from schemas.errors import UnimeterError

__all__ = [
    "DevicesError",
    "ImportRejectedError",
    "LedgerError",
    "NotFoundError",
    "SyncError",
]


class DevicesError(UnimeterError):
    """Root of the errors of ``devices/``."""


class LedgerError(DevicesError):
    """A ledger change was refused (unknown reference, forbidden transition, cycle …)."""


class NotFoundError(LedgerError):
    """A ledger object (device, meter, location, account …) does not exist."""


class ImportRejectedError(LedgerError):
    """An import file failed validation; nothing of it was applied (``problems`` lists why)."""


class SyncError(DevicesError):
    """A message from the customer/billing system could not be applied."""
