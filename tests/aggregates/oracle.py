"""An independent reckoning of the aggregates, in Python, from the messages themselves.

Every level is computed straight from the hour parts (not from the level below), with the
zone arithmetic of ``zoneinfo``, so a test comparing a backend with this oracle checks the
SQL, the hierarchy and the bucketing at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from schemas.messages import Charge, Message, ValidatedReading
from sinks.stores import price_period

Row = tuple[Any, ...]


def hour_of(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def local_bucket(hour: datetime, level: str, zone: ZoneInfo) -> datetime:
    local = hour.astimezone(zone)
    if level == "daily":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # Rebuild the local wall time in the zone (fold/DST safe for whole-hour transitions).
    return datetime(start.year, start.month, start.day, tzinfo=zone).astimezone(UTC)


def current_versions(messages: Iterable[Message]) -> list[ValidatedReading]:
    best: dict[tuple[str, str, datetime], ValidatedReading] = {}
    for m in messages:
        if isinstance(m, ValidatedReading):
            key = (m.meter_id, m.register, m.ts)
            if key not in best or m.version > best[key].version:
                best[key] = m
    return list(best.values())


def _bucket(hour: datetime, level: str, zone: ZoneInfo) -> datetime:
    return hour if level == "hourly" else local_bucket(hour, level, zone)


def consumption(messages: Iterable[Message], zone_name: str
                ) -> dict[str, set[Row]]:
    """agg.meter_consumption_* and agg.dimension_consumption_* as sets of rows."""
    zone = ZoneInfo(zone_name)
    parts = []
    for r in current_versions(messages):
        if not r.intervals:
            continue
        last_end = max(i.end for i in r.intervals)
        for i in r.intervals:
            parts.append((r, i.volume, i.estimated, i.end == last_end, hour_of(i.start)))
    out: dict[str, set[Row]] = {}
    for level in ("hourly", "daily", "monthly"):
        per_meter: dict[Row, list[Any]] = defaultdict(list)
        per_dim: dict[Row, list[Any]] = defaultdict(list)
        for r, volume, estimated, closes, hour in parts:
            d = r.dims
            bucket = _bucket(hour, level, zone)
            per_meter[(bucket, r.meter_id, r.register, r.unit, d.medium, d.account_id,
                       d.tariff_id)].append((volume, estimated, closes))
            per_dim[(bucket, d.medium, r.register, r.unit, d.customer_type, d.region,
                     d.org_unit, d.supply_node, d.tariff_id)].append((volume, estimated, closes))
        out[f"agg.meter_consumption_{level}"] = _measure(per_meter)
        out[f"agg.dimension_consumption_{level}"] = _measure(per_dim)
    return out


def _measure(groups: dict[Row, list[Any]]) -> set[Row]:
    rows = set()
    for key, items in groups.items():
        volumes = [v for v, _, _ in items]
        rows.add((*key, sum(volumes, Decimal(0)), sum(1 for *_, c in items if c), len(items),
                  sum(1 for _, e, _ in items if e), min(volumes), max(volumes)))
    return rows


def tiers(messages: Iterable[Message], zone_name: str) -> dict[str, set[Row]]:
    """agg.tier_consumption_* as sets of rows."""
    zone = ZoneInfo(zone_name)
    out: dict[str, set[Row]] = {}
    charges = [m for m in messages if isinstance(m, Charge)]
    for level in ("hourly", "daily", "monthly"):
        groups: dict[Row, list[Any]] = defaultdict(list)
        for c in {c.charge_id: c for c in charges}.values():
            # A charge counts at the last instant of its period (where billing settles it).
            accounted = c.period_end - timedelta(microseconds=1)
            bucket = _bucket(hour_of(accounted), level, zone)
            for s in c.segments:
                groups[(bucket, c.account_id, s.tariff_id or c.tariff_id, s.tier,
                        s.component, price_period(s.period))].append(
                            (s.volume, s.amount, c.provisional))
        rows = set()
        for key, items in groups.items():
            volumes = [v for v, _, _ in items]
            rows.add((*key, sum(volumes, Decimal(0)), sum((a for _, a, _ in items), Decimal(0)),
                      len(items), sum(1 for *_, p in items if p), min(volumes), max(volumes)))
        out[f"agg.tier_consumption_{level}"] = rows
    return out


def aggregates(messages: list[Message], zone_name: str) -> dict[str, set[Row]]:
    return {**consumption(messages, zone_name), **tiers(messages, zone_name)}
