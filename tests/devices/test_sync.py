"""Synchronisation with the CIS against the real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from devices.importer import import_files
from devices.outbox import OutboxPublisher
from devices.sync import Incoming, SyncService, SyncSettings
from schemas import codec
from schemas.messages import (
    Alert,
    CommandRequest,
    CommandResult,
    DeadLetter,
    DeviceEvent,
    LedgerTariff,
    Message,
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
    TariffTier,
    TopUp,
)
from schemas.settings import KafkaSettings
from tests.devices.kafka_helpers import TopicTail, private_topics
from tests.plugins.services import DbHandle

pytestmark = pytest.mark.integration

DEMO = sorted((Path(__file__).parents[1] / "data" / "ledger" / "demo").glob("*.csv"))
T = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)



@pytest.fixture(scope="module")
def kafka_settings(kafka_settings: KafkaSettings) -> Iterator[KafkaSettings]:
    """This module's own topics (see ``private_topics``)."""
    yield from private_topics(kafka_settings, "sync")


@pytest.fixture
def demo_db(database: DbHandle) -> DbHandle:
    with database.connect("api") as conn:
        import_files(conn, DEMO, actor="test")
        conn.execute("DELETE FROM ledger.outbox")
    return database


@pytest.fixture
async def sync(demo_db: DbHandle, kafka_settings: KafkaSettings) -> AsyncIterator[SyncService]:
    service = SyncService(demo_db.settings, kafka_settings,
                          settings=SyncSettings(retry_window_s=600))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def rec(topic: str, message: Message, *, message_id: str | None = None) -> Incoming:
    return Incoming(topic, codec.encode(message, producer="cis", message_id=message_id),
                    message.key())


def q(db: DbHandle, query: str, *params: object) -> list[tuple[object, ...]]:
    with db.connect("api") as conn:
        return [tuple(r) for r in conn.execute(query.encode(), params).fetchall()]


async def test_customer_account_and_meter_changes_apply_in_order(
        sync: SyncService, demo_db: DbHandle) -> None:
    customer = SyncCustomer(customer_id="C0100", customer_type="residential",
                            name="Sun Li", changed_at=T, phone="13900000100")
    account = SyncAccount(account_id="A0100", customer_id="C0100", changed_at=T,
                          tariff_id="GAS-RES", alarm1=Decimal("25"), alarm2=Decimal("5"))
    binding = SyncMeter(meter_id="GM-0008", account_id="A0100", changed_at=T)
    assert await sync.handle(rec("sync.in.customers", customer)) == "applied"
    assert await sync.handle(rec("sync.in.customers", account)) == "applied"
    assert await sync.handle(rec("sync.in.meters", binding)) == "applied"
    assert q(demo_db, "SELECT account_id, customer_type, tariff_id FROM ledger.meter_dimensions "
                      "WHERE meter_id = 'GM-0008'") == [("A0100", "residential", "GAS-RES")]
    assert ("ledger.meters", "GM-0008") in q(demo_db, "SELECT topic, entity_id FROM "
                                                       "ledger.outbox")
    assert q(demo_db, "SELECT DISTINCT actor FROM ledger.history WHERE entity_id = 'A0100'") == [
        ("sync:cis",)]
    # Redelivery is absorbed; an older change is a conflict, kept and reported.
    assert await sync.handle(rec("sync.in.customers", account)) == "duplicate"
    older = SyncAccount(account_id="A0100", customer_id="C0100", changed_at=T - timedelta(1),
                        tariff_id="GAS-COM")
    older_record = rec("sync.in.customers", older, message_id="m-old")
    async with TopicTail(sync.kafka, "sync.out.rejects", "dlq.sync") as tail:
        assert await sync.handle(older_record) == "conflict"
        out = await tail.read(count=2)
    assert q(demo_db, "SELECT tariff_id FROM ledger.accounts WHERE account_id = 'A0100'") == [
        ("GAS-RES",)]
    rejects = [m for _t, _k, m in out if isinstance(m, SyncReject)]
    assert len(rejects) == 1
    assert (rejects[0].kind, rejects[0].entity_id, rejects[0].message_id) == (
        "conflict", "A0100", "m-old")
    dead = [m for _t, _k, m in out if isinstance(m, DeadLetter)]
    assert dead[0].value == older_record.value
    stored = q(demo_db, "SELECT kind, status, entity, payload IS NOT NULL "
                        "FROM ledger.sync_exceptions")
    assert stored == [("conflict", "open", "account", True)]


