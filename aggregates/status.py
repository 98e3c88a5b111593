"""How fresh the aggregates are: watermarks, pending invalidations, refresh jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from aggregates.definitions import HIERARCHIES, LEVELS
from aggregates.refresh import backend, bucket_zone

__all__ = ["AggregateStatus", "RelationStatus", "aggregate_status"]


@dataclass(frozen=True)
class RelationStatus:
    relation: str
    watermark: datetime | None
    last_refresh_at: datetime | None
    last_duration_ms: int | None
    detail: str = ""


@dataclass(frozen=True)
class AggregateStatus:
    backend: str
    timezone: str
    pending_hours: dict[str, int]
    relations: list[RelationStatus]


def aggregate_status(conn: psycopg.Connection) -> AggregateStatus:
    """Freshness of every aggregate relation on either backend."""
    kind = backend(conn)
    zone = bucket_zone(conn)
    relations: list[RelationStatus] = []
    pending: dict[str, int] = {}
    names = [h.relation(level) for h in HIERARCHIES for level in LEVELS]
    if kind == "timescale":
        marks: dict[str, datetime | None] = dict(conn.execute(
            "SELECT name, CASE WHEN mark > '0001-01-02' THEN mark END FROM ("
            "SELECT format('%I.%I', user_view_schema, user_view_name) AS name, "
            "_timescaledb_functions.to_timestamp("
            "_timescaledb_functions.cagg_watermark(mat_hypertable_id)) AS mark "
            "FROM _timescaledb_catalog.continuous_agg) w").fetchall())
        jobs = conn.execute(
            "SELECT format('%I.%I', c.view_schema, c.view_name), s.last_successful_finish, "
            "(extract(epoch FROM s.last_run_duration) * 1000)::int, s.last_run_status, "
            "s.next_start FROM timescaledb_information.continuous_aggregates c "
            "LEFT JOIN timescaledb_information.jobs j ON j.hypertable_schema = c.view_schema "
            "AND j.hypertable_name = c.view_name AND j.proc_name = "
            "'policy_refresh_continuous_aggregate' "
            "LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id").fetchall()
        rows = [(r[0], marks.get(r[0]), *r[1:]) for r in jobs]
        found = {r[0]: r for r in rows}
        for name in names:
            r = found.get(name)
            if r is None:
                relations.append(RelationStatus(name, None, None, None, "missing"))
                continue
            detail = f"policy {r[4] or 'not run yet'}"
            if r[5] is not None:
                detail += f", next run {r[5]:%Y-%m-%d %H:%M:%S %Z}"
            relations.append(RelationStatus(name, r[1], r[2], r[3], detail))
    else:
        state = {r[0]: r for r in conn.execute(
            "SELECT relation, watermark, last_refresh_at, last_duration_ms, last_buckets "
            "FROM agg.refresh_state").fetchall()}
        for name in names:
            r = state.get(name)
            if r is None:
                relations.append(RelationStatus(name, None, None, None, "never refreshed"))
            else:
                relations.append(RelationStatus(name, r[1], r[2], r[3],
                                                f"{r[4]} row(s) last time"))
        for source, hours in conn.execute(
                "SELECT source, count(DISTINCT hour) FROM agg.invalidations GROUP BY 1"):
            pending[str(source)] = int(hours)
    return AggregateStatus(kind, zone, pending, relations)
