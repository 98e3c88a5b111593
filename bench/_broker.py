"""Benchmarks through the shared broker: private topics, plain produce and consume, and a
``unimeter pipeline`` worker run as the real process.

Strategy: a benchmark that goes through Kafka works under a topic prefix of its own
(``bench.<6 hex>.``) with the whole topic catalog created under it, so it neither reads nor
disturbs what others run on the shared broker, and removes every topic of its prefix when it
ends. Its baseline is the same records produced to a topic of that prefix and consumed back
with no processing in between, in the same run — the ratio to it is what the processing
costs on this broker and machine, whatever else they are doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._harness import BenchContext, process_cpu_seconds

__all__ = ["AgentRun", "baseline_rate", "consume", "pipeline_worker", "private_kafka",
           "produce", "run_agent", "stop_process"]

Records = list[tuple[bytes, bytes]]


async def produce(bootstrap: str, topic: str, messages: Records) -> None:
    """Send ``(key, value)`` records and wait until the broker acknowledged all of them."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int, wait_s: float) -> float:
    """Consume ``count`` records; returns the time the last one arrived."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen = 0
    try:
        async with asyncio.timeout(wait_s):
            while seen < count:
                batch = await consumer.getmany(timeout_ms=500, max_records=10000)
                seen += sum(len(v) for v in batch.values())
    finally:
        await consumer.stop()
    return time.perf_counter()


@contextlib.contextmanager
def private_kafka(kafka: Any, partitions: int = 2) -> Iterator[Any]:
    """``kafka`` (:class:`~schemas.settings.KafkaSettings`) under a prefix of its own, with
    the topic catalog created; every topic of the prefix is deleted afterwards."""
    from schemas.topics import TOPICS
    from unimeter.topics import create_topics, delete_topics

    kafka = kafka.model_copy(update={"topic_prefix": f"bench.{uuid.uuid4().hex[:6]}.",
                                     "default_partitions": partitions})
    report = create_topics(kafka, TOPICS)
    try:
        yield kafka
    finally:
        try:
            from kafka import KafkaAdminClient

            admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
            mine = [t for t in admin.list_topics() if t.startswith(kafka.topic_prefix)]
            admin.close()
            delete_topics(kafka, mine)
        except Exception:  # cleanup is best effort
            delete_topics(kafka, report.created)


def baseline_rate(kafka: Any, records: Records, what: str) -> float:
    """Records per second (wall clock) to produce ``records`` to a fresh topic of the private
    prefix and consume them all back — the broker's share of any path through it."""
    from schemas.topics import TopicSpec
    from unimeter.topics import create_topics

    name = "bench.baseline"
    create_topics(kafka, (TopicSpec(name, "as produced", f"baseline of {what}", ()),))
    start = time.perf_counter()
    asyncio.run(produce(kafka.bootstrap, kafka.topic(name), records))
    end = asyncio.run(consume(kafka.bootstrap, kafka.topic(name), len(records), 300))
    return len(records) / (end - start)


@contextlib.contextmanager
def pipeline_worker(kafka: Any, agents: list[str], scratch: Path,
                    store: str = "rocksdb://") -> Iterator[subprocess.Popen[bytes]]:
    """``python -m unimeter pipeline`` with ``agents`` on the private prefix (log in
    ``scratch/pipeline.log``); stopped with SIGTERM (then killed) afterwards."""
    agent_list = ", ".join(f'"{agent}"' for agent in agents)
    env = {**os.environ, "UNIMETER_KAFKA_BOOTSTRAP": kafka.bootstrap,
           "UNIMETER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
           "UNIMETER_KAFKA_DEFAULT_PARTITIONS": str(kafka.default_partitions),
           "UNIMETER_PIPELINE_STORE": store,
           "UNIMETER_PIPELINE_DATA_DIR": str(scratch / "pipeline"),
           "UNIMETER_PIPELINE_AGENTS": f"[{agent_list}]",
           "UNIMETER_PIPELINE_LOG_LEVEL": "warning"}
    with (scratch / "pipeline.log").open("ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "unimeter", "pipeline"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        yield worker
    finally:
        stop_process(worker)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Stop a benchmark's process cleanly (SIGTERM), killing it if it has not ended within
    ``timeout`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class AgentRun:
    """What :func:`run_agent` measured."""

    rate: float
    """Input records per second (wall clock) from the first send to the last output."""
    baseline: float
    """The same records produced and consumed back, no processing (wall clock)."""
    worker_cpu_s: float
    """CPU seconds (user + system) the worker spent over the measured window."""


def run_agent(ctx: BenchContext, *, agents: list[str], ledger: Mapping[str, Records],
              warm: Records, records: Records, input_topic: str, output_topic: str,
              outputs: int, what: str) -> AgentRun:
    """Records through a real ``unimeter pipeline`` worker on private topics.

    The baseline runs first; then ``ledger`` (catalog topic → records) is published, the
    worker started, and ``warm`` (records giving one output) sent through it until that output
    arrives — the worker has joined its group and read the ledger before the clock starts.
    Measured: ``records`` sent to ``input_topic`` until ``output_topic`` holds ``outputs``
    records after the warm-up's.
    """
    with private_kafka(ctx.config.kafka) as kafka:
        ctx.progress(f"broker baseline: {len(records):,} records produced and consumed")
        base = baseline_rate(kafka, records, what)
        for topic, entries in ledger.items():
            asyncio.run(produce(kafka.bootstrap, kafka.topic(topic), entries))
        with pipeline_worker(kafka, agents, ctx.scratch) as worker:
            asyncio.run(produce(kafka.bootstrap, kafka.topic(input_topic), warm))
            asyncio.run(consume(kafka.bootstrap, kafka.topic(output_topic), 1, 180))
            ctx.progress(f"agent: {len(records):,} records through `unimeter pipeline`")
            start, cpu = time.perf_counter(), process_cpu_seconds(worker.pid)
            asyncio.run(produce(kafka.bootstrap, kafka.topic(input_topic), records))
            end = asyncio.run(consume(kafka.bootstrap, kafka.topic(output_topic),
                                      outputs + 1, 600))
            cpu = process_cpu_seconds(worker.pid) - cpu
    return AgentRun(rate=len(records) / (end - start), baseline=base, worker_cpu_s=cpu)
