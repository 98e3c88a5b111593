"""`unimeter vee revalidate` over stored data: new versions of what changed only, edits kept,
nothing new on a second run (integration: PostgreSQL and Kafka)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.revalidate import load_meters, revalidate
from schemas import codec
from schemas.messages import Reading, ValidatedReading
from schemas.settings import KafkaSettings
from tests.vee.conftest import Run
from unimeter.jobs import close_vee_days
from vee.engine import VeeEngine
from vee.groups import default_rules_path, load_rule_set

pytestmark = pytest.mark.integration

SEED = Path(__file__).parents[1] / "data" / "ledger" / "small_network.sql"
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def _seed(db) -> None:  # type: ignore[no-untyped-def]
    with db.admin() as conn:
        conn.execute(SEED.read_text())
        values = [str(1000 + h * 0.5) for h in range(12)]
        values[6] = "1090"  # a spike the stream missed (it was stored as validated)
        for h, v in enumerate(values):
            conn.execute("INSERT INTO data.raw_readings (meter_id, register, ts, value, unit, "
                         "received_at) VALUES ('M1', 'volume', %s, %s, 'm3', %s)",
                         (T0 + timedelta(hours=h), Decimal(v), T0 + timedelta(hours=h, minutes=1)))
        for h, quality in ((6, "validated"), (8, "edited")):
            conn.execute("INSERT INTO data.validated_readings (meter_id, register, ts, version, "
                         "value, unit, quality) VALUES ('M1', 'volume', %s, 1, %s, 'm3', %s)",
                         (T0 + timedelta(hours=h), Decimal(values[h]), quality))


async def _published(kafka: KafkaSettings, marker: datetime) -> list[ValidatedReading]:
    consumer = AIOKafkaConsumer(kafka.topic("readings.validated"),
                                bootstrap_servers=kafka.bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[ValidatedReading] = []
    try:
        idle = 0
        while idle < 4:  # everything was acknowledged before: read until the topic is quiet
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for record in records:
                    if record.value is None:
                        continue
                    _, message = codec.decode(record.value)
                    if isinstance(message, ValidatedReading) and message.validated_at == marker:
                        out.append(message)
    finally:
        await consumer.stop()
    return out


def test_revalidation_publishes_new_versions_of_what_changed(database, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    _seed(database)
    ruleset = load_rule_set(default_rules_path())
    marker = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(seconds=uuid.uuid4().int % 10**6)
    with database.connect("pipeline") as conn:
        meters = load_meters(conn, ["M1"])
    assert meters["M1"].size == "G4"
    report = revalidate(database.settings, kafka_settings, ruleset, start=T0,
                        end=T0 + timedelta(hours=12), group="gas", now=marker)
    assert report.meters == 2  # M1 and M2 are both gas meters; only M1 has readings
    published = asyncio.run(_published(kafka_settings, marker))
    by_hour = {int((m.ts - T0).total_seconds() // 3600): m for m in published}
    spike = by_hour[6]
    assert (spike.version, spike.quality) == (2, "estimated")
    assert spike.original_value == Decimal("1090.000")
    assert 8 not in by_hour  # the edited value is never replaced
    assert by_hour[3].version == 1  # nothing was stored for it yet
    assert report.published == len(published)
    # the sink stores them; a second run then changes nothing
    with database.admin() as conn:
        for m in published:
            conn.execute("INSERT INTO data.validated_readings (meter_id, register, ts, version, "
                         "value, unit, quality, method, flags, consumption, interval_start) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         (m.meter_id, m.register, m.ts, m.version, m.value, m.unit, m.quality,
                          m.method, list(m.flags), m.consumption, m.interval_start))
    again = revalidate(database.settings, kafka_settings, ruleset, start=T0,
                       end=T0 + timedelta(hours=12), group="gas", dry_run=True)
    assert again.new_versions == 0
    other_group = revalidate(database.settings, kafka_settings, ruleset, start=T0,
                             end=T0 + timedelta(hours=12), group="water", dry_run=True)
    assert other_group.meters == 0


def _store(db, messages) -> None:  # type: ignore[no-untyped-def]
    """What the sink does with the versions (the columns revalidation compares)."""
    with db.admin() as conn:
        for m in messages:
            conn.execute("INSERT INTO data.validated_readings (meter_id, register, ts, version, "
                         "value, unit, quality, method, flags, consumption, interval_start) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         (m.meter_id, m.register, m.ts, m.version, m.value, m.unit, m.quality,
                          m.method, list(m.flags), m.consumption, m.interval_start))


def test_the_last_day_of_a_meter_that_stopped_is_judged_after_the_grace(  # type: ignore[no-untyped-def]
        database, kafka_settings, config) -> None:
    # The stream judges a day once a value at or after its end arrives: M1 stops at 20:00
    # with a spike at 14:00 that the stream published as validated. M2 stopped with a read
    # at local midnight, which closed its day in the stream: nothing to judge.
    zone = ZoneInfo("Asia/Shanghai")
    day = datetime(2032, 1, 1, tzinfo=zone) + timedelta(days=uuid.uuid4().int % 3000)
    # half a cubic metre an hour, 4.5 in the hour to 14:00 (a spike, below the meter's Qmax)
    values = {h: Decimal(1000) + Decimal(h + 2) / 2 + (4 if h >= 14 else 0)
              for h in range(-2, 25)}
    raw = {meter: [Reading(meter_id=meter, register="volume", ts=day + timedelta(hours=h),
                           value=values[h], unit="m3",
                           received_at=day + timedelta(hours=h, minutes=1))
                   for h in range(-2, last + 1)]
           for meter, last in (("M1", 20), ("M2", 24))}
    with database.admin() as conn:
        conn.execute(SEED.read_text())
        for r in (*raw["M1"], *raw["M2"]):
            conn.execute("INSERT INTO data.raw_readings (meter_id, register, ts, value, "
                         "unit, received_at) VALUES (%s, %s, %s, %s, %s, %s)",
                         (r.meter_id, r.register, r.ts, r.value, r.unit, r.received_at))
    ruleset = load_rule_set(default_rules_path(), timezone="Asia/Shanghai")
    with database.connect("pipeline") as conn:
        meters = load_meters(conn, ["M1", "M2"])
    # what the stream published (M1's last day never closed there)
    for meter in ("M1", "M2"):
        stream = Run(VeeEngine(ruleset), meters[meter]).feed(raw[meter])
        latest = stream.latest()
        judged = "spike" in latest[day + timedelta(hours=14)].flags
        assert judged == (meter == "M2")
        _store(database, latest.values())

    cfg = dataclasses.replace(config, database=database.settings, kafka=kafka_settings)
    end = day + timedelta(days=1)
    assert close_vee_days(cfg, grace_h=6, now=end + timedelta(hours=5)).startswith(
        "0 meter(s)")  # within the grace: late values may still come
    now = end + timedelta(hours=7)
    summary = close_vee_days(cfg, grace_h=6, now=now)
    assert summary.startswith("1 meter(s) with an open last day, 1 day(s); published 2 ")
    published = asyncio.run(_published(kafka_settings, now))
    assert {m.meter_id for m in published} == {"M1"}
    by_hour = {int((m.ts - day).total_seconds() // 3600): m for m in published}
    assert sorted(by_hour) == [14, 15]  # the spike and the value after it, nothing else
    spike = by_hour[14]
    assert (spike.version, spike.quality) == (2, "estimated")
    assert spike.original_value == values[14]
    assert "spike" in spike.flags
    assert by_hour[15].version == 2
    assert by_hour[15].consumption == by_hour[15].value - spike.value  # type: ignore[operator]
    # when M1 speaks again the stream closes the day itself, with the same versions (the
    # sink absorbs them as re-deliveries)
    stream = Run(VeeEngine(ruleset), meters["M1"]).feed(raw["M1"])
    stream.feed([Reading(meter_id="M1", register="volume", ts=end + timedelta(hours=10),
                         value=values[20] + 7, unit="m3",
                         received_at=end + timedelta(hours=10, minutes=1))])
    for h, m in by_hour.items():
        mine = stream.latest()[day + timedelta(hours=h)]
        assert (mine.version, mine.value, mine.quality, mine.method, mine.flags,
                mine.consumption, mine.interval_start) == (
            m.version, m.value, m.quality, m.method, m.flags, m.consumption,
            m.interval_start)
    # stored by the sink, the next runs change nothing
    _store(database, published)
    later = close_vee_days(cfg, grace_h=6, now=now + timedelta(hours=1), dry_run=True)
    assert later.endswith("would publish 0 new version(s)")
