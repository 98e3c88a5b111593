"""The sink's CPU per reading, Kafka included: what ``unimeter sink`` costs end to end.

``bench/sinks.py`` measures the database side (decoded messages in, rows out). This one adds
everything else the sink process does: a private topic prefix on the shared broker is
pre-filled with N ``readings.raw`` and N ``readings.validated`` envelopes (as the FEP and the
VEE agent produce them, two partitions each), then a :class:`~sinks.runner.SinkRunner` — the
loop ``unimeter sink`` runs, with its consumer settings and garbage-collector tuning — stores
them all in a scratch database, in this process. Measured: CPU seconds (user + system, all
threads: kafka-python's heartbeat thread too) from the runner's start to its last commit,
per reading (one raw + one validated record is one reading, as in ``bench/e2e.py``).

Baseline, same run, same records: a plain kafka-python consumer with the same settings and
one binary COPY of pre-built rows per polled batch (the raw table; the validated table and
its hour parts), one transaction and one offset commit per poll — no envelope decoding, no
row building, no idempotence.

Then the regime ``bench/e2e.py`` runs the sink in: the real ``python -m unimeter sink``
process, fed at a steady 1,000 readings/s (one raw + one validated record each) for 20 s;
its CPU from ``/proc`` from the moment it stored a probe reading (joined, warmed up) until it
stored the last one — per reading, where each batch carries only what arrived since the last
commit, so the per-batch costs (transactions, progress rows, offset commits) weigh more.

Run alone: ``python -m unimeter bench --only sink_process`` (``--quick``: 20,000 readings
pre-filled, 10 s paced).
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench._broker import private_kafka, produce, stop_process
from bench._harness import BenchContext, BenchResult, cpu_seconds, process_cpu_seconds
from bench.sinks import raw_readings, scratch_database, validated_readings
from schemas import codec
from schemas.settings import DatabaseSettings
from sinks.postgres import PostgresSink
from sinks.runner import SinkRunner, tune_garbage_collector
from sinks.settings import SinkSettings
from sinks.stores import RAW_READINGS, RawReadingStore, StoreContext
from sinks.tables import TableSpec
from sinks.validated import CONSUMPTION_INTERVALS, VALIDATED_READINGS, ValidatedReadingStore

TOPICS = ("readings.raw", "readings.validated")
Row = tuple[Any, ...]


def run_sink(kafka: Any, db: DatabaseSettings, settings: SinkSettings) -> tuple[float, Any]:
    """CPU seconds of a :class:`SinkRunner` storing everything on the topics, and its metrics."""
    sink = PostgresSink(db.conninfo("sink"), consumer_group=settings.group_for(kafka),
                        context=StoreContext(fast_path=settings.fast_path),
                        max_batch_records=settings.batch_max_records)
    runner = SinkRunner(sink, kafka, settings)
    cpu = cpu_seconds()
    metrics = runner.run(until_idle_s=1.0)
    return cpu_seconds() - cpu, metrics


def run_baseline(kafka: Any, db: DatabaseSettings, settings: SinkSettings,
                 rows: dict[str, list[tuple[TableSpec, list[Row], int]]], expected: int) -> float:
    """CPU seconds of a plain consumer + one binary COPY per polled batch of pre-built rows.

    ``rows``: topic → (table, its rows, rows per record) — each polled record takes the next
    rows of its topic's tables.
    """
    from kafka import KafkaConsumer

    cursors = {topic: 0 for topic in rows}
    cpu = cpu_seconds()
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap.split(","), group_id=f"bench-base-{uuid.uuid4().hex}",
        enable_auto_commit=False, auto_offset_reset="earliest",
        max_poll_records=settings.poll_max_records, fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024)
    consumer.subscribe([kafka.topic(t) for t in rows])
    seen = 0
    try:
        with psycopg.connect(db.conninfo("sink")) as conn:
            while seen < expected:
                polled = consumer.poll(timeout_ms=200, max_records=settings.poll_max_records)
                if not polled:
                    continue
                with conn.cursor() as cur:
                    for tp, records in polled.items():
                        topic = tp.topic[len(kafka.topic_prefix):]
                        start = cursors[topic]
                        cursors[topic] = start + len(records)
                        for spec, data, per in rows[topic]:
                            with cur.copy(spec.copy_statement(spec.identifier)) as copy:
                                copy.set_types(spec.pg_types)
                                for row in data[start * per:(start + len(records)) * per]:
                                    copy.write_row(row)
                        seen += len(records)
                conn.commit()
                consumer.commit()
    finally:
        consumer.close(autocommit=False)
    return cpu_seconds() - cpu


def count_rows(db: DatabaseSettings, tables: Sequence[str]) -> dict[str, int]:
    with psycopg.connect(db.url, autocommit=True) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
                for t in tables}


def truncate(db: DatabaseSettings, tables: Sequence[str]) -> None:
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(tables)}, ops.sink_progress")
        conn.execute("CHECKPOINT")


async def produce_paced(bootstrap: str, topics: Sequence[str],
                        records: Sequence[Sequence[tuple[bytes, bytes]]], rate: float) -> None:
    """Send ``records[i][k]`` to ``topics[k]`` for each i, ``rate`` i per second, acks=all."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        step = max(int(rate / 20), 1)  # a burst every 50 ms
        started = time.perf_counter()
        futures = []
        for start in range(0, len(records), step):
            for group in records[start:start + step]:
                for topic, (key, value) in zip(topics, group, strict=True):
                    futures.append(await producer.send(topic, value, key=key))
            due = started + (start + step) / rate
            await asyncio.sleep(max(due - time.perf_counter(), 0))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def wait_rows(db: DatabaseSettings, tables: Sequence[str], expected: int, what: str,
              proc: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        stored = count_rows(db, tables)
        if all(v >= expected for v in stored.values()):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the sink exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: stored {stored} of {expected} each")
        time.sleep(0.2)


def run_paced(ctx: BenchContext, tables: Sequence[str], seconds: float, rate: float
              ) -> tuple[float, int]:
    """CPU seconds of a ``unimeter sink`` process over readings fed at ``rate``/s."""
    n = int(seconds * rate)
    raw = raw_readings(n + 1)
    validated = validated_readings(n + 1)
    pairs = [((r.key(), codec.encode(r, producer="fep-1")),
              (v.key(), codec.encode(v, producer="vee"))) for r, v in zip(raw, validated,
                                                                           strict=True)]
    # The probe is the last reading of the data sets (distinct keys from the rest).
    probe, pairs = pairs[-1:], pairs[:-1]
    with private_kafka(ctx.config.kafka) as kafka, scratch_database(ctx, "postgres") as db:
        env = {**os.environ, "UNIMETER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
               "UNIMETER_KAFKA_BOOTSTRAP": kafka.bootstrap,
               "UNIMETER_DATABASE_URL": db.url, "UNIMETER_DATABASE_TIMESCALE": db.timescale,
               "UNIMETER_SINK_GROUP_ID": f"bench-sink-{uuid.uuid4().hex[:6]}",
               "UNIMETER_SINK_TOPICS": ",".join(TOPICS)}
        topics = [kafka.topic(t) for t in TOPICS]
        with (ctx.scratch / "sink.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "unimeter", "sink", "--quiet"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=Path(__file__).resolve().parents[1])
        try:
            asyncio.run(produce_paced(kafka.bootstrap, topics, probe, rate))
            wait_rows(db, tables, 1, "the probe reading was stored", proc)
            ctx.progress(f"`unimeter sink` joined; {n:,} readings at {rate:,.0f}/s")
            cpu = process_cpu_seconds(proc.pid)
            asyncio.run(produce_paced(kafka.bootstrap, topics, pairs, rate))
            wait_rows(db, tables, n + 1, "every paced reading was stored", proc)
            cpu = process_cpu_seconds(proc.pid) - cpu
        finally:
            stop_process(proc)
    return cpu, n


def bench_sink_process(ctx: BenchContext) -> list[BenchResult]:
    n = 20_000 if ctx.quick else 100_000
    raw = raw_readings(n)
    validated = validated_readings(n)
    raw_records = [(m.key(), codec.encode(m, producer="fep-1")) for m in raw]
    validated_records = [(m.key(), codec.encode(m, producer="vee")) for m in validated]
    context = StoreContext()
    raw_rows = [RawReadingStore(context).row(m) for m in raw]
    prepared = [ValidatedReadingStore(context).prepare(m) for m in validated]
    rows = {"readings.raw": [(RAW_READINGS, raw_rows, 1)],
            "readings.validated": [(VALIDATED_READINGS, [p[0] for p in prepared], 1),
                                   (CONSUMPTION_INTERVALS, [r for p in prepared for r in p[1]],
                                    1)]}
    tables = ["data.raw_readings", "data.validated_readings", "data.consumption_intervals"]
    del raw, validated, prepared
    thresholds = gc.get_threshold()
    with private_kafka(ctx.config.kafka) as kafka, scratch_database(ctx, "postgres") as db:
        ctx.progress(f"pre-filling {n:,} readings.raw + {n:,} readings.validated envelopes")
        for topic, records in (("readings.raw", raw_records),
                               ("readings.validated", validated_records)):
            asyncio.run(produce(kafka.bootstrap, kafka.topic(topic), records))
        del raw_records, validated_records
        settings = SinkSettings(topics=",".join(TOPICS), group_id=f"bench-sink-{uuid.uuid4().hex}")
        tune_garbage_collector()  # as `unimeter sink` does; the pre-built rows frozen with it
        try:
            ctx.progress("baseline: plain consumer + one binary COPY per polled batch")
            base_cpu = run_baseline(kafka, db, settings, rows, 2 * n)
            stored = count_rows(db, tables)
            assert stored == dict.fromkeys(tables, n), f"baseline stored {stored}"
            truncate(db, tables)
            ctx.progress("the sink: SinkRunner (PostgresSink) until everything is stored")
            started = time.perf_counter()
            sink_cpu, metrics = run_sink(kafka, db, settings)
            wall = time.perf_counter() - started
            stored = count_rows(db, tables)
            assert stored == dict.fromkeys(tables, n), f"the sink stored {stored}"
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
    seconds, rate = (10.0, 1000.0) if ctx.quick else (20.0, 1000.0)
    ctx.progress("paced: the `unimeter sink` process, readings arriving as they are produced")
    paced_cpu, paced_n = run_paced(ctx, tables, seconds, rate)
    per_reading = sink_cpu / n * 1e6
    baseline = base_cpu / n * 1e6
    return [BenchResult(
        "sinks", "sink process, CPU per reading (raw + validated)", per_reading, "CPU-µs/reading",
        "plain kafka-python consumer + binary COPY per poll", baseline,
        notes=f"{n:,} readings = {2 * n:,} records on 2 partitions each, in-process SinkRunner "
              f"(PostgreSQL); {metrics.rows_written:,} rows in {metrics.commits} commits, "
              f"{wall:.1f} s wall; ratio = sink CPU / baseline CPU (lower is better)",
        extra={"sink_cpu_s": sink_cpu, "baseline_cpu_s": base_cpu, "readings": n}),
        BenchResult(
            "sinks", f"sink process at {rate:,.0f} readings/s, CPU per reading", paced_cpu /
            paced_n * 1e6, "CPU-µs/reading", "the pre-filled run's baseline", baseline,
            notes=f"`python -m unimeter sink` (its own process, /proc user+system) storing "
                  f"{paced_n:,} readings (raw + validated) produced at {rate:,.0f}/s; "
                  "measured from the stored probe to the last reading stored",
            extra={"sink_cpu_s": paced_cpu, "readings": paced_n})]


BENCHMARKS = [bench_sink_process]