async def test_a_local_change_after_the_cis_change_is_a_conflict(sync: SyncService,
                                                               demo_db: DbHandle) -> None:
    with demo_db.connect("api") as conn:
        conn.execute("UPDATE ledger.accounts SET alarm1 = 99 WHERE account_id = 'A0001'")
    stale = SyncAccount(account_id="A0001", customer_id="C0001", changed_at=T - timedelta(1),
                        tariff_id="GAS-RES", alarm1=Decimal("10"))
    assert await sync.handle(rec("sync.in.customers", stale)) == "conflict"
    assert q(demo_db, "SELECT alarm1 FROM ledger.accounts WHERE account_id = 'A0001'") == [
        (Decimal("99"),)]


async def test_a_meter_waits_for_its_account_then_applies(sync: SyncService,
                                                          demo_db: DbHandle) -> None:
    binding = SyncMeter(meter_id="GM-0008", account_id="A0200", changed_at=T)
    assert await sync.handle(rec("sync.in.meters", binding)) == "pending"
    assert q(demo_db, "SELECT status, attempts FROM ledger.sync_exceptions") == [("pending", 1)]
    assert await sync.retry_pending() == 1
    assert q(demo_db, "SELECT status, attempts FROM ledger.sync_exceptions") == [("pending", 2)]
    await sync.handle(rec("sync.in.customers", SyncAccount(
        account_id="A0200", customer_id="C0001", changed_at=T, tariff_id="GAS-RES")))
    await sync.retry_pending()
    assert q(demo_db, "SELECT status, resolution FROM ledger.sync_exceptions") == [
        ("resolved", "applied on retry")]
    assert q(demo_db, "SELECT account_id FROM ledger.meters WHERE meter_id = 'GM-0008'") == [
        ("A0200",)]
    # Without a retry window a missing reference is rejected at once.
    sync.settings = SyncSettings(retry_window_s=0)
    assert await sync.handle(rec("sync.in.meters", SyncMeter(
        meter_id="GM-0008", account_id="NOPE", changed_at=T + timedelta(1)))) == "reject"


async def test_topups_reach_billing_exactly_once(sync: SyncService, demo_db: DbHandle,
                                                 kafka_settings: KafkaSettings) -> None:
    top_up = TopUp(top_up_id=f"TU-{uuid.uuid4().hex[:8]}", account_id="A0001",
                   amount=Decimal("100.00"), ts=T, channel="counter", operator="teller-4")
    assert await sync.handle(rec("sync.in.topups", top_up)) == "applied"
    assert await sync.handle(rec("sync.in.topups", top_up)) == "duplicate"
    changed = TopUp(top_up_id=top_up.top_up_id, account_id="A0001", amount=Decimal("200.00"),
                    ts=T)
    assert await sync.handle(rec("sync.in.topups", changed)) == "conflict"
    negative = TopUp(top_up_id="TU-neg", account_id="A0001", amount=Decimal("-5"), ts=T)
    assert await sync.handle(rec("sync.in.topups", negative)) == "reject"
    async with TopicTail(kafka_settings, "billing.topups") as tail:
        async with OutboxPublisher(demo_db.settings, kafka_settings) as publisher:
            await publisher.drain()
            await publisher.drain()
        out = await tail.read()
    mine = [m for _t, _k, m in out if isinstance(m, TopUp) and m.top_up_id == top_up.top_up_id]
    assert mine == [top_up]


