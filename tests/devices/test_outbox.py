"""The outbox publisher against the real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devices.outbox import OutboxPublisher, enqueue_all
from schemas.messages import LedgerAccount, LedgerMeter, LedgerTariff, LedgerVeeGroup
from schemas.settings import KafkaSettings
from tests.devices.kafka_helpers import TopicTail, latest, private_topics
from tests.plugins.services import DbHandle

pytestmark = pytest.mark.integration

SEED = Path(__file__).parents[1] / "data" / "ledger" / "small_network.sql"
TOPICS = ("ledger.meters", "ledger.accounts", "ledger.tariffs", "ledger.vee_groups")



@pytest.fixture(scope="module")
def kafka_settings(kafka_settings: KafkaSettings) -> Iterator[KafkaSettings]:
    """This module's own topics (see ``private_topics``)."""
    yield from private_topics(kafka_settings, "outbox")


@pytest.fixture
def ledger_db(database: DbHandle) -> DbHandle:
    with database.connect("api") as conn:
        conn.execute(SEED.read_text(encoding="utf-8").encode())
    return database


def _sql(db: DbHandle, *statements: str) -> None:
    with db.connect("api") as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement.encode())


def _outbox_size(db: DbHandle) -> int:
    with db.connect("api") as conn:
        row = conn.execute("SELECT count(*) FROM ledger.outbox").fetchone()
    assert row is not None
    return int(row[0])


async def test_initial_publication_carries_the_dimensions(ledger_db: DbHandle,
                                                          kafka_settings: KafkaSettings) -> None:
    async with TopicTail(kafka_settings, *TOPICS) as tail:
        async with OutboxPublisher(ledger_db.settings, kafka_settings) as publisher:
            report = await publisher.drain()
        records = await tail.read()
    assert report.messages == len(records)
    assert _outbox_size(ledger_db) == 0
    state = latest(records)
    m2 = state[("ledger.meters", "M2")]
    assert isinstance(m2, LedgerMeter)
    assert (m2.account_id, m2.customer_type, m2.region, m2.org_unit, m2.supply_node,
            m2.tariff_id, m2.link_id, m2.service_point, m2.qmax, m2.has_valve) == (
        "A2", "commercial", "R1", "ORG-N", "P1", "RES", "LINK-C1", "SP-CJT188",
        Decimal("10"), True)
    a1 = state[("ledger.accounts", "A1")]
    assert isinstance(a1, LedgerAccount)
    assert (a1.alarm1, a1.alarm2, a1.region) == (Decimal("20"), Decimal("5"), "R1")
    # Non-meter devices (concentrator, collector) publish nothing of their own.
    assert {k for t, k in state if t == "ledger.meters"} == {"M1", "M2"}
    # Keys are the entity ids (compaction keeps one per meter).
    assert all(key == msg.key() for _t, key, msg in records if msg is not None)


async def test_account_and_topology_changes_republish_affected_meters(
        ledger_db: DbHandle, kafka_settings: KafkaSettings) -> None:
    async with OutboxPublisher(ledger_db.settings, kafka_settings) as publisher:
        await publisher.drain()
        async with TopicTail(kafka_settings, *TOPICS) as tail:
            _sql(ledger_db,
                 "INSERT INTO ledger.tariffs (tariff_id) VALUES ('COM')",
                 "UPDATE ledger.accounts SET tariff_id = 'COM' WHERE account_id = 'A2'")
            await publisher.drain()
            after_account = latest(await tail.read())
        assert set(after_account) == {("ledger.accounts", "A2"), ("ledger.meters", "M2")}
        assert after_account[("ledger.meters", "M2")].tariff_id == "COM"

        async with TopicTail(kafka_settings, *TOPICS) as tail:
            _sql(ledger_db,
                 "INSERT INTO ledger.org_units (org_unit_id, parent_id, name) "
                 "VALUES ('ORG-S', 'ORG', 'South branch')",
                 "UPDATE ledger.locations SET org_unit_id = 'ORG-S' WHERE location_id = 'R1'")
            await publisher.drain()
            after_org = latest(await tail.read())
        assert {k for t, k in after_org if t == "ledger.meters"} == {"M1", "M2"}
        assert {m.org_unit for m in after_org.values()} == {"ORG-S"}

        # A concentrator moving to another link republishes the meters below it.
        async with TopicTail(kafka_settings, *TOPICS) as tail:
            _sql(ledger_db, "UPDATE ledger.devices SET link_id = 'LINK-NEW' "
                            "WHERE device_id = 'C1'")
            await publisher.drain()
            after_link = latest(await tail.read())
        assert {(k, m.link_id) for (_t, k), m in after_link.items()} == {
            ("M1", "LINK-NEW"), ("M2", "LINK-NEW")}


