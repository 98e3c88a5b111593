"""``unimeter vee revalidate``: re-validate stored raw readings and publish new versions.

Strategy: meters are taken in chunks. For each chunk the raw readings of the period (plus
``context_days`` before it, so the first values have anchors and history) are read from
``data.raw_readings``, the meters' attributes from ``ledger.meter_dimensions``, and the
current stored versions from ``data.validated_readings_current``. The batch engine
(:func:`vee.batch.run_batch`) validates them as the stream would with the whole history in
view; :func:`vee.batch.next_versions` keeps what changed, as the next version of each key,
never touching a manually edited or final value. They are produced to
``readings.validated`` (acks=all, waited for), where the sink stores them like any other
version — re-running the same revalidation publishes nothing new.

:func:`close_open_days` is the scheduled counterpart for meters that stopped reporting: the
stream judges a day's day rules (the spike check) once the day is over, i.e. when a value at
or after its end arrives, so the last day of a silent meter stays unjudged (a spike in it
stays validated) until the meter speaks again. The job finds those days in stored data once
they ended more than a grace period ago, and re-validates just them (their batch run ends
with :meth:`vee.engine.VeeEngine.close`, which judges the open day): only the values whose
verdict changes get a new version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from schemas import codec
from schemas.messages import Reading, ValidatedReading
from schemas.settings import DatabaseSettings, KafkaSettings
from vee.batch import StoredVersion, next_versions, run_batch
from vee.groups import RuleSet
from vee.model import MeterInfo

__all__ = ["ClosingReport", "RevalidationReport", "close_open_days", "load_meters",
           "open_days", "revalidate"]

_METER_COLUMNS = ("meter_id, status, medium, device_type, size, qmax, register_digits, "
                  "register_decimals, has_valve, account_id, customer_type, region, org_unit, "
                  "supply_node, tariff_id, vee_group, installed_at, removed_at, updated_at")


@dataclass
class RevalidationReport:
    meters: int = 0
    raw_readings: int = 0
    compared: int = 0
    new_versions: int = 0
    published: int = 0


def load_meters(conn: psycopg.Connection[Any], meter_ids: Sequence[str] | None = None
                ) -> dict[str, MeterInfo]:
    """Meters as VEE needs them, from the ledger's denormalised view."""
    from schemas.messages import LedgerMeter

    sql = f"SELECT {_METER_COLUMNS} FROM ledger.meter_dimensions"
    params: tuple[Any, ...] = ()
    if meter_ids is not None:
        sql += " WHERE meter_id = ANY(%s)"
        params = (list(meter_ids),)
    out = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(sql, params):
            status = row["status"] if row["status"] in ("in_stock", "installed", "active",
                                                         "removed") else "active"
            medium = row["medium"] if row["medium"] in ("gas", "water", "heat",
                                                         "electricity") else "gas"
            meter = LedgerMeter(
                meter_id=row["meter_id"], status=status, medium=medium,  # type: ignore[arg-type]
                updated_at=row["updated_at"], device_type=row["device_type"] or "",
                size=row["size"], qmax=row["qmax"],
                register_digits=row["register_digits"] or 5,
                register_decimals=row["register_decimals"] or 3,
                has_valve=bool(row["has_valve"]), account_id=row["account_id"],
                customer_type=row["customer_type"], region=row["region"],
                org_unit=row["org_unit"], supply_node=row["supply_node"],
                tariff_id=row["tariff_id"], vee_group=row["vee_group"],
                installed_at=row["installed_at"], removed_at=row["removed_at"])
            out[meter.meter_id] = MeterInfo.from_ledger(meter)
    return out


