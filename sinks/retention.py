"""Retention: how long each kind of stored data is kept (``unimeter storage policies``).

Strategy: one table of targets — relation, time column, the retention setting that governs
it — applied per backend:

* **TimescaleDB**: a retention policy per hypertable or continuous aggregate
  (``add_retention_policy``; 0 days removes it), so whole chunks are dropped by the
  background scheduler;
* **plain PostgreSQL**: rows older than the cut-off are deleted now, in batches of 50,000
  rows, one transaction each (run it from the scheduler, e.g. nightly). The deletes carry
  ``unimeter.retention = on`` so the aggregates' invalidation triggers ignore them: the
  aggregates keep the history the source no longer has.

Data still inside the late-data window (plus the compression margin) is never a retention
target: a setting shorter than that is refused, not silently applied. Daily and monthly
aggregates, charges, settlements and balances are kept for ever (billing records).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from schemas.settings import DatabaseSettings, UtilitySettings
from sinks.errors import SinkError
from sinks.settings import RetentionSettings

__all__ = ["TARGETS", "RetentionAction", "RetentionTarget", "apply_retention"]

#: Days beyond the late-data window that stay untouched (the compression margin).
MARGIN_DAYS = 3
_DELETE_BATCH = 50_000


@dataclass(frozen=True)
class RetentionTarget:
    relation: str
    time_column: str
    setting: str
    continuous_aggregate: bool = False


TARGETS: tuple[RetentionTarget, ...] = (
    RetentionTarget("data.raw_readings", "ts", "raw_readings_days"),
    RetentionTarget("data.raw_reading_conflicts", "ts", "raw_readings_days"),
    RetentionTarget("data.validated_readings", "ts", "validated_readings_days"),
    RetentionTarget("data.reading_edits", "ts", "validated_readings_days"),
    RetentionTarget("data.consumption_intervals", "interval_start", "validated_readings_days"),
    RetentionTarget("data.raw_frames", "received_at", "raw_frames_days"),
    RetentionTarget("data.device_events", "ts", "device_events_days"),
    RetentionTarget("ops.alerts", "ts", "ops_days"),
    RetentionTarget("ops.command_results", "ts", "ops_days"),
    RetentionTarget("agg.meter_consumption_hourly", "bucket", "hourly_aggregates_days", True),
    RetentionTarget("agg.dimension_consumption_hourly", "bucket", "hourly_aggregates_days",
                    True),
    RetentionTarget("agg.tier_consumption_hourly", "bucket", "hourly_aggregates_days", True),
)


@dataclass(frozen=True)
class RetentionAction:
    relation: str
    days: int
    action: str


def apply_retention(database: DatabaseSettings, retention: RetentionSettings,
                    utility: UtilitySettings, *, dry_run: bool = False,
                    progress: Callable[[str], None] = lambda _m: None
                    ) -> list[RetentionAction]:
    """Apply the retention settings to every target; returns what was (or would be) done."""
    floor = utility.late_data_days + MARGIN_DAYS
    for target in TARGETS:
        days = getattr(retention, target.setting)
        if 0 < days <= floor:
            raise SinkError(
                f"retention.{target.setting} = {days} days would drop data still inside the "
                f"late-data window ({utility.late_data_days} days + {MARGIN_DAYS})",
                where=f"UNIMETER_RETENTION_{target.setting.upper()}",
                hint=f"keep at least {floor + 1} days, or 0 to keep for ever")
    actions: list[RetentionAction] = []
    try:
        conn = psycopg.connect(database.conninfo("owner"), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise SinkError(f"cannot connect to the database: {str(exc).strip()}",
                        hint="check `unimeter services status` or UNIMETER_DATABASE_URL"
                        ) from None
    with conn:
        row = conn.execute("SELECT value FROM unimeter_meta.settings WHERE key = 'backend'"
                           ).fetchone()
        timescale = row is not None and row[0] == "timescale"
        for target in TARGETS:
            days = int(getattr(retention, target.setting))
            if timescale:
                action = _policy(conn, target, days, dry_run)
            else:
                action = _delete(conn, target, days, dry_run, progress)
            progress(f"{target.relation}: {action}")
            actions.append(RetentionAction(target.relation, days, action))
    return actions


def _policy(conn: psycopg.Connection, target: RetentionTarget, days: int,
            dry_run: bool) -> str:
    current = conn.execute(
        "SELECT config ->> 'drop_after' FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_retention' AND format('%%I.%%I', hypertable_schema, "
        "hypertable_name) = %s", (target.relation,)).fetchone()
    wanted = f"{days} days" if days else None
    if (current[0] if current else None) == wanted:
        return f"unchanged ({wanted or 'kept for ever'})"
    if dry_run:
        return f"would set {wanted or 'no retention'} (now {current[0] if current else 'none'})"
    conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (target.relation,))
    if days:
        conn.execute("SELECT add_retention_policy(%s, drop_after => %s::interval)",
                     (target.relation, wanted))
        return f"policy: drop chunks older than {wanted}"
    return "policy removed: kept for ever"


def _delete(conn: psycopg.Connection, target: RetentionTarget, days: int, dry_run: bool,
            progress: Callable[[str], None]) -> str:
    if not days:
        return "kept for ever"
    cutoff = datetime.now(UTC) - timedelta(days=days)
    schema, _, table = target.relation.partition(".")
    relation, column = sql.Identifier(schema, table), sql.Identifier(target.time_column)
    if dry_run:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} < %s").format(
            relation, column), (cutoff,)).fetchone()
        return f"would delete {row[0] if row else 0:,} row(s) before {cutoff:%Y-%m-%d}"
    deleted = 0
    statement = sql.SQL("DELETE FROM {rel} WHERE ctid IN (SELECT ctid FROM {rel} WHERE {col} "
                        "< %s LIMIT {n})").format(rel=relation, col=column,
                                                  n=sql.Literal(_DELETE_BATCH))
    while True:
        with conn.transaction():
            conn.execute("SET LOCAL unimeter.retention = 'on'")
            count = conn.execute(statement, (cutoff,)).rowcount
        deleted += max(count, 0)
        if count < _DELETE_BATCH:
            break
        progress(f"{target.relation}: {deleted:,} row(s) deleted so far")
    return f"deleted {deleted:,} row(s) before {cutoff:%Y-%m-%d}"
