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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from schemas import codec
from schemas.messages import Reading, ValidatedReading
from schemas.settings import DatabaseSettings, KafkaSettings
from vee.batch import StoredVersion, next_versions, run_batch
from vee.groups import RuleSet
from vee.model import MeterInfo

__all__ = ["RevalidationReport", "load_meters", "revalidate"]

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