async def test_versions_increase_and_deleted_meters_become_tombstones(
        ledger_db: DbHandle, kafka_settings: KafkaSettings) -> None:
    async with (OutboxPublisher(ledger_db.settings, kafka_settings) as publisher,
                TopicTail(kafka_settings, "ledger.meters") as tail):
        await publisher.drain()
        first = latest(await tail.read())
        _sql(ledger_db, "UPDATE ledger.meters SET register_digits = 8 "
                        "WHERE meter_id = 'M1'")
        await publisher.drain()
        _sql(ledger_db, "DELETE FROM ledger.meters WHERE meter_id = 'M2'",
             "DELETE FROM ledger.devices WHERE device_id = 'M2'")
        await publisher.drain()
        records = await tail.read()
    final = latest(records)
    assert final[("ledger.meters", "M1")].register_digits == 8
    assert final[("ledger.meters", "M1")].ledger_version > \
        first[("ledger.meters", "M1")].ledger_version
    assert final[("ledger.meters", "M2")] is None


async def test_tariffs_and_vee_groups(ledger_db: DbHandle,
                                     kafka_settings: KafkaSettings) -> None:
    _sql(ledger_db,
         "INSERT INTO ledger.vee_groups (vee_group_id, spec) VALUES ('gas-res', 'rules: []')",
         """INSERT INTO ledger.tariff_versions (tariff_id, version, kind, effective_from, tiers)
            VALUES ('RES', 1, 'step', '2025-01-01T00:00:00+08:00',
                    '[{"upper": "400", "price": "2.67"}, {"upper": null, "price": "3.15"}]')""")
    async with TopicTail(kafka_settings, "ledger.tariffs", "ledger.vee_groups") as tail:
        async with OutboxPublisher(ledger_db.settings, kafka_settings) as publisher:
            await publisher.drain()
        state = latest(await tail.read())
    tariff = state[("ledger.tariffs", "RES:1")]
    assert isinstance(tariff, LedgerTariff)
    assert [(t.upper, t.price) for t in tariff.tiers] == [(Decimal("400"), Decimal("2.67")),
                                                          (None, Decimal("3.15"))]
    group = state[("ledger.vee_groups", "gas-res")]
    assert isinstance(group, LedgerVeeGroup)
    assert (group.version, group.spec) == (1, "rules: []")


async def test_a_failed_send_loses_nothing(ledger_db: DbHandle,
                                          kafka_settings: KafkaSettings) -> None:
    sent: list[tuple[str, bytes]] = []
    fail = {"left": 1}

    async def flaky_send(topic: str, key: bytes, value: bytes | None) -> Any:
        if len(sent) == 2 and fail["left"]:
            fail["left"] -= 1
            raise ConnectionError("broker went away")
        sent.append((topic, key))

    before = _outbox_size(ledger_db)
    publisher = OutboxPublisher(ledger_db.settings, kafka_settings, send=flaky_send)
    await publisher.start()
    try:
        with pytest.raises(ConnectionError):
            await publisher.publish_once()
        assert _outbox_size(ledger_db) == before  # rolled back: still queued
        await publisher.drain()
    finally:
        await publisher.stop()
    assert _outbox_size(ledger_db) == 0
    keys = {k.decode() for _t, k in sent}
    assert {"M1", "M2", "A1", "A2"} <= keys


async def test_one_active_publisher_others_stand_by(ledger_db: DbHandle,
                                                   kafka_settings: KafkaSettings) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def record(name: str) -> Any:
        async def send(topic: str, key: bytes, value: bytes | None) -> None:
            seen.append(name)
        return send

    first = OutboxPublisher(ledger_db.settings, kafka_settings, send=await record("first"),
                            poll_interval_s=0.2)
    second = OutboxPublisher(ledger_db.settings, kafka_settings, send=await record("second"),
                             poll_interval_s=0.2)
    tasks = [asyncio.create_task(first.run(stop))]
    await asyncio.sleep(0.5)
    tasks.append(asyncio.create_task(second.run(stop)))
    for i in range(3):
        await asyncio.sleep(0.3)
        _sql(ledger_db, f"UPDATE ledger.meters SET register_digits = {6 + i} "
                        "WHERE meter_id = 'M1'")
    for _ in range(50):
        if _outbox_size(ledger_db) == 0:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks)
    await first.stop()
    await second.stop()
    assert seen
    assert set(seen) == {"first"}


async def test_republish_everything(ledger_db: DbHandle, kafka_settings: KafkaSettings) -> None:
    async with OutboxPublisher(ledger_db.settings, kafka_settings) as publisher:
        await publisher.drain()
        async with TopicTail(kafka_settings, *TOPICS) as tail:
            conn = await psycopg.AsyncConnection.connect(ledger_db.settings.conninfo("api"))
            try:
                queued = await enqueue_all(conn)
            finally:
                await conn.close()
            await publisher.drain()
            state = latest(await tail.read())
    assert queued == 4
    assert set(state) == {("ledger.meters", "M1"), ("ledger.meters", "M2"),
                          ("ledger.accounts", "A1"), ("ledger.accounts", "A2")}
