"""How each stored message type becomes rows: the registry of stores.

Strategy: one :class:`Store` subclass per message type, registered by its ``message_type``
(the psycopg habit: identity as a class attribute, the registry built from the classes). A
store has two steps:

* :meth:`Store.prepare` turns one message into its rows (pure Python; an exception here
  rejects only that record, with the reason, to the dead-letter topic);
* :meth:`Store.write` appends the prepared rows of a batch inside the sink's transaction,
  through :class:`~sinks.tables.TableAppender` (fast binary COPY, or staging + ON CONFLICT with
  corrections), plus any projection the type needs.

Most types are a plain idempotent append into one table (:class:`AppendStore`). Validated
readings keep every version and maintain the current-version hourly consumption
(:mod:`sinks.validated`); charges and settlements also fill their priced segments; balance
movements also move each account's current balance.

Adding a stored type: declare a :class:`~sinks.tables.TableSpec` whose columns match the
migration, subclass :class:`AppendStore` with ``message_type``, ``spec`` and ``row``. See
CONTRIBUTING.md, "How to add a sink".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from schemas.messages import (
    Alert,
    BalanceChange,
    Charge,
    CommandResult,
    DeviceEvent,
    Message,
    RawFrame,
    Reading,
    ReadingBatch,
    Settlement,
    TopUp,
    readings_of,
)
from sinks.base import WriteResult
from sinks.tables import Column, TableAppender, TableSpec

__all__ = [
    "STORES",
    "AppendStore",
    "BalanceChangeStore",
    "ChargeStore",
    "Store",
    "StoreContext",
    "store_for",
]

Row = tuple[Any, ...]


@dataclass(frozen=True)
class StoreContext:
    """What stores may need besides the rows: the utility's zone and the fast-path switch."""

    timezone: str = "Asia/Shanghai"
    fast_path: bool = True

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


#: message schema name → store class
STORES: dict[str, type[Store]] = {}


