"""The sink process: consume the stored topics, write batches, commit after the database.

Strategy: one Kafka consumer (kafka-python, manual commits) in a consumer group; several sink
processes in the same group share the partitions. The loop:

1. ``poll`` records; decode each envelope (a record that does not decode goes to
   ``dlq.sink`` with the reason and its original bytes) and add it to its partition's batch;
2. when a batch is full or the commit interval has passed, **checkpoint**: flush every
   partition with pending records (one database transaction each, see
   :mod:`sinks.postgres`), publish its rejected records to ``dlq.sink`` and wait for their
   acknowledgement, then commit the partitions' offsets — only offsets whose rows are durable;
3. on :class:`~sinks.errors.SinkBackpressureError` (the database is away) every pending batch is
   dropped, each partition is rewound to where it was last committed, and consumption is
   paused for the back-off; polling goes on (the group membership stays alive) and the
   records are read again once it resumes. Nothing is committed meanwhile, so nothing is
   lost.

On a rebalance, the partitions being revoked are checkpointed first (or dropped, if the
database is away) so the next owner starts exactly where the data is durable.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kafka import ConsumerRebalanceListener
from kafka.errors import CommitFailedError

from schemas import codec
from schemas.errors import UnimeterError
from schemas.messages import DeadLetter, Message
from schemas.settings import KafkaSettings
from schemas.topics import topic_spec
from sinks.base import BatchingSink, Rejected, SinkRecord, TopicPartition
from sinks.errors import SinkBackpressureError, SinkError
from sinks.metrics import SinkMetrics
from sinks.settings import SinkSettings

__all__ = ["SinkRunner", "crc_is_native", "tune_garbage_collector"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]


def tune_garbage_collector() -> None:
    """Process-wide GC settings of a sink process, called once after start-up.

    A sink allocates a few small objects per row and keeps whole batches alive; with the
    default thresholds a full collection walks every live message again and again (measured:
    up to half the write time). Start-up objects are frozen out of collection, and young
    collections run every 20,000 allocations instead of 700. (While it runs, the runner
    collects between batches instead: see :meth:`SinkRunner.run`.)
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


#: Fetches: the broker answers at this much data or after this long (see ``_connect``).
_FETCH_MIN_BYTES = 1024 * 1024
_FETCH_MAX_WAIT_MS = 500
#: One attempt to reach the bootstrap servers at start (kafka-python's default is 30 s, during
#: which a stop request went unanswered).
_BOOTSTRAP_TIMEOUT_MS = 5_000

#: While a runner runs, a young collection after every checkpoint, a full one every this many.
_FULL_COLLECTION_EVERY = 50
#: ... and one whenever this many tracked objects were allocated without a checkpoint (the
#: database away, batches filling up): the cost of a collection, never unbounded memory.
_COLLECT_AFTER_ALLOCATIONS = 500_000


def crc_is_native() -> bool:
    """True when kafka-python checks record-batch CRCs with the C ``crc32c`` module.

    Without it kafka-python falls back to a pure-Python CRC-32C: measured ≈200 µs per 700-byte
    record, 80 % of the sink's CPU (``bench/sink_process.py``); with it, 0.2 µs.
    """
    from kafka.record import util

    return util.crc32c_c is not None


