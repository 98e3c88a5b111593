"""`unimeter pipeline` against the real broker: ledger in, readings in, validated out, and the
state survives a restart (integration)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from schemas import codec
from schemas.messages import LedgerMeter, Reading, ValidatedReading
from schemas.settings import KafkaSettings
from schemas.topics import TOPICS
from unimeter.topics import create_topics, delete_topics

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 6, tzinfo=UTC)


@pytest.fixture
def own_kafka(kafka_settings: KafkaSettings) -> Iterator[KafkaSettings]:
    """A topic prefix of this test alone (the worker's consumer group reads every partition
    of readings.raw; other tests' readings must not reach it)."""
    settings = kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}pl{uuid.uuid4().hex[:6]}."})
    create_topics(settings, TOPICS)
    yield settings
    from kafka import KafkaAdminClient

    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
        try:
            mine = [t for t in admin.list_topics() if t.startswith(settings.topic_prefix)]
        finally:
            admin.close()
        delete_topics(settings, mine)


def _worker(kafka: KafkaSettings, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "UNIMETER_KAFKA_BOOTSTRAP": kafka.bootstrap,
           "UNIMETER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
           "UNIMETER_KAFKA_DEFAULT_PARTITIONS": str(kafka.default_partitions),
           "UNIMETER_PIPELINE_STORE": "rocksdb://", "UNIMETER_PIPELINE_DATA_DIR": str(data_dir),
           "UNIMETER_PIPELINE_AGENTS": '["vee"]', "UNIMETER_PIPELINE_LEDGER_WAIT_S": "30"}
    return subprocess.Popen([sys.executable, "-m", "unimeter", "pipeline"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _reading(hours: int, value: str) -> Reading:
    ts = T0 + timedelta(hours=hours)
    return Reading(meter_id="IT-GM-1", register="volume", ts=ts, value=Decimal(value),
                   unit="m3", received_at=ts + timedelta(seconds=10))


async def _produce(kafka: KafkaSettings, items: list[tuple[str, object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for topic, message in items:
            await producer.send_and_wait(kafka.topic(topic),
                                         codec.encode(message, producer="it"),  # type: ignore[arg-type]
                                         key=message.key())  # type: ignore[attr-defined]
    finally:
        await producer.stop()


async def _collect(consumer: AIOKafkaConsumer, seen: list[ValidatedReading],
                   want: int, wait_s: float, log: Path,
                   placed: list[tuple[bytes, int]] | None = None) -> None:
    try:
        async with asyncio.timeout(wait_s):
            while len(seen) < want:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        _, message = codec.decode(record.value, ValidatedReading)
                        seen.append(message)  # type: ignore[arg-type]
                        if placed is not None:
                            placed.append((record.key, record.partition))
    except TimeoutError:
        raise AssertionError(f"{len(seen)} of {want} validated readings after {wait_s} s; "
                             f"worker log:\n{log.read_text()[-4000:]}") from None  # noqa: ASYNC240


async def test_the_worker_validates_and_recovers_its_state_after_a_restart(
        own_kafka: KafkaSettings, tmp_path: Path) -> None:
    kafka = own_kafka
    log = tmp_path / "worker.log"
    await _produce(kafka, [("ledger.meters", LedgerMeter(
        meter_id="IT-GM-1", status="active", medium="gas", updated_at=T0, qmax=Decimal("4"),
        account_id="A-IT", customer_type="residential", region="east"))])
    consumer = AIOKafkaConsumer(kafka.topic("readings.validated"),
                                bootstrap_servers=kafka.bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen: list[ValidatedReading] = []
    worker = _worker(kafka, tmp_path / "state", log)
    try:
        await _produce(kafka, [("readings.raw", _reading(h, str(100 + h))) for h in range(4)])
        placed: list[tuple[bytes, int]] = []
        await _collect(consumer, seen, 4, 180, log, placed)
        assert [o.dims.account_id for o in seen] == ["A-IT"] * 4
        _stop(worker)
        # while the worker is down, the next readings queue up on the broker
        await _produce(kafka, [("readings.raw", _reading(h, str(100 + h))) for h in (4, 5)])
        # a new worker on another machine (empty data dir): state comes from the changelog
        worker = _worker(kafka, tmp_path / "elsewhere", log)
        await _collect(consumer, seen, 6, 180, log, placed)
        partitions = sorted(consumer.assignment(), key=lambda tp: tp.partition)
    finally:
        _stop(worker)
        await consumer.stop()
    # every output on the partition the Kafka partitioner gives its key (the sender caches it)
    every = [tp.partition for tp in partitions]
    assert {(key, DefaultPartitioner()(key, every, every)) for key, _ in placed} == set(placed)
    # a redelivery may repeat a version, but only with the identical content
    by_key: dict[tuple[datetime, int], ValidatedReading] = {}
    for o in seen:
        assert by_key.setdefault((o.ts, o.version), o) == o
    after = [o for o in seen if o.ts == T0 + timedelta(hours=4)]
    assert after, log.read_text()[-3000:]
    # the state was recovered: the first value after the restart has its consumption
    assert after[0].consumption == Decimal("1.000")
    assert after[0].interval_start == T0 + timedelta(hours=3)