class Store:
    """Base of every store; subclasses set ``message_type`` to register themselves."""

    message_type: ClassVar[type[Message] | None] = None
    #: other message types whose rows go to the same tables (one instance serves them all,
    #: so a batch's rows of both kinds are written together)
    also_types: ClassVar[tuple[type[Message], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.message_type is not None:
            for message_type in (cls.message_type, *cls.also_types):
                schema = message_type.SCHEMA
                if schema in STORES and STORES[schema] is not cls:
                    raise TypeError(f"two stores for '{schema}': {STORES[schema].__name__} "
                                    f"and {cls.__name__}")
                STORES[schema] = cls

    def __init__(self, context: StoreContext) -> None:
        self.context = context

    def tables(self) -> tuple[TableSpec, ...]:
        """Every table this store writes (for checks and documentation)."""
        raise NotImplementedError

    def prepare(self, message: Message) -> Any:
        """The rows of one message; raising rejects this record only."""
        raise NotImplementedError

    def write(self, conn: psycopg.Connection, prepared: Sequence[Any],
              source_topic: str, *, fast: bool = True) -> WriteResult:
        """Append the prepared rows of a batch inside the caller's transaction.

        ``fast=False`` turns the fast COPY path off (the retry after a
        :class:`~sinks.tables.FastPathMissError`).
        """
        raise NotImplementedError

    def setup(self, conn: psycopg.Connection) -> None:
        """Prepare a new connection (outside any transaction): the staging tables."""
        for value in vars(self).values():
            if isinstance(value, TableAppender):
                value.setup(conn)

    @staticmethod
    def _count(result: WriteResult, table: str, outcome: Any, *, primary: bool = True) -> None:
        """Add an append's outcome; duplicates and corrections count for the primary table
        only (one per record: a derived table repeats what its record already showed)."""
        result.rows[table] += outcome.inserted
        if primary:
            result.absorbed += outcome.absorbed
            result.corrections += outcome.corrections


def store_for(schema: str) -> type[Store] | None:
    """The store class of a message schema, or None when the sink does not store it."""
    return STORES.get(schema)


class AppendStore(Store):
    """One message → one row of one table, appended idempotently."""

    spec: ClassVar[TableSpec]

    def __init__(self, context: StoreContext) -> None:
        super().__init__(context)
        self.appender = TableAppender(self.spec, fast_path=context.fast_path)

    def tables(self) -> tuple[TableSpec, ...]:
        return (self.spec,)

    def row(self, message: Any) -> Row:
        raise NotImplementedError

    def prepare(self, message: Message) -> Row:
        return self.row(message)

    def write(self, conn: psycopg.Connection, prepared: Sequence[Any],
              source_topic: str, *, fast: bool = True) -> WriteResult:
        result = WriteResult()
        outcome = self.appender.append(conn, prepared, source_topic=source_topic, allow_fast=fast)
        self._count(result, self.spec.name, outcome)
        return result


def _cols(*pairs: str) -> tuple[Column, ...]:
    """``"name type"`` strings → columns (kept next to the row functions they must match)."""
    out = []
    for pair in pairs:
        name, _, pg_type = pair.partition(" ")
        out.append(Column(name, pg_type))
    return tuple(out)


# --------------------------------------------------------------------------- raw readings

RAW_READINGS = TableSpec(
    name="data.raw_readings",
    columns=_cols("meter_id text", "register text", "ts timestamptz", "value numeric",
                  "unit text", "kind text", "interval_s int4", "meter_clock timestamptz",
                  "received_at timestamptz", "source text", "device_id text", "fep text",
                  "protocol text", "status text[]", "frame_id text"),
    key=("meter_id", "register", "ts"),
    compare=("value", "unit"),
    # A second, different value for a raw key goes to the table the foundation made for it.
    conflict_sql=("INSERT INTO data.raw_reading_conflicts (meter_id, register, ts, value, "
                  "stored_value, unit, received_at, source, frame_id) SELECT meter_id, "
                  "register, ts, value, stored_value, unit, received_at, source, frame_id "
                  "FROM diff ON CONFLICT DO NOTHING"),
)


class RawReadingStore(AppendStore):
    """Raw readings, one at a time or a meter's batch from one frame (``readings_of``)."""

    message_type = Reading
    also_types = (ReadingBatch,)
    spec = RAW_READINGS

    def row(self, m: Reading) -> Row:
        return (m.meter_id, m.register, m.ts, m.value, m.unit, m.kind, m.interval_s,
                m.meter_clock, m.received_at, m.source, m.device_id, m.fep, m.protocol,
                list(m.status), m.frame_id)

    def prepare(self, message: Message) -> list[Row]:  # type: ignore[override]
        assert isinstance(message, Reading | ReadingBatch)
        return [self.row(m) for m in readings_of(message)]

    def write(self, conn: psycopg.Connection, prepared: Sequence[Any],
              source_topic: str, *, fast: bool = True) -> WriteResult:
        rows = [row for rows in prepared for row in rows]
        return super().write(conn, rows, source_topic, fast=fast)


# --------------------------------------------------------------------------- events, frames

DEVICE_EVENTS = TableSpec(
    name="data.device_events",
    columns=_cols("event_id text", "device_id text", "kind text", "ts timestamptz",
                  "meter_id text", "fep text", "severity text", "attributes jsonb"),
    key=("event_id", "ts"),
    compare=("device_id", "kind", "meter_id", "severity", "attributes"),
)


class DeviceEventStore(AppendStore):
    message_type = DeviceEvent
    spec = DEVICE_EVENTS

    def row(self, m: DeviceEvent) -> Row:
        return (m.event_id, m.device_id, m.kind, m.ts, m.meter_id, m.fep, m.severity,
                m.attributes)


RAW_FRAMES = TableSpec(
    name="data.raw_frames",
    columns=_cols("frame_id text", "device_id text", "fep text", "service_point text",
                  "peer text", "protocol text", "direction text", "received_at timestamptz",
                  "data bytea", "valid bool", "error text"),
    key=("frame_id", "received_at"),
    compare=("device_id", "direction", "data"),
)


class RawFrameStore(AppendStore):
    message_type = RawFrame
    spec = RAW_FRAMES

    def row(self, m: RawFrame) -> Row:
        return (m.frame_id, m.device_id, m.fep, m.service_point, m.peer, m.protocol,
                m.direction, m.received_at, m.data, m.valid, m.error)


# --------------------------------------------------------------------------- operations

ALERTS = TableSpec(
    name="ops.alerts",
    columns=_cols("alert_id text", "state text", "object_type text", "object_id text",
                  "severity text", "code text", "reason text", "ts timestamptz",
                  "source text", "attributes jsonb"),
    key=("alert_id", "state", "ts"),
    compare=("object_type", "object_id", "severity", "code", "reason"),
)


class AlertStore(AppendStore):
    message_type = Alert
    spec = ALERTS

    def row(self, m: Alert) -> Row:
        return (m.alert_id, m.state, m.object_type, m.object_id, m.severity, m.code, m.reason,
                m.ts, m.source, m.attributes)


COMMAND_RESULTS = TableSpec(
    name="ops.command_results",
    columns=_cols("command_id text", "device_id text", "status text", "attempt int4",
                  "ts timestamptz", "fep text", "detail text", "error_code text",
                  "reply jsonb"),
    key=("command_id", "status", "attempt", "ts"),
    compare=("device_id", "detail", "error_code", "reply"),
)


class CommandResultStore(AppendStore):
    message_type = CommandResult
    spec = COMMAND_RESULTS

    def row(self, m: CommandResult) -> Row:
        return (m.command_id, m.device_id, m.status, m.attempt, m.ts, m.fep, m.detail,
                m.error_code, m.reply)


# --------------------------------------------------------------------------- billing

TOPUPS = TableSpec(
    name="billing.topups",
    columns=_cols("top_up_id text", "account_id text", "amount numeric", "ts timestamptz",
                  "kind text", "channel text", "currency text", "operator text", "reason text",
                  "volume numeric"),
    key=("top_up_id", "ts"),
    compare=("account_id", "amount", "kind", "currency", "volume"),
)


class TopUpStore(AppendStore):
    message_type = TopUp
    spec = TOPUPS

    def row(self, m: TopUp) -> Row:
        return (m.top_up_id, m.account_id, m.amount, m.ts, m.kind, m.channel, m.currency,
                m.operator, m.reason, m.volume)


CHARGES = TableSpec(
    name="billing.charges",
    columns=_cols("charge_id text", "account_id text", "meter_id text", "kind text",
                  "period_start timestamptz", "period_end timestamptz", "volume numeric",
                  "amount numeric", "currency text", "reading_ts timestamptz",
                  "reading_version int4", "register text", "provisional bool",
                  "tariff_id text", "cycle_id text", "cycle_volume_after numeric",
                  "corrects text", "created_at timestamptz"),
    key=("charge_id", "period_start"),
    compare=("account_id", "meter_id", "kind", "period_end", "volume", "amount", "currency",
             "provisional", "tariff_id", "corrects"),
)

CHARGE_SEGMENTS = TableSpec(
    name="billing.charge_segments",
    columns=_cols("charge_id text", "segment_no int4", "account_id text", "meter_id text",
                  "kind text", "accounted_at timestamptz", "tier int4", "component text",
                  "price_period text", "period text", "volume numeric", "unit_price numeric",
                  "amount numeric", "tariff_id text", "tariff_version int4", "provisional bool"),
    key=("charge_id", "segment_no", "accounted_at"),
    compare=("tier", "component", "period", "volume", "unit_price", "amount", "tariff_id",
             "tariff_version"),
)

#: A charge is settled on the local day that holds the last instant of its period.
LAST_INSTANT = timedelta(microseconds=1)


def price_period(period: str) -> str:
    """The time-of-use period name of a segment; '' for a real-time interval (an ISO time)."""
    if not period or not period[:1].isdigit():
        return period
    try:
        datetime.fromisoformat(period)
    except ValueError:
        return period
    return ""


@dataclass(frozen=True)
class _PreparedCharge:
    charge: Row
    segments: list[Row]


class ChargeStore(Store):
    """A charge and its priced segments (the source of the tier aggregates)."""

    message_type = Charge

    def __init__(self, context: StoreContext) -> None:
        super().__init__(context)
        self.charges = TableAppender(CHARGES, fast_path=context.fast_path)
        self.segments = TableAppender(CHARGE_SEGMENTS, fast_path=context.fast_path)

    def tables(self) -> tuple[TableSpec, ...]:
        return (CHARGES, CHARGE_SEGMENTS)

    def prepare(self, message: Message) -> _PreparedCharge:
        m = message
        assert isinstance(m, Charge)
        charge = (m.charge_id, m.account_id, m.meter_id, m.kind, m.period_start, m.period_end,
                  m.volume, m.amount, m.currency, m.reading_ts, m.reading_version, m.register,
                  m.provisional, m.tariff_id, m.cycle_id, m.cycle_volume_after, m.corrects,
                  m.created_at)
        accounted_at = m.period_end - LAST_INSTANT
        segments = [(m.charge_id, n, m.account_id, m.meter_id, m.kind, accounted_at, s.tier,
                     s.component, price_period(s.period), s.period, s.volume, s.unit_price,
                     s.amount, s.tariff_id or m.tariff_id, s.tariff_version, m.provisional)
                    for n, s in enumerate(m.segments, start=1)]
        return _PreparedCharge(charge, segments)

    def write(self, conn: psycopg.Connection, prepared: Sequence[Any],
              source_topic: str, *, fast: bool = True) -> WriteResult:
        result = WriteResult()
        items: Sequence[_PreparedCharge] = prepared
        self._count(result, CHARGES.name, self.charges.append(
            conn, [p.charge for p in items], source_topic=source_topic, allow_fast=fast))
        self._count(result, CHARGE_SEGMENTS.name, self.segments.append(
            conn, [s for p in items for s in p.segments], source_topic=source_topic,
            allow_fast=fast), primary=False)
        return result


SETTLEMENTS = TableSpec(
    name="billing.settlements",
    columns=_cols("settlement_id text", "revision int4", "account_id text", "period text",
                  "period_id text", "period_start timestamptz", "period_end timestamptz",
                  "volume numeric", "amount numeric", "currency text",
                  "estimated_volume numeric", "provisional bool", "charges int4",
                  "meters text[]", "tariff_id text", "cycle_id text",
                  "cycle_volume_after numeric", "balance_after numeric",
                  "created_at timestamptz"),
    key=("settlement_id", "revision", "period_start"),
    compare=("account_id", "period", "period_end", "volume", "amount", "currency",
             "estimated_volume", "provisional"),
)

SETTLEMENT_SEGMENTS = TableSpec(
    name="billing.settlement_segments",
    columns=_cols("settlement_id text", "revision int4", "segment_no int4", "account_id text",
                  "period text", "period_start timestamptz", "tier int4", "component text",
                  "price_period text", "volume numeric", "unit_price numeric",
                  "amount numeric", "tariff_id text", "tariff_version int4"),
    key=("settlement_id", "revision", "segment_no", "period_start"),
    compare=(),
)


@dataclass(frozen=True)
class _PreparedSettlement:
    settlement: Row
    segments: list[Row]


class SettlementStore(Store):
    """Every revision of a daily, monthly or yearly settlement, with its tier breakdown."""

    message_type = Settlement

    def __init__(self, context: StoreContext) -> None:
        super().__init__(context)
        self.settlements = TableAppender(SETTLEMENTS, fast_path=context.fast_path)
        self.segments = TableAppender(SETTLEMENT_SEGMENTS, fast_path=context.fast_path)

    def tables(self) -> tuple[TableSpec, ...]:
        return (SETTLEMENTS, SETTLEMENT_SEGMENTS)

    def prepare(self, message: Message) -> _PreparedSettlement:
        m = message
        assert isinstance(m, Settlement)
        settlement = (m.settlement_id, m.revision, m.account_id, m.period, m.period_id,
                      m.period_start, m.period_end, m.volume, m.amount, m.currency,
                      m.estimated_volume, m.provisional, m.charges, list(m.meters),
                      m.tariff_id, m.cycle_id, m.cycle_volume_after, m.balance_after,
                      m.created_at)
        segments = [(m.settlement_id, m.revision, n, m.account_id, m.period, m.period_start,
                     s.tier, s.component, price_period(s.period), s.volume, s.unit_price,
                     s.amount, s.tariff_id or m.tariff_id, s.tariff_version)
                    for n, s in enumerate(m.segments, start=1)]
        return _PreparedSettlement(settlement, segments)

    def write(self, conn: psycopg.Connection, prepared: Sequence[Any],
              source_topic: str, *, fast: bool = True) -> WriteResult:
        result = WriteResult()
        items: Sequence[_PreparedSettlement] = prepared
        self._count(result, SETTLEMENTS.name, self.settlements.append(
            conn, [p.settlement for p in items], source_topic=source_topic, allow_fast=fast))
        self._count(result, SETTLEMENT_SEGMENTS.name, self.segments.append(
            conn, [s for p in items for s in p.segments], source_topic=source_topic,
            allow_fast=fast), primary=False)
        return result


BALANCE_CHANGES = TableSpec(
    name="billing.balance_changes",
    columns=_cols("entry_id text", "account_id text", "ts timestamptz", "kind text",
                  "amount numeric", "balance_after numeric", "currency text", "reference text",
                  "alarm_state text", "volume numeric", "volume_after numeric"),
    key=("entry_id", "ts"),
    compare=("account_id", "kind", "amount", "balance_after", "currency", "volume",
             "volume_after"),
)


class BalanceChangeStore(Store):
    """A balance movement, and the account's current balance when it is the newest one."""

    message_type = BalanceChange

    def __init__(self, context: StoreContext) -> None:
        super().__init__(context)
        # Always staged: the projection below reads the staged rows.
        self.changes = TableAppender(BALANCE_CHANGES, fast_path=False)

    def tables(self) -> tuple[TableSpec, ...]:
        return (BALANCE_CHANGES,)

    def prepare(self, message: Message) -> Row:
        m = message
        assert isinstance(m, BalanceChange)
        return (m.entry_id, m.account_id, m.ts, m.kind, m.amount, m.balance_after, m.currency,
                m.reference, m.alarm_state, m.volume, m.volume_after)

    def write(self, conn: psycopg.Connection, prepared: Sequence[Any],
              source_topic: str, *, fast: bool = True) -> WriteResult:
        result = WriteResult()
        if not prepared:
            return result
        self.changes.stage(conn, prepared)  # always staged: the projection reads the stage
        self._count(result, BALANCE_CHANGES.name, self.changes.append(
            conn, prepared, source_topic=source_topic, staged_already=True))
        # The newest movement per account wins; an older one arriving late never moves the
        # balance back (ties broken by entry id, so replays are deterministic).
        cur = conn.execute(sql.SQL(
            "INSERT INTO billing.balances AS b (account_id, balance, currency, alarm_state, "
            "volume_balance, as_of, entry_id) SELECT DISTINCT ON (account_id) account_id, "
            "balance_after, currency, alarm_state, volume_after, ts, entry_id FROM {} "
            "ORDER BY account_id, ts DESC, entry_id DESC "
            "ON CONFLICT (account_id) DO UPDATE SET balance = excluded.balance, "
            "currency = excluded.currency, alarm_state = excluded.alarm_state, "
            "volume_balance = excluded.volume_balance, "
            "as_of = excluded.as_of, entry_id = excluded.entry_id, updated_at = now() "
            "WHERE (b.as_of, b.entry_id) < (excluded.as_of, excluded.entry_id)").format(
                sql.Identifier(BALANCE_CHANGES.staging_name)))
        result.rows["billing.balances"] += max(cur.rowcount, 0)
        return result


def _register_validated() -> None:
    # Imported for its registration side effect; kept in its own module for size.
    import sinks.validated  # noqa: F401


_register_validated()
