"""Every message type goes through the real broker and comes back equal, keyed as designed."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import codec
from schemas.messages import Message
from schemas.settings import KafkaSettings
from schemas.topics import TOPICS

pytestmark = pytest.mark.integration


async def test_every_message_type_through_the_broker(kafka_settings: KafkaSettings,
                                                     samples: dict[str, Message]) -> None:
    topic_of = {p.SCHEMA: spec.name for spec in TOPICS for p in spec.payloads}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        for schema, message in samples.items():
            await producer.send_and_wait(kafka_settings.topic(topic_of[schema]),
                                         codec.encode(message, producer="it"), key=message.key())
    finally:
        await producer.stop()

    topics = sorted({kafka_settings.topic(topic_of[s]) for s in samples})
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=kafka_settings.bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None)
    await consumer.start()
    # Other tests of this session publish to the same topics (compacted ledger topics carry
    # tombstones too): look for each sample among everything received.
    received: dict[str, list[tuple[bytes | None, Message]]] = {}
    try:
        async with asyncio.timeout(60):
            while not all((m.key(), m) in received.get(s, []) for s, m in samples.items()):
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        if record.value is None:
                            continue
                        _, message = codec.decode(record.value)
                        received.setdefault(message.SCHEMA, []).append((record.key, message))
    finally:
        await consumer.stop()
    for schema, message in samples.items():
        assert (message.key(), message) in received[schema], schema
