"""Test helpers: read what landed on Kafka topics (real broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from schemas import codec
from schemas.errors import MessageDecodeError
from schemas.messages import Message, ReadingBatch, readings_of
from schemas.settings import KafkaSettings


async def consume(bootstrap: str, topics: list[str], *, until: Callable[[list[Any]], bool],
                  wait_s: float = 30.0) -> list[Any]:
    """Every record of ``topics`` from the beginning, until ``until(records)`` or timeout."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not until(records):
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def consume_messages(kafka: KafkaSettings, topic: str, *, count: int | None = None,
                           until: Callable[[list[Message]], bool] | None = None,
                           wait_s: float = 30.0, settle: float = 0.0
                           ) -> list[Message]:
    """Decoded messages of catalog ``topic`` until ``count`` of them (or ``until``)."""
    messages: list[Message] = []

    def decoded(records: list[Any]) -> list[Message]:
        out = []
        for r in records:  # shared session topics: skip what other tests wrote raw
            try:
                message = codec.decode(r.value)[1]
            except (MessageDecodeError, TypeError):
                continue
            # a meter's readings of one frame travel as one batch: count them one by one
            out.extend(readings_of(message) if isinstance(message, ReadingBatch) else (message,))
        return out

    def done(records: list[Any]) -> bool:
        messages.clear()
        messages.extend(decoded(records))
        if until is not None:
            return until(messages)
        return count is not None and len(messages) >= count

    await consume(kafka.bootstrap, [kafka.topic(topic)], until=done, wait_s=wait_s)
    if settle:
        await asyncio.sleep(settle)
        more = await consume(kafka.bootstrap, [kafka.topic(topic)],
                             until=lambda r: False, wait_s=settle)
        messages[:] = decoded(more)
    return messages
