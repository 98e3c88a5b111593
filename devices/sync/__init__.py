"""Synchronisation with the utility's customer/billing system (CIS).

In: an initial batch from files (``unimeter sync initial FILES`` — the ledger importer, acting
as ``sync:initial``), then incremental changes on Kafka: ``sync.in.customers``
(``SyncCustomer``, ``SyncAccount``), ``sync.in.meters`` (``SyncMeter``), ``sync.in.tariffs``
(``SyncTariff``: versions and price adjustments → ``LedgerTariff`` on ``ledger.tariffs``),
``sync.in.topups`` (``TopUp`` → ``billing.topups`` once per ``top_up_id``),
``sync.in.collection`` (``SyncCollectionRequirement`` → collection plan ``sync:<id>``) and
``sync.in.device_parameters`` (``SyncDeviceParameters`` → desired parameters, and command
requests for the ones a catalog command sets).

Out: ``sync.out.device_status``, ``sync.out.alarms``, ``sync.out.service_exceptions``,
``sync.out.data_availability``, and ``sync.out.rejects`` for every change not applied
(also kept in ``ledger.sync_exceptions`` and sent to ``dlq.sync``).
"""

from __future__ import annotations

from devices.sync.apply import HANDLERS, SyncRejectedError
from devices.sync.service import SYNC_IN_TOPICS, Incoming, SyncService, SyncStats
from devices.sync.settings import SyncSettings

__all__ = ["HANDLERS", "SYNC_IN_TOPICS", "Incoming", "SyncRejectedError", "SyncService",
           "SyncSettings", "SyncStats"]
