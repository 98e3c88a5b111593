"""Bring the hourly, daily and monthly aggregates up to date, on either backend.

Strategy: one entry point, :func:`refresh_aggregates`, that the CLI (``unimeter aggregates
refresh``) and the scheduler call. It reads the backend recorded at migration time:

* **TimescaleDB** — the relations are continuous aggregates with their own refresh policies;
  this function runs ``refresh_continuous_aggregate`` level by level (hourly, then daily,
  then monthly: a level only sees what the level below has materialised), with an explicit
  window widened to whole local days and months, or over everything pending when no window
  is given.
* **plain PostgreSQL** — the relations are tables. Triggers on the source tables log every UTC
  hour a statement touched (``agg.invalidations``). In one transaction, under an advisory
  lock, the refresher takes the logged hours of each source, recomputes exactly those hourly
  buckets from the source rows, then the local days containing them from the hourly level,
  then the months containing those days from the daily level (DELETE the buckets, INSERT …
  SELECT … GROUP BY), and records each relation's watermark (the end of its newest
  materialised bucket) in ``agg.refresh_state``. Hours logged while it runs stay in the log for
  the next run, so nothing is lost to a race with the sink.

The SQL of the plain refresher is generated from :mod:`aggregates.definitions`, the same
description the TimescaleDB migration was written from; the parity test holds them together.
The refresh acts as the owner role (TimescaleDB refreshes a continuous aggregate only for
its owner).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from aggregates.definitions import HIERARCHIES, LEVEL_UNIT, LEVELS, Hierarchy
from aggregates.errors import AggregateError, AggregatesNotInstalledError
from schemas.settings import DatabaseSettings

__all__ = [
    "LevelRefresh",
    "RefreshReport",
    "backend",
    "bucket_zone",
    "refresh_aggregates",
    "refresh_with",
]

_LOCK_ID = 0x756E6167  # "unag"
#: Memory for the GROUP BY of one refresh range (one day of 100,000 hourly meters fits).
_REFRESH_WORK_MEM = "256MB"
_HOUR = timedelta(hours=1)

Progress = Callable[[str], None]


@dataclass
class LevelRefresh:
    """What one relation's refresh did: how many buckets (plain) and how long it took."""

    relation: str
    ranges: int
    buckets: int | None
    duration_ms: int


@dataclass
class RefreshReport:
    backend: str
    start: datetime | None
    end: datetime | None
    levels: list[LevelRefresh] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def buckets(self) -> int:
        return sum(level.buckets or 0 for level in self.levels)


def backend(conn: psycopg.Connection) -> str:
    """'timescale' or 'postgres', as recorded when the database was migrated."""
    row = conn.execute("SELECT to_regclass('agg.bucket_zone') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise AggregatesNotInstalledError(
            "the aggregate relations do not exist in this database",
            hint="run `unimeter migrate` first")
    value = conn.execute(
        "SELECT value FROM unimeter_meta.settings WHERE key = 'backend'").fetchone()
    return str(value[0]) if value else "postgres"


def bucket_zone(conn: psycopg.Connection) -> str:
    """The IANA zone of daily and monthly buckets, fixed when the aggregates were created."""
    row = conn.execute("SELECT timezone FROM agg.bucket_zone").fetchone()
    if row is None:
        raise AggregatesNotInstalledError("agg.bucket_zone is empty",
                                          hint="re-run `unimeter migrate`")
    return str(row[0])