async def test_price_adjustment_becomes_a_tariff_version(sync: SyncService, demo_db: DbHandle,
                                                         kafka_settings: KafkaSettings) -> None:
    adjustment = SyncTariff(tariff_id="GAS-RES", adjustment_id="PA-2026", kind="step",
                            effective_from=datetime(2026, 8, 1, tzinfo=UTC), changed_at=T,
                            tiers=(TariffTier(upper=Decimal("400"), price=Decimal("2.77")),
                                   TariffTier(upper=None, price=Decimal("3.35"))),
                            reason="price adjustment 2026")
    assert await sync.handle(rec("sync.in.tariffs", adjustment)) == "applied"
    assert await sync.handle(rec("sync.in.tariffs", adjustment)) == "duplicate"
    backdated = SyncTariff(tariff_id="GAS-RES", adjustment_id="PA-OLD", kind="flat",
                           effective_from=datetime(2025, 1, 1, tzinfo=UTC), changed_at=T,
                           tiers=(TariffTier(upper=None, price=Decimal("3")),))
    assert await sync.handle(rec("sync.in.tariffs", backdated)) == "conflict"
    async with TopicTail(kafka_settings, "ledger.tariffs") as tail:
        async with OutboxPublisher(demo_db.settings, kafka_settings) as publisher:
            await publisher.drain()
        out = {m.key(): m for _t, _k, m in await tail.read() if isinstance(m, LedgerTariff)}
    v1, v2 = out[b"GAS-RES:1"], out[b"GAS-RES:2"]
    assert v1.effective_to == v2.effective_from == datetime(2026, 8, 1, tzinfo=UTC)
    assert [t.price for t in v2.tiers] == [Decimal("2.77"), Decimal("3.35")]


async def test_parameters_requirements_and_garbage(sync: SyncService, demo_db: DbHandle,
                                                   kafka_settings: KafkaSettings) -> None:
    params = SyncDeviceParameters(request_id="PR-1", device_id="GM-0005", changed_at=T,
                                  parameters={"report_interval_s": 7200, "alarm_volume": 3})
    async with TopicTail(kafka_settings, "commands.requests") as tail:
        assert await sync.handle(rec("sync.in.device_parameters", params)) == "applied"
        requests = [m for _t, _k, m in await tail.read(count=1)]
    assert isinstance(requests[0], CommandRequest)
    assert (requests[0].command, requests[0].params, requests[0].client_command_id) == (
        "set_report_interval", {"minutes": 120}, "sync:PR-1:report_interval_s")
    assert q(demo_db, "SELECT parameters FROM ledger.devices WHERE device_id = 'GM-0005'") == [
        ({"report_interval_s": 7200, "alarm_volume": 3},)]

    requirement = SyncCollectionRequirement(
        requirement_id="REQ-1", targets=("account:A0001", "device:GM-0005"), changed_at=T,
        registers=("volume_settlement",), interval_s=86400, window_start="01:00")
    assert await sync.handle(rec("sync.in.collection", requirement)) == "applied"
    assert sorted(q(demo_db, "SELECT device_id FROM ledger.collection_plan_devices "
                             "WHERE plan_id = 'sync:REQ-1'")) == [("GM-0001",), ("GM-0005",)]

    assert await sync.handle(Incoming("sync.in.meters", b"\x00not json", b"k")) == "reject"
    wrong_topic = rec("sync.in.meters", SyncCustomer(customer_id="C9", customer_type="public",
                                                      name="x", changed_at=T))
    assert await sync.handle(wrong_topic) == "reject"
    assert q(demo_db, "SELECT count(*) FROM ledger.sync_exceptions WHERE kind = 'reject'") == [
        (2,)]


async def test_outbound_translation(sync: SyncService, kafka_settings: KafkaSettings) -> None:
    failed = CommandResult(command_id="cmd-9", device_id="GM-0003", status="failed", ts=T,
                           detail="no reply after 3 attempts", error_code="timeout")
    offline = DeviceEvent(event_id="e-1", device_id="CON-GE-01", kind="offline", ts=T)
    heartbeat = DeviceEvent(event_id="e-2", device_id="CON-GE-01", kind="heartbeat", ts=T)
    info = Alert(alert_id="al-1", object_type="meter", object_id="GM-0001", severity="info",
                 code="x", reason="y", ts=T)
    major = Alert(alert_id="al-2", object_type="meter", object_id="GM-0001", severity="major",
                  code="tamper", reason="magnetic tamper", ts=T)
    async with TopicTail(kafka_settings, "sync.out.service_exceptions", "sync.out.device_status",
                         "sync.out.alarms") as tail:
        sent = [await sync.forward(rec(t, m)) for t, m in (
            ("commands.results", failed), ("device.events", offline),
            ("device.events", heartbeat), ("alerts", info), ("alerts", major))]
        out = await tail.read(count=3)
    assert sent == [1, 1, 0, 0, 1]
    by_type = {type(m): m for _t, _k, m in out}
    exception = by_type[SyncServiceException]
    assert isinstance(exception, SyncServiceException)
    assert (exception.kind, exception.account_id, exception.object_type) == (
        "command_failed", "A0003", "meter")
    status = by_type[SyncDeviceStatus]
    assert isinstance(status, SyncDeviceStatus)
    assert (status.device_id, status.online) == ("CON-GE-01", False)
    assert by_type[Alert] == major


