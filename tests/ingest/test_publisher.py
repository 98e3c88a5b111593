"""The publisher against the real broker: batching, keys, the spool while Kafka is down."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import SpoolFullError
from ingest.publisher import OutRecord, Publisher
from ingest.spool import Spool
from schemas.settings import KafkaSettings
from tests.ingest._kafka import consume

pytestmark = pytest.mark.integration


def _publisher(kafka: KafkaSettings, spool_dir: Path, **kw: Any) -> Publisher:
    spool = Spool(spool_dir, max_bytes=kw.pop("max_bytes", 64 << 20), segment_bytes=1 << 20)
    return Publisher(kafka, spool=spool, client_id="test-fep", **kw)


_CREATED: list[tuple[KafkaSettings, list[str]]] = []


def _topics(kafka: KafkaSettings) -> tuple[str, str]:
    """Two topics of this test alone (the catalog topics carry envelopes only)."""
    from schemas.topics import TopicSpec
    from unimeter.topics import create_topics

    tag = uuid.uuid4().hex[:8]
    specs = tuple(TopicSpec(f"pubtest.{tag}.{n}", "key", "publisher test records", ())
                  for n in ("frames", "readings"))
    create_topics(kafka, specs)
    names = [kafka.topic(spec.name) for spec in specs]
    _CREATED.append((kafka, names))
    return names[0], names[1]


@pytest.fixture(autouse=True)
def _drop_test_topics() -> Iterator[None]:
    yield
    from unimeter.topics import delete_topics

    while _CREATED:
        kafka, names = _CREATED.pop()
        with contextlib.suppress(Exception):
            delete_topics(kafka, names)


def _unit(topics: tuple[str, str], i: int) -> list[OutRecord]:
    meter = f"M{i % 97:04d}".encode()
    return [OutRecord(topics[0], f"DTU{i % 13}".encode(), b"frame-%d" % i),
            OutRecord(topics[1], meter, b"reading-%d" % i)]


async def test_every_unit_lands_once_in_the_partition_of_its_key(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    from kafka.partitioner.default import murmur2

    topics = _topics(kafka_settings)
    pub = _publisher(kafka_settings, tmp_path)
    await pub.start()
    try:
        results = await asyncio.gather(*(pub.publish(_unit(topics, i))
                                         for i in range(5000)))
    finally:
        await pub.stop()
    assert set(results) == {"kafka"}
    assert pub.stats.rounds < 5000 / 10  # batched, not one request per unit

    records = await consume(kafka_settings.bootstrap, [topics[1]],
                            until=lambda r: len(r) >= 5000)
    values = sorted(r.value for r in records)
    assert values == sorted(b"reading-%d" % i for i in range(5000))
    parts = kafka_settings.default_partitions
    for r in records:  # the same partition any Kafka client puts that key in
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % parts


async def test_kafka_down_spools_then_drains_without_loss(
        private_kafka: Any, config: Any, tmp_path: Path) -> None:
    kafka = config.kafka.model_copy(update={"bootstrap": private_kafka.bootstrap,
                                            "topic_prefix": "p.", "default_partitions": 2})
    topics = _topics(kafka)
    pub = _publisher(kafka, tmp_path, ack_timeout_s=1.5)
    await pub.start()
    acked: list[int] = []

    async def send(i: int) -> None:
        await pub.publish(_unit(topics, i))
        acked.append(i)

    try:
        await asyncio.gather(*(send(i) for i in range(500)))
        assert pub.mode == "direct"
        private_kafka.stop()
        await asyncio.gather(*(send(i) for i in range(500, 1500)))  # acknowledged from spool
        assert pub.mode == "spool"
        assert pub.stats.records_spooled >= 2000
        assert not pub.spool.empty
        private_kafka.start()
        for _ in range(600):
            if pub.mode == "direct":
                break
            await asyncio.sleep(0.1)
        assert pub.mode == "direct", pub.stats
        await asyncio.gather(*(send(i) for i in range(1500, 1600)))
    finally:
        await pub.stop()
    assert pub.stats.producer_restarts >= 1
    assert sorted(acked) == list(range(1600))
    records = await consume(kafka.bootstrap, [topics[1]],
                            until=lambda r: len({x.value for x in r}) >= 1600, wait_s=60)
    assert {r.value for r in records} == {b"reading-%d" % i for i in range(1600)}


async def test_full_spool_stops_acknowledging(tmp_path: Path, config: Any) -> None:
    # A broker address where nothing listens: Kafka is "down" from the start.
    from tests.plugins.services import free_port

    kafka = config.kafka.model_copy(update={"bootstrap": f"127.0.0.1:{free_port()}"})
    pub = _publisher(kafka, tmp_path, ack_timeout_s=0.5, max_bytes=64 * 1024)
    await pub.start()
    assert pub.mode == "spool"
    acked, refused = 0, 0
    try:
        for i in range(2000):
            try:
                await pub.publish(_unit(("t.frames", "t.readings"), i))
                acked += 1
            except SpoolFullError:
                refused += 1
    finally:
        await pub.stop()
    assert acked > 100
    assert refused > 0
    # Everything acknowledged is in the spool, in order, nothing more.
    spool = Spool(tmp_path, max_bytes=1 << 30)
    spool.open()
    values = [r.value for r in spool.iter_all() if r.topic == "t.readings"]
    spool.close()
    assert values == [b"reading-%d" % i for i in range(acked)]
