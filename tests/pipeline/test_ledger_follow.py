"""The ledger view follows the real compacted ledger topics (integration)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from pipeline._follow import follow_ledger
from pipeline.ledger import LedgerView
from schemas import codec
from schemas.messages import LedgerMeter, LedgerVeeGroup
from schemas.settings import KafkaSettings
from schemas.topics import TOPICS
from unimeter.topics import create_topics, delete_topics

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _wait_for(predicate) -> None:  # type: ignore[no-untyped-def]
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in 20 s")


@pytest.fixture
def ledger_kafka(kafka_settings: KafkaSettings) -> Iterator[KafkaSettings]:
    """Ledger topics of this test alone: it writes garbage, which other tests reading the
    session's topics must never see."""
    settings = kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}follow{uuid.uuid4().hex[:6]}."})
    specs = tuple(s for s in TOPICS if s.name.startswith("ledger."))
    report = create_topics(settings, specs)
    yield settings
    with contextlib.suppress(Exception):
        delete_topics(settings, report.created)


async def test_view_catches_up_then_follows_and_rejects_garbage(
        ledger_kafka: KafkaSettings) -> None:
    kafka_settings = ledger_kafka
    tag = uuid.uuid4().hex[:6]
    meters = [f"FOLLOW-{tag}-{i}" for i in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap, acks="all")
    await producer.start()
    try:
        for i, meter in enumerate(meters):
            message = LedgerMeter(meter_id=meter, status="active", medium="gas",
                                  updated_at=T0, region=f"R{i}", ledger_version=1)
            await producer.send_and_wait(kafka_settings.topic("ledger.meters"),
                                         codec.encode(message, producer="test"),
                                         key=meter.encode())
        await producer.send_and_wait(kafka_settings.topic("ledger.meters"), b"garbage",
                                     key=f"BAD-{tag}".encode())
        rejected: list[tuple[str, int]] = []
        view = LedgerView(on_reject=lambda t, k, v, p, o, e: rejected.append((t, o)))
        ready = asyncio.Event()
        task = asyncio.create_task(follow_ledger(view, kafka_settings, ready,
                                                 client_id="test-follow", poll_ms=100))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            assert all(view.meter(m) is not None for m in meters)
            assert view.meter(meters[3]).region == "R3"  # type: ignore[union-attr]
            assert rejected  # the garbage record was seen and refused
            # after catching up the view keeps following
            group = LedgerVeeGroup(group_id=f"g-{tag}", version=2, spec="rules: [spike]",
                                   updated_at=T0)
            await producer.send_and_wait(kafka_settings.topic("ledger.vee_groups"),
                                         codec.encode(group, producer="test"),
                                         key=group.group_id.encode())
            await producer.send_and_wait(kafka_settings.topic("ledger.meters"), None,
                                         key=meters[0].encode())
            await _wait_for(lambda: view.vee_group(f"g-{tag}") is not None
                            and view.meter(meters[0]) is None)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await producer.stop()
