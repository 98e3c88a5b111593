"""Reading what a test produced on a shared per-session topic (helpers, not a test module)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import codec
from schemas.messages import Message
from schemas.settings import KafkaSettings


class TopicTail:
    """Remembers the end of ``topics`` at creation; :meth:`read` returns what came after."""

    def __init__(self, kafka: KafkaSettings, *topics: str) -> None:
        self.kafka = kafka
        self.topics = [kafka.topic(t) for t in topics]
        self._consumer: AIOKafkaConsumer | None = None
        self._start: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> TopicTail:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap,
                                          enable_auto_commit=False, group_id=None)
        await self._consumer.start()
        parts = []
        for topic in self.topics:
            for p in self._consumer.partitions_for_topic(topic) or await self._parts(topic):
                parts.append(TopicPartition(topic, p))
        self._consumer.assign(parts)
        self._start = await self._consumer.end_offsets(parts)
        for tp, offset in self._start.items():
            self._consumer.seek(tp, offset)
        return self

    async def _parts(self, topic: str) -> set[int]:
        assert self._consumer is not None
        await self._consumer._client.force_metadata_update()
        return self._consumer.partitions_for_topic(topic) or set()

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def read(self, *, count: int | None = None, idle_s: float = 1.5,
                   timeout_s: float = 30.0) -> list[tuple[str, bytes, Message | None]]:
        """``(topic, key, message or None for a tombstone)`` in arrival order."""
        assert self._consumer is not None
        out: list[tuple[str, bytes, Message | None]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last = loop.time()
        while loop.time() < deadline:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    msg = None if r.value is None else codec.decode(r.value)[1]
                    out.append((r.topic.removeprefix(self.kafka.topic_prefix), r.key, msg))
                    last = loop.time()
            if count is not None and len(out) >= count:
                break
            if count is None and out and loop.time() - last > idle_s:
                break
            if count is None and not out and loop.time() - last > idle_s * 2:
                break
        return out


def latest(records: list[tuple[str, bytes, Message | None]]) -> dict[tuple[str, str], Any]:
    """The last value per (topic, key), as a compacted topic would keep it."""
    out: dict[tuple[str, str], Any] = {}
    for topic, key, msg in records:
        out[(topic, key.decode())] = msg
    return out


#: Topics the ledger and sync tests produce to or read from.
LEDGER_TOPIC_PREFIXES = ("ledger.", "sync.", "billing.topups", "dlq.sync", "commands.requests",
                         "commands.results", "device.events", "alerts")


def private_topics(base: KafkaSettings, name: str) -> Iterator[KafkaSettings]:
    """Topics of our own under a fresh prefix, deleted afterwards: what these tests publish
    (ledger snapshots, top-ups, command requests) must not reach other tests' consumers of
    the shared session topics."""
    import uuid

    from schemas.topics import TOPICS
    from unimeter.topics import create_topics, delete_topics

    settings = base.model_copy(
        update={"topic_prefix": f"{base.topic_prefix}{name}-{uuid.uuid4().hex[:6]}."})
    report = create_topics(settings, tuple(t for t in TOPICS
                                           if t.name.startswith(LEDGER_TOPIC_PREFIXES)))
    yield settings
    delete_topics(settings, report.created)