def refresh_aggregates(database: DatabaseSettings, *, start: datetime | None = None,
                       end: datetime | None = None, force: bool = False,
                       progress: Progress = lambda _m: None) -> RefreshReport:
    """Refresh every aggregate level in order; the scheduler's and the CLI's entry point.

    Without a window, everything pending is folded in (plain: every logged hour; TimescaleDB:
    every invalidated region). With ``start``/``end`` (aware datetimes) only that window is
    refreshed, widened to whole hours, local days and months; ``force`` recomputes the whole
    window even where nothing was logged (after a manual repair of source rows).
    """
    _check_window(start, end)
    try:
        conn = psycopg.connect(database.conninfo("owner"), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise AggregateError(f"cannot connect to the database: {str(exc).strip()}",
                             hint="check `unimeter services status` or UNIMETER_DATABASE_URL"
                             ) from None
    with conn:
        return refresh_with(conn, start=start, end=end, force=force, progress=progress)


def refresh_with(conn: psycopg.Connection, *, start: datetime | None = None,
                 end: datetime | None = None, force: bool = False,
                 progress: Progress = lambda _m: None) -> RefreshReport:
    """:func:`refresh_aggregates` on an open connection (autocommit, acting as the owner)."""
    _check_window(start, end)
    if not conn.autocommit:
        raise AggregateError("refresh_with needs an autocommit connection",
                             hint="connect with autocommit=True (TimescaleDB refreshes run "
                                  "outside a transaction block)")
    kind = backend(conn)
    started = time.monotonic()
    report = RefreshReport(backend=kind, start=start, end=end)
    if kind == "timescale":
        _refresh_timescale(conn, report, start, end, force, progress)
    else:
        _refresh_plain(conn, report, start, end, force, progress)
    report.duration_s = time.monotonic() - started
    return report


def _check_window(start: datetime | None, end: datetime | None) -> None:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise AggregateError(f"refresh window {name} {value} has no time zone",
                                 hint="pass an aware datetime (UTC or the utility's zone)")
    if start is not None and end is not None and end <= start:
        raise AggregateError(f"refresh window is empty: end {end} is not after start {start}")


# --------------------------------------------------------------------------- TimescaleDB


def _refresh_timescale(conn: psycopg.Connection, report: RefreshReport,
                       start: datetime | None, end: datetime | None, force: bool,
                       progress: Progress) -> None:
    zone = bucket_zone(conn)
    for level in LEVELS:
        lo, hi = _widen(conn, start, end, level, zone)
        for hierarchy in HIERARCHIES:
            relation = hierarchy.relation(level)
            progress(f"refreshing {relation}")
            began = time.monotonic()
            params: list[object] = [relation, lo, hi]
            call = "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz"
            if force:
                call += ", force => true"
            _while_busy(functools.partial(conn.execute, call + ")", params), relation,
                        progress)
            report.levels.append(LevelRefresh(relation, 1, None,
                                              int((time.monotonic() - began) * 1000)))


#: Waits between attempts while TimescaleDB refreshes the same aggregate (its own refresh
#: policy, or the scheduler): about a minute in all.
BUSY_WAITS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def _while_busy(refresh: Callable[[], object], relation: str, progress: Progress,
                waits: Sequence[float] = BUSY_WAITS_S) -> None:
    """Run ``refresh``; while another refresh of the same continuous aggregate is in
    progress (TimescaleDB refuses a second one: SQLSTATE 55P03), wait and try again —
    the other one materialises the same rows, and ours then folds in what it left."""
    for wait in (*waits, None):
        try:
            refresh()
            return
        except psycopg.errors.LockNotAvailable as exc:
            if wait is None:
                raise AggregateError(
                    f"{relation} is being refreshed by another session and still was after "
                    f"{sum(waits):.0f} s: {str(exc).strip()}", where=relation,
                    hint="see timescaledb_information.jobs for a refresh job that hangs; "
                         "run `unimeter aggregates refresh` again later") from None
            progress(f"{relation}: another refresh is in progress; again in {wait:g} s")
            time.sleep(wait)


def _widen(conn: psycopg.Connection, start: datetime | None, end: datetime | None,
           level: str, zone: str) -> tuple[datetime | None, datetime | None]:
    """The window widened to whole buckets of ``level`` (a refresh only fills whole buckets)."""
    unit = LEVEL_UNIT[level]
    tz = "UTC" if level == "hourly" else zone
    lo = hi = None
    if start is not None:
        lo = _scalar(conn, "SELECT date_trunc(%s, %s::timestamptz, %s)", (unit, start, tz))
    if end is not None:
        trunc = _scalar(conn, "SELECT date_trunc(%s, %s::timestamptz, %s)", (unit, end, tz))
        hi = end if trunc == end else _next_bucket(conn, trunc, level, zone)
    return lo, hi


def _scalar(conn: psycopg.Connection, query: str, params: Sequence[object]) -> datetime:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _next_bucket(conn: psycopg.Connection, bucket_start: datetime, level: str,
                 zone: str) -> datetime:
    """The start of the bucket after ``bucket_start`` (days are 23–25 h long, months vary)."""
    if level == "hourly":
        return bucket_start + _HOUR
    # Jump past the end of the bucket in absolute time and truncate in the zone: a local day
    # is at most 25 h long, a month at most 31 days and an hour.
    jump = timedelta(hours=26) if level == "daily" else timedelta(days=32)
    return _scalar(conn, "SELECT date_trunc(%s, %s::timestamptz, %s)",
                   (LEVEL_UNIT[level], bucket_start + jump, zone))


# --------------------------------------------------------------------------- plain PostgreSQL


def _refresh_plain(conn: psycopg.Connection, report: RefreshReport, start: datetime | None,
                   end: datetime | None, force: bool, progress: Progress) -> None:
    zone = bucket_zone(conn)
    sources: dict[str, list[Hierarchy]] = {}
    for hierarchy in HIERARCHIES:
        sources.setdefault(hierarchy.invalidation_source, []).append(hierarchy)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        # Interval arithmetic below must be absolute, whatever the session's zone; and a
        # day of a large fleet should aggregate in memory, not in spill files.
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        conn.execute(f"SET LOCAL work_mem = '{_REFRESH_WORK_MEM}'")
        for source, hierarchies in sources.items():
            hours = _take_invalidated_hours(conn, source, start, end)
            if force and start is not None and end is not None:
                hours |= set(_hours_between(conn, start, end))
            if not hours:
                progress(f"{source}: nothing to refresh")
                continue
            hour_ranges = _merge([(h, h + _HOUR) for h in sorted(hours)])
            day_ranges = _bucket_ranges(conn, hours, "daily", zone)
            month_ranges = _bucket_ranges(conn, hours, "monthly", zone)
            progress(f"{source}: {len(hours)} hour(s) in {len(hour_ranges)} range(s), "
                     f"{len(day_ranges)} day range(s), {len(month_ranges)} month range(s)")
            for level, ranges in (("hourly", hour_ranges), ("daily", day_ranges),
                                  ("monthly", month_ranges)):
                for hierarchy in hierarchies:
                    report.levels.append(
                        _recompute(conn, hierarchy, level, ranges, zone, progress))


def _take_invalidated_hours(conn: psycopg.Connection, source: str, start: datetime | None,
                            end: datetime | None) -> set[datetime]:
    query = "DELETE FROM agg.invalidations WHERE source = %s"
    params: list[object] = [source]
    if start is not None:
        query += " AND hour >= date_trunc('hour', %s::timestamptz, 'UTC')"
        params.append(start)
    if end is not None:
        query += " AND hour < %s"
        params.append(end)
    rows = conn.execute(query + " RETURNING hour", params).fetchall()
    return {row[0] for row in rows}


def _hours_between(conn: psycopg.Connection, start: datetime, end: datetime) -> list[datetime]:
    rows = conn.execute(
        "SELECT generate_series(date_trunc('hour', %s::timestamptz, 'UTC'), "
        "%s::timestamptz - interval '1 microsecond', interval '1 hour')", (start, end)
    ).fetchall()
    return [row[0] for row in rows]


def _bucket_ranges(conn: psycopg.Connection, instants: Iterable[datetime], level: str,
                   zone: str) -> list[tuple[datetime, datetime]]:
    """Merged [start, end) ranges of the ``level`` buckets (in ``zone``) containing instants."""
    values = sorted(set(instants))
    if not values:
        return []
    unit = LEVEL_UNIT[level]
    rows = conn.execute(
        "SELECT DISTINCT date_trunc(%s, t, %s) FROM unnest(%s::timestamptz[]) t ORDER BY 1",
        (unit, zone, values)).fetchall()
    return _merge([(row[0], _next_bucket(conn, row[0], level, zone)) for row in rows])


def _merge(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Sorted, adjacent or overlapping [lo, hi) ranges merged into as few as possible."""
    out: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _recompute(conn: psycopg.Connection, hierarchy: Hierarchy, level: str,
               ranges: list[tuple[datetime, datetime]], zone: str,
               progress: Progress) -> LevelRefresh:
    relation = hierarchy.relation(level)
    began = time.monotonic()
    delete, insert = _statements(hierarchy, level)
    buckets = 0
    for lo, hi in ranges:
        params = {"lo": lo, "hi": hi, "zone": zone}
        conn.execute(delete, params)
        cur = conn.execute(insert, params)
        buckets += max(cur.rowcount, 0)
    watermark = max((hi for _, hi in ranges), default=None)
    duration_ms = int((time.monotonic() - began) * 1000)
    conn.execute(
        "INSERT INTO agg.refresh_state AS s (relation, watermark, last_refresh_at, last_buckets,"
        " last_duration_ms) VALUES (%s, %s, now(), %s, %s) ON CONFLICT (relation) DO UPDATE SET"
        " watermark = greatest(s.watermark, excluded.watermark),"
        " last_refresh_at = excluded.last_refresh_at, last_buckets = excluded.last_buckets,"
        " last_duration_ms = excluded.last_duration_ms",
        (relation, watermark, buckets, duration_ms))
    progress(f"{relation}: {buckets} row(s) in {len(ranges)} range(s), {duration_ms} ms")
    return LevelRefresh(relation, len(ranges), buckets, duration_ms)


def _statements(hierarchy: Hierarchy, level: str) -> tuple[sql.Composed, sql.Composed]:
    """DELETE and INSERT … SELECT of one level over a [lo, hi) range of its buckets."""
    target = _qualified(hierarchy.relation(level))
    groups = sql.SQL(", ").join(sql.Identifier(g) for g in hierarchy.group_names)
    columns = sql.SQL(", ").join(sql.Identifier(name) for name, _ in hierarchy.columns())
    if level == "hourly":
        source = _qualified(hierarchy.source_table)
        time_column = sql.Identifier(hierarchy.source_time)
        # The session runs in UTC (SET LOCAL above): the two-argument form is the UTC hour.
        bucket = sql.SQL("date_trunc('hour', {})").format(time_column)
        measures = [sql.SQL(m.from_source) for m in hierarchy.measures]
    else:
        below = LEVELS[LEVELS.index(level) - 1]
        source = _qualified(hierarchy.relation(below))
        time_column = sql.Identifier("bucket")
        bucket = sql.SQL("date_trunc({}, bucket, %(zone)s)").format(
            sql.Literal(LEVEL_UNIT[level]))
        measures = [sql.SQL(m.from_level_below) for m in hierarchy.measures]
    select_list = sql.SQL(", ").join([bucket, groups, *measures])
    delete = sql.SQL("DELETE FROM {} WHERE bucket >= %(lo)s AND bucket < %(hi)s").format(target)
    insert = sql.SQL(
        "INSERT INTO {target} ({columns}) SELECT {select_list} FROM {source} "
        "WHERE {time} >= %(lo)s AND {time} < %(hi)s GROUP BY 1, {groups}"
    ).format(target=target, columns=columns, select_list=select_list, source=source,
             time=time_column, groups=groups)
    return delete, insert


def _qualified(name: str) -> sql.Identifier:
    schema, _, table = name.partition(".")
    return sql.Identifier(schema, table)