class SinkRunner:
    """Runs a :class:`~sinks.base.BatchingSink` over the stored topics until told to stop."""

    def __init__(self, sink: BatchingSink, kafka: KafkaSettings, settings: SinkSettings, *,
                 on_progress: ProgressCallback | None = None) -> None:
        self.sink = sink
        self.kafka = kafka
        self.settings = settings
        self.on_progress = on_progress
        self.metrics = SinkMetrics()
        self.topics = [kafka.topic(name) for name in settings.topic_names()]
        self._consumer: Any = None
        self._producer: Any = None
        #: Next offset to read per partition (everything before is batched or dead-lettered).
        self._position: dict[TopicPartition, int] = {}
        #: Where to rewind a partition to: its last committed offset, or its first record.
        self._restart: dict[TopicPartition, int] = {}
        self._uncommitted: set[TopicPartition] = set()
        self._dead: dict[TopicPartition, list[Rejected]] = {}
        self._paused_until: float | None = None
        #: Set once the group gave this consumer its partitions (perhaps none).
        self._joined = False
        self._last_checkpoint = time.monotonic()
        self._last_report = time.monotonic()
        self._decoders: dict[str, Callable[[bytes], Message]] = {}
        self._collections = 0

    # ------------------------------------------------------------------ lifecycle

    def _connect_waiting(self, stop: threading.Event) -> bool:
        """Connect, retrying with the back-off while Kafka cannot be reached, for at most
        ``kafka_wait_s``; False if ``stop`` was set meanwhile.

        A sink started before the broker (a host booting, ``docker compose up``, the broker
        restarting) waits for it instead of exiting for its supervisor to start it again.
        """
        if not crc_is_native():
            log.warning("the crc32c module is missing: kafka-python checks every record's CRC "
                        "in pure Python, several times the sink's own CPU per record "
                        "(pip install crc32c)")
        deadline = time.monotonic() + self.settings.kafka_wait_s
        delay = self.settings.retry_initial_ms / 1000
        attempts = 0
        while not stop.is_set():
            attempts += 1
            try:
                self._connect(bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS)
            except SinkError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SinkError(f"{exc.message} (gave up after {attempts} attempts in "
                                    f"{self.settings.kafka_wait_s:g} s)",
                                    hint=exc.hint) from None
                wait = min(delay, left)
                log.warning("%s; trying again in %.1f s (giving up in %.0f s)", exc, wait, left)
                self.metrics.kafka_connect_failures += 1
                self.metrics.last_error = exc.message
                stop.wait(wait)
                delay = min(delay * 2, self.settings.retry_max_ms / 1000)
                continue
            if attempts > 1:
                log.info("reached Kafka at %s after %d attempts", self.kafka.bootstrap,
                         attempts)
            return True
        return False

    def _connect(self, *, bootstrap_timeout_ms: int = 30_000) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.kafka.bootstrap.split(","),
                group_id=self.settings.group_for(self.kafka),
                client_id=f"{self.kafka.client_id}-sink",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # kafka-python's default session (45 s) kept a killed sink's partitions, and a
                # restarted sink out of work, for that long.
                session_timeout_ms=self.settings.session_timeout_ms,
                heartbeat_interval_ms=self.settings.heartbeat_interval_ms,
                max_poll_records=self.settings.poll_max_records,
                fetch_max_bytes=64 * 1024 * 1024,
                max_partition_fetch_bytes=8 * 1024 * 1024,
                # The broker answers a fetch once 1 MiB is there or after 500 ms, not at the
                # first record: at a steady 1,000 readings/s a fetch per burst cost more CPU
                # (round trips, the client's thread hand-offs) than storing the readings did.
                # The batches wait for the commit interval (1 s) anyway.
                fetch_min_bytes=_FETCH_MIN_BYTES,
                fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
                bootstrap_timeout_ms=bootstrap_timeout_ms,
            )
        except KafkaError as exc:
            raise SinkError(f"cannot reach Kafka at {self.kafka.bootstrap}: {exc}",
                            hint="start it with `unimeter services up` or correct "
                                 "UNIMETER_KAFKA_BOOTSTRAP") from None
        self._consumer.subscribe(self.topics, listener=_Rebalance(self))

    def run(self, stop: threading.Event | None = None, *,
            until_idle_s: float | None = None) -> SinkMetrics:
        """Consume until ``stop`` is set, or — with ``until_idle_s`` — until the consumer got its
        partitions, read each to its end, and nothing more arrived for ``until_idle_s`` s."""
        stop = stop or threading.Event()
        if not self._connect_waiting(stop):
            return self.metrics
        last_record_at = time.monotonic()
        # Garbage is collected between batches, not by allocation counts: a young collection
        # while a batch is being read walks every live record of it again (measured: 12 % of
        # the sink's CPU at 20,000-record batches, bench/sink_process.py); once its partition
        # is flushed and committed the batch is gone, and a collection is cheap.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            while not stop.is_set():
                self._maybe_resume()
                polled = self._consumer.poll(timeout_ms=200,
                                             max_records=self.settings.poll_max_records)
                if not self._joined:
                    # Still joining the group (slow on a busy broker): not idle yet.
                    last_record_at = time.monotonic()
                for kafka_tp, records in polled.items():
                    if records:
                        last_record_at = time.monotonic()
                        self._accept(TopicPartition(kafka_tp.topic, kafka_tp.partition),
                                     records)
                now = time.monotonic()
                due = (now - self._last_checkpoint) * 1000 >= self.settings.commit_interval_ms
                if self.sink.full() or (due and self._has_work()):
                    self.checkpoint()
                    self._collect_garbage()
                elif due:
                    self._last_checkpoint = now
                if gc.get_count()[0] >= _COLLECT_AFTER_ALLOCATIONS:
                    self._collect_garbage()
                self._report()
                if (until_idle_s is not None and self._joined and not self._has_work()
                        and self._paused_until is None
                        and time.monotonic() - last_record_at >= until_idle_s
                        and self._caught_up()):
                    break
            if self._paused_until is None:
                self.checkpoint()
        finally:
            if gc_was_enabled:
                gc.enable()
            self.close()
        self._report(force=True)
        return self.metrics

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # closing must never mask the real outcome
                log.debug("closing the consumer failed", exc_info=True)
            self._consumer = None
        if self._producer is not None:
            try:
                self._producer.close(timeout=10)
            except Exception:
                log.debug("closing the dead-letter producer failed", exc_info=True)
            self._producer = None
        self.sink.close()

    # ------------------------------------------------------------------ records

    def _accept(self, tp: TopicPartition, records: list[Any]) -> None:
        """Decode the records of one partition (in offset order) into its batch; those that
        do not decode wait for the checkpoint in ``_dead``."""
        self.metrics.records_in += len(records)
        self._restart.setdefault(tp, records[0].offset)
        self._position[tp] = records[-1].offset + 1
        self._uncommitted.add(tp)
        decode = self._decoder(tp.topic)
        topic, partition = tp
        accepted = []
        for rec in records:
            value: bytes = rec.value if rec.value is not None else b""
            try:
                message = decode(value)
            except UnimeterError as exc:
                self.metrics.dead_lettered += 1
                placeholder = SinkRecord(topic, partition, rec.offset, rec.key, value,
                                         DeadLetter(stage="sink", reason={}, ts=_now(),
                                                    value=b""))
                self._dead.setdefault(tp, []).append(Rejected(placeholder, exc.to_dict()))
                continue
            accepted.append(SinkRecord(topic, partition, rec.offset, rec.key, value, message))
        self.sink.add_many(tp, accepted)

    def _decoder(self, topic: str) -> Callable[[bytes], Message]:
        """The envelope decoder of a topic: one pass for a topic of one message type."""
        decoder = self._decoders.get(topic)
        if decoder is None:
            types: tuple[type[Message], ...] = ()
            name = topic.removeprefix(self.kafka.topic_prefix)
            with contextlib.suppress(KeyError):
                types = topic_spec(name).payloads
            # one pass for the topic's first (main) type; other types take two
            decoder = codec.decoder_for(types[0]) if types else _generic_decode
            self._decoders[topic] = decoder
        return decoder

    def _collect_garbage(self) -> None:
        self._collections += 1
        gc.collect(2 if self._collections % _FULL_COLLECTION_EVERY == 0 else 1)

    def _has_work(self) -> bool:
        return bool(self._uncommitted or self.sink.pending())

    def _caught_up(self) -> bool:
        """Every assigned partition read up to its high-water mark (as last fetched)."""
        for kafka_tp in self._consumer.assignment():
            high = self._consumer.highwater(kafka_tp)
            if high is None or self._consumer.position(kafka_tp) < high:
                return False
        return True

    # ------------------------------------------------------------------ checkpoint

    def checkpoint(self, only: set[TopicPartition] | None = None) -> None:
        """Write pending batches, dead-letter rejects, then commit the durable offsets."""
        from kafka.structs import OffsetAndMetadata
        from kafka.structs import TopicPartition as KafkaTP

        self._last_checkpoint = time.monotonic()
        targets = set(self._uncommitted) | set(self.sink.pending())
        if only is not None:
            targets &= only
        if not targets:
            return
        durable: list[TopicPartition] = []
        for tp in sorted(targets):
            try:
                flushed = self.sink.flush(tp)
            except SinkBackpressureError as exc:
                self._backpressure(exc, targets)
                return
            if flushed is not None:
                _batch, result = flushed
                self.metrics.add(result)
                self.metrics.db_seconds += getattr(self.sink, "last_write_s", 0.0)
                if result.rejected:
                    self._dead.setdefault(tp, []).extend(result.rejected)
            durable.append(tp)
        if self.metrics.database_down_since is not None:
            log.info("database is back after %.1f s",
                     time.monotonic() - self.metrics.database_down_since)
            self.metrics.database_down_since = None
        self._publish_dead_letters(durable)
        offsets = {KafkaTP(tp.topic, tp.partition): OffsetAndMetadata(self._position[tp], "", -1)
                   for tp in durable if tp in self._position}
        if offsets:
            try:
                self._consumer.commit(offsets=offsets)
            except CommitFailedError as exc:
                # The group rebalanced meanwhile: the rows are durable, and whoever owns the
                # partitions now re-reads them from the last commit (absorbed as duplicates).
                log.warning("offset commit refused after a rebalance: %s", exc)
                return
            self.metrics.commits += 1
        for tp in durable:
            self._uncommitted.discard(tp)
            if tp in self._position:
                self._restart[tp] = self._position[tp]
        self._update_lag()

    def _backpressure(self, exc: SinkBackpressureError, targets: set[TopicPartition]) -> None:
        """Drop every pending batch, rewind to the committed offsets and pause."""
        self.metrics.backpressure_events += 1
        self.metrics.last_error = exc.message
        if self.metrics.database_down_since is None:
            self.metrics.database_down_since = time.monotonic()
        log.warning("%s", exc)
        for tp in set(targets) | set(self.sink.pending()) | set(self._uncommitted):
            self._rewind(tp)
        assignment = list(self._consumer.assignment())
        if assignment:
            self._consumer.pause(*assignment)
        self._paused_until = time.monotonic() + exc.retry_after

    def _rewind(self, tp: TopicPartition) -> None:
        from kafka.structs import TopicPartition as KafkaTP

        self.sink.drop(tp)
        self._dead.pop(tp, None)
        self._uncommitted.discard(tp)
        restart = self._restart.get(tp)
        if restart is not None:
            self._position[tp] = restart
            with contextlib.suppress(ValueError):  # no longer assigned: nothing to rewind
                self._consumer.seek(KafkaTP(tp.topic, tp.partition), restart)

    def _maybe_resume(self) -> None:
        if self._paused_until is not None and time.monotonic() >= self._paused_until:
            self._paused_until = None
            paused = list(self._consumer.paused())
            if paused:
                self._consumer.resume(*paused)

    def _publish_dead_letters(self, durable: list[TopicPartition]) -> None:
        rejected = [r for tp in durable for r in self._dead.pop(tp, [])]
        if not rejected:
            return
        producer = self._dlq_producer()
        topic = self.kafka.topic("dlq.sink")
        futures = []
        for item in rejected:
            rec = item.record
            letter = DeadLetter(stage="sink", reason=_scalars(item.reason), ts=_now(),
                                value=rec.value, key_bytes=rec.key, source_topic=rec.topic,
                                partition=rec.partition, offset=rec.offset)
            futures.append(producer.send(topic, key=rec.key,
                                         value=codec.encode(letter,
                                                            producer=self.settings.producer)))
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)  # raises if Kafka did not take it: no commit then
        log.warning("%d record(s) sent to %s", len(rejected), topic)

    def _dlq_producer(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(bootstrap_servers=self.kafka.bootstrap.split(","),
                                           client_id=f"{self.kafka.client_id}-sink-dlq",
                                           acks="all", linger_ms=5)
        return self._producer

    # ------------------------------------------------------------------ metrics

    def _update_lag(self) -> None:
        from kafka.structs import TopicPartition as KafkaTP

        for tp, position in self._position.items():
            high = self._consumer.highwater(KafkaTP(tp.topic, tp.partition))
            if high is not None:
                lag = max(high - position, 0)
                self.metrics.lag[tp] = lag
                lags = getattr(self.sink, "lag", None)
                if isinstance(lags, dict):
                    lags[tp] = lag

    def _report(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self.settings.metrics_interval_s:
            return
        self._last_report = now
        snapshot = self.metrics.snapshot()
        log.info("sink: %(rows_per_s).0f rows/s, lag %(lag)d, absorbed %(duplicates_absorbed)d,"
                 " corrections %(corrections)d, dead-lettered %(dead_lettered)d", snapshot)
        if self.on_progress is not None:
            self.on_progress(snapshot)

    # ------------------------------------------------------------------ rebalance

    # kafka-python runs these callbacks on its network thread, where no blocking client call
    # (commit, committed) is allowed: a revoked partition's pending batch is simply dropped
    # (the next owner re-reads it from the last commit, and the database absorbs what was
    # already stored), and a new partition's rewind point is its first record.

    def _revoked(self, revoked: list[Any]) -> None:
        for kafka_tp in revoked:
            tp = TopicPartition(kafka_tp.topic, kafka_tp.partition)
            self.sink.drop(tp)
            self._dead.pop(tp, None)
            self._uncommitted.discard(tp)
            self._position.pop(tp, None)
            self._restart.pop(tp, None)
            self.metrics.lag.pop(tp, None)

    def _assigned(self, assigned: list[Any]) -> None:
        self._joined = True
        if self._paused_until is not None and assigned:
            self._consumer.pause(*assigned)


class _Rebalance(ConsumerRebalanceListener):
    """kafka-python's rebalance listener, forwarding to the runner."""

    def __init__(self, runner: SinkRunner) -> None:
        self.runner = runner

    def on_partitions_revoked(self, revoked: list[Any]) -> None:
        self.runner._revoked(revoked)

    def on_partitions_assigned(self, assigned: list[Any]) -> None:
        self.runner._assigned(assigned)


def _generic_decode(data: bytes) -> Message:
    return codec.decode(data)[1]


def _now() -> datetime:
    return datetime.now(UTC)


def _scalars(reason: dict[str, Any]) -> dict[str, str | int | float | bool | None]:
    return {k: v if isinstance(v, str | int | float | bool) or v is None else str(v)
            for k, v in reason.items()}
