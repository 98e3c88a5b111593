"""Follow the compacted ``ledger.*`` topics into a :class:`~pipeline.ledger.LedgerView`.

Strategy: one aiokafka consumer without a consumer group is assigned every partition of the
four topics. Each partition starts after the offset the view stored last time (RocksDB
store) or at the beginning (memory store, first start). The end offsets taken at start-up
define "caught up": when every partition has reached them, ``ready`` is set and the agents
start enriching. The consumer then keeps following the topics until the worker stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pipeline.errors import PipelineError
from pipeline.ledger import LEDGER_TOPICS, LedgerView
from schemas.settings import KafkaSettings

__all__ = ["follow_ledger"]

log = logging.getLogger(__name__)


async def follow_ledger(view: LedgerView, kafka: KafkaSettings, ready: asyncio.Event, *,
                        client_id: str, on_progress: Callable[[int], None] | None = None,
                        poll_ms: int = 500) -> None:
    """Run until cancelled; raises :class:`PipelineError` if a ledger topic is missing."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                client_id=client_id, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        existing = await consumer.topics()
        by_full_name: dict[str, str] = {}
        partitions: list[TopicPartition] = []
        for name in LEDGER_TOPICS:
            full = kafka.topic(name)
            if full not in existing:
                raise PipelineError(f"the ledger topic '{full}' does not exist",
                                    where=kafka.bootstrap,
                                    hint="create the topics with `unimeter topics create`")
            by_full_name[full] = name
        # The consumer's metadata only covers topics it was subscribed to; a producer's
        # partitions_for() is the public way to learn a topic's partitions.
        meta = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, client_id=client_id)
        await meta.start()
        try:
            for full in by_full_name:
                for p in sorted(await meta.partitions_for(full)):
                    partitions.append(TopicPartition(full, p))
        finally:
            await meta.stop()
        consumer.assign(partitions)
        stored_at = {tp: view.stored_offset(by_full_name[tp.topic], tp.partition)
                     for tp in partitions}
        # One seek_to_beginning for all partitions the view has nothing of, before the other
        # seeks: each await of it waits for the fetch in flight (up to 500 ms on an idle
        # topic), and one per partition after a seek had started fetching took 24 × 0.5 s
        # (11.5 s measured) at every restart of a worker that had stored ledger offsets.
        fresh = [tp for tp, stored in stored_at.items() if stored is None]
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        for tp, stored in stored_at.items():
            if stored is not None:
                consumer.seek(tp, stored + 1)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0
                   and (view.stored_offset(by_full_name[tp.topic], tp.partition) or -1) + 1
                   < ends[tp]}
        if not pending:
            ready.set()
        log.info("ledger view: following %d partitions, %d to catch up",
                 len(partitions), len(pending))
        while True:
            batches = await consumer.getmany(timeout_ms=poll_ms, max_records=5000)
            applied = 0
            for tp, records in batches.items():
                name = by_full_name[tp.topic]
                for record in records:
                    view.apply(name, record.key, record.value, partition=tp.partition,
                               offset=record.offset)
                    applied += 1
            if pending:
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if not pending:
                    log.info("ledger view caught up: %d entries applied", view.applied)
                    ready.set()
            if applied and on_progress is not None:
                on_progress(applied)
    finally:
        await consumer.stop()
