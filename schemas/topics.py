"""The topic catalog (DESIGN.md §3): names, keys, payload types, partitions, retention.

One table, used by ``unimeter topics create``, by producers (to pick the name and check the
payload type) and by the documentation. Names get the configured prefix
(:meth:`schemas.settings.KafkaSettings.topic`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.messages import (
    Alert,
    BalanceChange,
    BillingControl,
    Charge,
    CommandDispatch,
    CommandRequest,
    CommandResult,
    DeadLetter,
    DeviceEvent,
    LedgerAccount,
    LedgerMeter,
    LedgerTariff,
    LedgerVeeGroup,
    Message,
    RawFrame,
    Reading,
    ReadingBatch,
    ReadingEdit,
    Settlement,
    SyncAccount,
    SyncCollectionRequirement,
    SyncCustomer,
    SyncDataAvailability,
    SyncDeviceParameters,
    SyncDeviceStatus,
    SyncMeter,
    SyncReject,
    SyncServiceException,
    SyncTariff,
    TopUp,
    ValidatedReading,
)

__all__ = ["DLQ_STAGES", "TOPICS", "TopicSpec", "topic_spec"]

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A catalog entry. ``partitions=None`` means the configured default for keyed data."""

    name: str
    key: str
    carries: str
    payloads: tuple[type[Message], ...]
    partitions: int | None = None
    retention_ms: int | None = 7 * _DAY_MS
    compacted: bool = False
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        """Broker topic configuration for this entry."""
        cfg = dict(self.extra_config)
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
            cfg.setdefault("min.compaction.lag.ms", "0")
        elif self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


#: Stages that may reject input; each has a ``dlq.<stage>`` topic.
DLQ_STAGES: tuple[str, ...] = ("ingest", "pipeline", "billing", "sink", "commands", "sync")

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("frames.raw", "device id", "every frame in and out, with FEP, peer, protocol",
              (RawFrame,), retention_ms=30 * _DAY_MS),
    TopicSpec("readings.raw", "meter id",
              "canonical readings as decoded: one batch per meter and frame (FEPs), or one "
              "reading", (ReadingBatch, Reading), retention_ms=14 * _DAY_MS),
    TopicSpec("device.events", "device id", "online/offline, login, alarms, status bits",
              (DeviceEvent,)),
    TopicSpec("readings.edits", "meter id",
              "manual edits and finalisations of validated values, applied by VEE",
              (ReadingEdit,), retention_ms=30 * _DAY_MS),
    TopicSpec("readings.validated", "meter id",
              "readings with quality, method, flags, version, consumption, dimensions",
              (ValidatedReading,), retention_ms=14 * _DAY_MS),
    TopicSpec("billing.charges", "account id", "priced consumption and adjustments", (Charge,),
              retention_ms=30 * _DAY_MS),
    TopicSpec("billing.balances", "account id", "balance changes and settlements",
              (BalanceChange,), retention_ms=30 * _DAY_MS),
    TopicSpec("billing.topups", "account id", "top-ups, refunds and adjustments to apply",
              (TopUp,), retention_ms=30 * _DAY_MS),
    TopicSpec("billing.inbox", "account id",
              "the billing agent's input: an account's validated readings, top-ups and "
              "controls in one order (forwarded from readings.validated and billing.topups)",
              (ValidatedReading, TopUp, BillingControl), retention_ms=7 * _DAY_MS),
    TopicSpec("billing.settlements", "account id",
              "daily, monthly and yearly settlements (bills), revised by corrections",
              (Settlement,), retention_ms=30 * _DAY_MS),
    TopicSpec("alerts", "object id", "operator alerts with severity and reason", (Alert,)),
    TopicSpec("commands.requests", "device id", "command requests from API, billing, operations",
              (CommandRequest,)),
    TopicSpec("commands.dispatch", "device id", "approved commands routed to FEPs",
              (CommandDispatch,)),
    TopicSpec("commands.results", "device id", "command outcomes from FEPs", (CommandResult,)),
    TopicSpec("ledger.meters", "meter id", "meters as the stream sees them", (LedgerMeter,),
              compacted=True),
    TopicSpec("ledger.accounts", "account id", "accounts as the stream sees them",
              (LedgerAccount,), compacted=True),
    TopicSpec("ledger.tariffs", "tariff id:version", "effective-dated tariff versions",
              (LedgerTariff,), compacted=True),
    TopicSpec("ledger.vee_groups", "group id", "VEE rule groups", (LedgerVeeGroup,),
              compacted=True),
    # Synchronisation with the utility's customer/billing system (CIS): in and out.
    TopicSpec("sync.in.customers", "customer id",
              "customers and their accounts from the CIS (one partition per customer)",
              (SyncCustomer, SyncAccount), retention_ms=30 * _DAY_MS),
    TopicSpec("sync.in.meters", "meter id", "meter-account bindings from the CIS", (SyncMeter,),
              retention_ms=30 * _DAY_MS),
    TopicSpec("sync.in.tariffs", "tariff id", "tariff versions and price adjustments",
              (SyncTariff,), retention_ms=30 * _DAY_MS),
    TopicSpec("sync.in.topups", "account id", "top-ups paid at the CIS's counters and apps",
              (TopUp,), retention_ms=30 * _DAY_MS),
    TopicSpec("sync.in.collection", "requirement id", "what the CIS needs read and how often",
              (SyncCollectionRequirement,), retention_ms=30 * _DAY_MS),
    TopicSpec("sync.in.device_parameters", "device id", "device parameters the CIS wants set",
              (SyncDeviceParameters,), retention_ms=30 * _DAY_MS),
    TopicSpec("sync.out.device_status", "device id", "device lifecycle, link, valve, battery",
              (SyncDeviceStatus,)),
    TopicSpec("sync.out.alarms", "object id", "alarms for the CIS", (Alert,)),
    TopicSpec("sync.out.service_exceptions", "object id",
              "failed commands and silent devices the CIS must act on",
              (SyncServiceException,)),
    TopicSpec("sync.out.data_availability", "meter id", "per meter and day: data delivered",
              (SyncDataAvailability,)),
    TopicSpec("sync.out.rejects", "entity id", "CIS changes not applied: rejects and conflicts",
              (SyncReject,), retention_ms=30 * _DAY_MS),
    *(
        TopicSpec(f"dlq.{stage}", "original key", f"input rejected by {stage}, with the reason",
                  (DeadLetter,), partitions=1, retention_ms=30 * _DAY_MS)
        for stage in DLQ_STAGES
    ),
)

_BY_NAME = {spec.name: spec for spec in TOPICS}


def topic_spec(name: str) -> TopicSpec:
    """The catalog entry of ``name`` (without prefix); ``KeyError`` names the known topics."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic '{name}'; known: {', '.join(sorted(_BY_NAME))}") from None