def _raw(conn: psycopg.Connection[Any], meter_ids: list[str], start: datetime,
         end: datetime) -> list[Reading]:
    sql = ("SELECT meter_id, register, ts, value, unit, kind, interval_s, meter_clock, "
           "received_at, source, device_id, fep, protocol, status, frame_id "
           "FROM data.raw_readings WHERE meter_id = ANY(%s) AND ts >= %s AND ts < %s "
           "ORDER BY meter_id, register, ts")
    out = []
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(sql, (meter_ids, start, end)):
            out.append(Reading(
                meter_id=row["meter_id"], register=row["register"], ts=row["ts"],
                value=Decimal(row["value"]), unit=row["unit"], kind=row["kind"],
                interval_s=row["interval_s"], meter_clock=row["meter_clock"],
                received_at=row["received_at"], source=row["source"] or "",
                device_id=row["device_id"] or "", fep=row["fep"] or "",
                protocol=row["protocol"] or "", status=tuple(row["status"] or ()),
                frame_id=row["frame_id"]))
    return out


def _stored(conn: psycopg.Connection[Any], meter_ids: list[str], start: datetime,
            end: datetime) -> dict[tuple[str, str, datetime], StoredVersion]:
    sql = ("SELECT meter_id, register, ts, version, value, quality, method, flags, consumption, "
           "interval_start FROM data.validated_readings_current "
           "WHERE meter_id = ANY(%s) AND ts >= %s AND ts < %s")
    out = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(sql, (meter_ids, start, end)):
            out[(row["meter_id"], row["register"], row["ts"])] = StoredVersion(
                version=row["version"], value=row["value"], quality=row["quality"],
                method=row["method"], flags=tuple(row["flags"] or ()),
                consumption=row["consumption"], interval_start=row["interval_start"])
    return out