async def test_data_availability(sync: SyncService, demo_db: DbHandle,
                                 kafka_settings: KafkaSettings) -> None:
    day = date(2026, 6, 30)
    start = datetime(2026, 6, 29, 16, 0, tzinfo=UTC)  # local midnight in Shanghai
    with demo_db.connect("ingest") as conn:
        for hour in range(0, 24, 2):
            conn.execute("INSERT INTO data.raw_readings (meter_id, register, ts, value, unit, "
                         "received_at) VALUES ('GM-0006', 'volume', %s, %s, 'm3', %s)",
                         (start + timedelta(hours=hour), hour, start))
    async with TopicTail(kafka_settings, "sync.out.data_availability") as tail:
        count = await sync.publish_availability(day)
        out = {m.meter_id: m for _t, _k, m in await tail.read(count=count)
               if isinstance(m, SyncDataAvailability)}
    assert count == 9  # the active meters of the demo ledger
    assert (out["GM-0006"].readings, out["GM-0006"].expected) == (12, 24)  # hourly plan
    assert (out["GM-0001"].readings, out["GM-0001"].expected) == (0, 1)    # daily plan
    assert out["WM-0001"].expected == 96                                   # 15-minute polls


async def test_the_process_end_to_end(demo_db: DbHandle, kafka_settings: KafkaSettings) -> None:
    from schemas.topics import TOPICS
    from unimeter.topics import create_topics, delete_topics

    kafka = kafka_settings.model_copy(update={"topic_prefix": f"sync{uuid.uuid4().hex[:6]}."})
    report = create_topics(kafka, tuple(t for t in TOPICS if t.name.startswith(
        ("sync.", "ledger.", "billing.topups", "dlq.sync", "commands.", "device.events",
         "alerts"))))
    try:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        for topic, message in (
                ("sync.in.customers", SyncCustomer(customer_id="C0300", customer_type="public",
                                                   name="School 3", changed_at=T)),
                ("sync.in.customers", SyncAccount(account_id="A0300", customer_id="C0300",
                                                  changed_at=T, tariff_id="GAS-COM")),
                ("sync.in.topups", TopUp(top_up_id="TU-E2E", account_id="A0300",
                                         amount=Decimal("50.00"), ts=T))):
            await producer.send_and_wait(kafka.topic(topic), codec.encode(message,
                                                                          producer="cis"),
                                         key=message.key())
        await producer.stop()
        async with TopicTail(kafka, "billing.topups", "ledger.accounts") as tail:
            stop = asyncio.Event()
            service = SyncService(demo_db.settings, kafka, settings=SyncSettings(
                consumer_group=f"sync-{uuid.uuid4().hex[:6]}", retry_interval_s=0.5))
            task = asyncio.create_task(service.run(stop))
            out = await tail.read(count=2, timeout_s=60)
            stop.set()
            stats = await task
            await service.stop()
        assert stats.applied == 3
        kinds = {type(m).__name__: m for _t, _k, m in out}
        assert kinds["TopUp"].top_up_id == "TU-E2E"
        assert kinds["LedgerAccount"].account_id == "A0300"
    finally:
        delete_topics(kafka, report.created)


def test_sync_tables_hold_no_secrets_for_analysts(demo_db: DbHandle) -> None:
    with demo_db.connect("analyst") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM ledger.sync_exceptions")