async def _publish(kafka: KafkaSettings, messages: list[ValidatedReading],
                   producer_name: str) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=10)
    await producer.start()
    try:
        futures = []
        topic = kafka.topic("readings.validated")
        for m in messages:
            value = codec.encode(m, producer=producer_name, event_time=m.validated_at,
                                 message_id=f"{m.meter_id}/{m.register}/{m.ts.isoformat()}/"
                                            f"{m.version}")
            futures.append(await producer.send(topic, value, key=m.key()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(messages)


def revalidate(database: DatabaseSettings, kafka: KafkaSettings, ruleset: RuleSet, *,
               start: datetime, end: datetime, group: str | None = None,
               meter_ids: Sequence[str] | None = None, context_days: int = 7,
               chunk: int = 500, dry_run: bool = False, initial_load: bool = False,
               now: datetime | None = None,
               progress: Callable[[str], None] = lambda _m: None) -> RevalidationReport:
    """Re-validate ``[start, end)`` for the meters of ``group`` (or all, or ``meter_ids``)."""
    report = RevalidationReport()
    with psycopg.connect(database.conninfo("pipeline"), autocommit=True) as conn:
        meters = load_meters(conn, meter_ids)
        if group is not None:
            meters = {m: info for m, info in meters.items()
                      if ruleset.resolve(info).validation.id == group}
        ids = sorted(meters)
        report.meters = len(ids)
        progress(f"{len(ids)} meters to re-validate from {start.isoformat()} to "
                 f"{end.isoformat()}")
        for n in range(0, len(ids), chunk):
            part = ids[n:n + chunk]
            raw = _raw(conn, part, start - timedelta(days=context_days), end)
            stored = _stored(conn, part, start, end)
            report.raw_readings += len(raw)
            result = run_batch(raw, ruleset, lambda m: meters[m], initial_load=initial_load)
            report.compared += sum(1 for r in result.readings if start <= r.ts < end)
            changed = next_versions(result.readings, stored, start=start, end=end)
            if now is not None:
                import msgspec

                changed = [msgspec.structs.replace(c, validated_at=now) for c in changed]
            report.new_versions += len(changed)
            if changed and not dry_run:
                report.published += asyncio.run(_publish(kafka, changed, "vee-revalidate"))
            progress(f"meters {n + 1}-{n + len(part)}: {len(raw)} raw readings, "
                     f"{len(changed)} new versions")
    return report


#: A day with fewer values than this has no day-rule verdict to give (the spike check
#: compares the highest rates with the third highest), and daily reads are judged on arrival.
_MIN_DAY_VALUES = 3


@dataclass
class ClosingReport:
    #: Meters whose last local day is over (by more than the grace) and still open.
    meters: int = 0
    #: New versions published (or, with ``dry_run``, that would be).
    new_versions: int = 0
    published: int = 0
    #: The days judged: (start, end) -> meters.
    days: dict[tuple[datetime, datetime], list[str]] | None = None


def open_days(conn: psycopg.Connection[Any], *, now: datetime, grace: timedelta,
              lookback: timedelta, timezone: str,
              min_values: int = _MIN_DAY_VALUES) -> dict[str, tuple[datetime, datetime]]:
    """Meters that stopped reporting while their last local day was still open in the
    stream, with that day's ``[start, end)``: their newest raw reading is before the end of
    its day (a read at local midnight is its day's last, which closes it), the day ended
    between ``now - grace - lookback`` and ``now - grace``, and it holds at least
    ``min_values`` values (a value at ``ts`` belongs to the day of ``ts - 1 s``)."""
    zone = ZoneInfo(timezone)
    cutoff = now - grace
    candidates: dict[str, tuple[datetime, datetime]] = {}
    with conn.cursor() as cur:
        rows = cur.execute(
            "SELECT meter_id, max(ts) FROM data.raw_readings WHERE ts >= %s "
            "GROUP BY meter_id HAVING max(ts) < %s",
            (cutoff - lookback - timedelta(days=1), cutoff)).fetchall()
        for meter_id, last in rows:
            local_day = (last - timedelta(seconds=1)).astimezone(zone).date()
            start = datetime.combine(local_day, time(), zone)
            end = datetime.combine(local_day + timedelta(days=1), time(), zone)
            if last == end or not cutoff - lookback < end <= cutoff:
                continue
            candidates[meter_id] = (start, end)
        if not candidates:
            return {}
        ids = sorted(candidates)
        full = cur.execute(
            "SELECT c.meter_id FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) "
            "AS c(meter_id, lo, hi) JOIN data.raw_readings r ON r.meter_id = c.meter_id "
            "AND r.ts > c.lo AND r.ts <= c.hi GROUP BY c.meter_id HAVING count(*) >= %s",
            (ids, [candidates[m][0] for m in ids], [candidates[m][1] for m in ids],
             min_values)).fetchall()
    return {m: candidates[m] for (m,) in full}


def close_open_days(database: DatabaseSettings, kafka: KafkaSettings, ruleset: RuleSet, *,
                    now: datetime, grace: timedelta = timedelta(hours=6),
                    lookback: timedelta = timedelta(days=2), context_days: int = 7,
                    dry_run: bool = False,
                    progress: Callable[[str], None] = lambda _m: None) -> ClosingReport:
    """Judge the last day of each meter that stopped reporting once the day ended more than
    ``grace`` ago (days that ended up to ``lookback`` before that are still found, so a
    stopped scheduler catches up; a day judged before publishes nothing new again).
    Versions carry ``validated_at = now``."""
    report = ClosingReport(days={})
    with psycopg.connect(database.conninfo("pipeline"), autocommit=True) as conn:
        found = open_days(conn, now=now, grace=grace, lookback=lookback,
                          timezone=ruleset.calendar.timezone)
        if found:
            meters = load_meters(conn, sorted(found))
            found = {m: day for m, day in found.items()
                     if m in meters and ruleset.resolve(meters[m]).validation.day_rules}
    report.meters = len(found)
    by_day: dict[tuple[datetime, datetime], list[str]] = {}
    for meter_id, day in sorted(found.items()):
        by_day.setdefault(day, []).append(meter_id)
    report.days = by_day
    for (start, end), ids in sorted(by_day.items()):
        part = revalidate(database, kafka, ruleset, start=start, end=end, meter_ids=ids,
                          context_days=context_days, dry_run=dry_run, now=now)
        report.new_versions += part.new_versions
        report.published += part.published
        progress(f"{start.date()}: {len(ids)} meter(s), {part.new_versions} new version(s)")
    return report
