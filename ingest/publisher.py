"""Kafka publishing for the FEP: batched, idempotent, acks=all, with the spool as fallback.

Strategy: callers hand over *units* — the records one device frame produced (its
``frames.raw`` record, its readings, its events) — and await :meth:`Publisher.publish`, which
returns only when the unit is durable: acknowledged by Kafka (``"kafka"``) or fsynced in the
local spool (``"spool"``). Only then does a session acknowledge the device. If neither is
possible (Kafka silent and the spool full) it raises :class:`~ingest.errors.SpoolFullError`
and the device is not acknowledged.

Two modes:

* **direct** — a flusher collects units for ``publish_linger_ms`` (or until
  ``publish_max_records``), groups their records per topic-partition into aiokafka
  ``BatchBuilder``\\ s (``create_batch``/``send_batch``: about four times the throughput of
  per-message ``send``) and waits for every batch's ack. Partitions are computed with
  Kafka's default murmur2 partitioner, so keys land where any Kafka client would put them.
  Up to ``publish_max_inflight`` rounds wait for acks at once. A round that fails or is not
  acknowledged within ``kafka_ack_timeout_s`` is written to the spool instead (those
  devices are acknowledged from the spool) and the publisher switches to spool mode.
* **spool** — new units go straight to the spool (one write and one fsync per round). A
  drainer sends the oldest records to Kafka and forgets them once acknowledged. When the
  spool is empty the publisher returns to direct mode. Every failure marks the producer
  suspect and the drainer recreates it before the next try: aiokafka's idempotent producer
  can stay stuck after an outage, and a fatal error (fenced, out-of-order sequence) poisons
  it for good.

Spool operations run in one worker thread, in submission order, so a unit spooled before
the drainer looks is always seen by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ingest.errors import PublishError, SpoolFullError
from ingest.spool import Spool, SpoolRecord
from schemas import codec
from schemas.messages import Message
from schemas.settings import KafkaSettings

__all__ = ["Durability", "OutRecord", "Publisher", "PublisherStats", "UnitCallback", "record_of"]

log = logging.getLogger(__name__)

Durability = Literal["kafka", "spool"]
OutRecord = SpoolRecord  # (topic, key, value): the same triple in memory and on disk


def record_of(kafka: KafkaSettings, topic: str, message: Message, *, producer: str,
              message_id: str | None = None, event_time: datetime | None = None) -> OutRecord:
    """An envelope-encoded record of ``message`` for catalog topic ``topic``, keyed per §3."""
    return OutRecord(kafka.topic(topic), message.key(),
                     codec.encode(message, producer=producer, message_id=message_id,
                                  event_time=event_time))


#: Told how a unit ended: ``(durability, None)`` or ``(None, error)``; called on the loop.
UnitCallback = Callable[["Durability | None", "BaseException | None"], None]


@dataclass(slots=True)
class _Unit:
    """Records made durable together, and who to tell: a future (``submit``) or a plain
    callback (``submit_callback``, no future and no task wake-up per unit)."""

    records: Sequence[OutRecord]
    future: asyncio.Future[Durability] | None = None
    callback: UnitCallback | None = None
    settled: bool = False

    def resolve(self, durability: Durability) -> None:
        self._settle(durability, None)

    def reject(self, exc: BaseException) -> None:
        self._settle(None, exc)

    def _settle(self, durability: Durability | None, exc: BaseException | None) -> None:
        """Tell the waiter (future or callback) once: durable, or why not."""
        if self.settled:
            return
        self.settled = True
        if self.future is not None:
            if not self.future.done():
                if exc is not None:
                    self.future.set_exception(exc)
                elif durability is not None:
                    self.future.set_result(durability)
        elif self.callback is not None:
            _call(self.callback, durability, exc)


def _call(callback: UnitCallback, durability: Durability | None,
          error: BaseException | None) -> None:
    """A callback's own failure must not keep the other units of its round unsettled."""
    try:
        callback(durability, error)
    except Exception:
        log.exception("publisher: a unit's callback failed")


@dataclass
class PublisherStats:
    mode: str = "direct"
    units: int = 0
    records_kafka: int = 0
    records_spooled: int = 0
    records_drained: int = 0
    rounds: int = 0
    round_failures: int = 0
    producer_restarts: int = 0
    full_rejections: int = 0
    loose_failed: int = 0
    last_error: str = ""
    spool_bytes: int = 0
    pending_units: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


ProducerFactory = Callable[[], Any]


class Publisher:
    """The one Kafka producer of an FEP process, with its spool."""

    def __init__(self, kafka: KafkaSettings, *, spool: Spool, client_id: str,
                 ack_timeout_s: float = 5.0, linger_ms: float = 10.0, max_records: int = 20_000,
                 max_inflight: int = 4, producer_factory: ProducerFactory | None = None) -> None:
        self.kafka = kafka
        self.spool = spool
        self.client_id = client_id
        self.ack_timeout_s = ack_timeout_s
        self.linger_s = linger_ms / 1000.0
        self.max_records = max_records
        self.stats = PublisherStats()
        self._factory = producer_factory or self._default_factory
        self._producer: Any = None
        self._suspect = False
        self._partitions: dict[str, list[int]] = {}
        self._partition_cache: dict[tuple[str, bytes], int] = {}
        self._queue: list[_Unit] = []
        self._queued_records = 0
        #: the open unit of loose records (``submit_loose``), until the flusher takes it
        self._loose: list[OutRecord] | None = None
        self._wakeup = asyncio.Event()
        self._drain_wakeup = asyncio.Event()
        self._inflight = asyncio.Semaphore(max_inflight)
        self._rounds: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._mode: Literal["direct", "spool"] = "direct"
        #: units taken off the queue and being written to the spool (not in it yet)
        self._spooling = 0
        self._closing = False
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    def _default_factory(self) -> Any:
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(
            bootstrap_servers=self.kafka.bootstrap, client_id=self.client_id,
            acks="all", enable_idempotence=True, linger_ms=0,
            max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024,
            request_timeout_ms=max(int(self.ack_timeout_s * 4000), 10_000),
            retry_backoff_ms=200, metadata_max_age_ms=60_000,
        )

    async def start(self) -> None:
        """Open the spool; connect to Kafka (or start in spool mode if it is unreachable)."""
        await self._io_call(self.spool.open)
        if not self.spool.empty:
            self._set_mode("spool", "records left in the spool by a previous run")
        try:
            await self._ensure_producer()
        except Exception as exc:
            self._set_mode("spool", f"Kafka unreachable at start-up: {exc!r}")
        self._tasks = [asyncio.create_task(self._flusher(), name="publisher-flusher"),
                       asyncio.create_task(self._drainer(), name="publisher-drainer")]

    async def stop(self) -> None:
        """Make everything queued durable (Kafka or spool), then close."""
        self._closing = True
        self._stopping.set()
        self._wakeup.set()
        self._drain_wakeup.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=self.ack_timeout_s * 2 + 5)
        if self._rounds:
            await asyncio.gather(*self._rounds, return_exceptions=True)
        if self._queue:  # whatever the flusher did not take: spool it
            units, self._queue = self._queue, []
            await self._spool_units(units)
        await self._close_producer()
        await self._io_call(self.spool.close)
        self._io.shutdown(wait=True)

    # ------------------------------------------------------------------ API

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def accepting(self) -> bool:
        """False while Kafka is silent and the spool is full: do not acknowledge devices."""
        return self._mode == "direct" or self.spool.free_bytes() > 0

    def submit(self, records: Sequence[OutRecord]) -> asyncio.Future[Durability]:
        """Queue a unit; the future resolves when it is durable (or fails with PublishError)."""
        if self._closing:
            raise PublishError("the publisher is shutting down", hint="retry on another FEP")
        future: asyncio.Future[Durability] = asyncio.get_running_loop().create_future()
        if not records:
            future.set_result("kafka")
            return future
        self._enqueue(_Unit(records, future))
        return future

    def submit_callback(self, records: Sequence[OutRecord], callback: UnitCallback) -> None:
        """Queue a unit and call ``callback(durability, error)`` once it is durable or failed.

        The same guarantees as :meth:`submit`, without an asyncio future: under load a
        future per device frame (and the task wake-ups awaiting it) costs more than
        publishing the frame's records.
        """
        if self._closing:
            raise PublishError("the publisher is shutting down", hint="retry on another FEP")
        if not records:
            callback("kafka", None)
            return
        self._enqueue(_Unit(records, callback=callback))

    def submit_loose(self, records: Sequence[OutRecord]) -> None:
        """Queue records nobody waits for (frames out, events, alerts): they join the next
        round as one unit with the other loose records of this tick. Durability applies as
        for every unit (Kafka or the spool); a failure is counted in ``stats.loose_failed``.
        """
        if self._closing:
            raise PublishError("the publisher is shutting down", hint="retry on another FEP")
        if not records:
            return
        if self._loose is None:
            self._loose = []
            self._enqueue(_Unit(self._loose, callback=self._loose_done))
        self._loose.extend(records)
        self._queued_records += len(records)

    def _loose_done(self, durability: Durability | None, error: BaseException | None) -> None:
        if error is not None:
            self.stats.loose_failed += 1

    def _enqueue(self, unit: _Unit) -> None:
        self._queue.append(unit)
        self._queued_records += len(unit.records)
        self.stats.units += 1
        if not self._wakeup.is_set():
            self._wakeup.set()

    async def publish(self, records: Sequence[OutRecord]) -> Durability:
        """Queue a unit and wait until it is durable."""
        return await self.submit(records)

    async def publish_messages(self, items: Sequence[tuple[str, Message]], *, producer: str
                               ) -> Durability:
        """Encode ``(catalog topic, message)`` pairs and publish them as one unit."""
        return await self.publish([record_of(self.kafka, t, m, producer=producer)
                                   for t, m in items])

    # ------------------------------------------------------------------ flusher

    async def _flusher(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.linger_s and self._queued_records < self.max_records and not self._closing:
                await asyncio.sleep(self.linger_s)
            units = self._take_units()
            if self._mode == "spool":
                await self._spool_units(units)
                self._drain_wakeup.set()
                continue
            await self._inflight.acquire()
            task = asyncio.create_task(self._direct_round(units))
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)

    def _take_units(self) -> list[_Unit]:
        taken, count = 0, 0
        for unit in self._queue:
            if count and count + len(unit.records) > self.max_records:
                break
            count += len(unit.records)
            taken += 1
        units, self._queue = self._queue[:taken], self._queue[taken:]
        self._queued_records -= count
        if self._loose is not None and any(u.records is self._loose for u in units):
            self._loose = None  # taken: later loose records open a new unit
        self.stats.pending_units = len(self._queue)
        return units

    async def _direct_round(self, units: list[_Unit]) -> None:
        try:
            records = [r for u in units for r in u.records]
            try:
                await asyncio.wait_for(self._send(records), timeout=self.ack_timeout_s)
            except Exception as exc:
                self.stats.round_failures += 1
                self.stats.last_error = repr(exc) or type(exc).__name__
                self._suspect = True
                self._set_mode("spool", f"Kafka did not acknowledge a round: {exc!r}")
                await self._spool_units(units)
                self._drain_wakeup.set()
                return
            self.stats.rounds += 1
            self.stats.records_kafka += len(records)
            for unit in units:
                unit.resolve("kafka")
        finally:
            self._inflight.release()

    async def _spool_units(self, units: list[_Unit]) -> None:
        if not units:
            return
        # Counted from before the first await: the drainer must not find the spool and the
        # queue empty and return to direct mode while these are on their way to the disk.
        self._spooling += 1
        try:
            await self._spool_units_now(units)
        finally:
            self._spooling -= 1

    async def _spool_units_now(self, units: list[_Unit]) -> None:
        records = [r for u in units for r in u.records]
        try:
            await self._io_call(self.spool.append, records)
        except SpoolFullError as exc:
            self.stats.full_rejections += len(units)
            # Try unit by unit: smaller units may still fit.
            for unit in units:
                try:
                    await self._io_call(self.spool.append, list(unit.records))
                except SpoolFullError:
                    unit.reject(exc)
                    continue
                except OSError as os_exc:
                    self._fail(unit, os_exc)
                    continue
                self.stats.records_spooled += len(unit.records)
                unit.resolve("spool")
            return
        except OSError as exc:
            for unit in units:
                self._fail(unit, exc)
            return
        self.stats.records_spooled += len(records)
        self.stats.spool_bytes = self.spool.stats.bytes
        for unit in units:
            unit.resolve("spool")

    @staticmethod
    def _fail(unit: _Unit, exc: OSError) -> None:
        unit.reject(PublishError(f"cannot write the spool: {exc.strerror or exc}",
                                 hint="check the disk of UNIMETER_FEP_SPOOL_DIR"))

    # ------------------------------------------------------------------ drainer

    async def _drainer(self) -> None:
        backoff = 0.2
        while not self._closing:
            if self._mode == "direct":
                self._drain_wakeup.clear()
                await self._drain_wakeup.wait()
                continue
            try:
                await self._ensure_producer()
                records, position = await self._io_call(self.spool.read_batch, self.max_records)
                if not records:
                    # Queued units are about to be spooled, taken ones are being written
                    # (the read may have run before their write): look again soon.
                    # Returning to direct mode now would strand them in the spool.
                    if self._queue or self._spooling:
                        await asyncio.sleep(self.linger_s or 0.001)
                    else:
                        self._set_mode("direct", "spool drained")
                    continue
                await asyncio.wait_for(self._send(records), timeout=self.ack_timeout_s * 2)
                await self._io_call(self.spool.commit, position, len(records))
                self.stats.records_drained += len(records)
                self.stats.spool_bytes = self.spool.stats.bytes
                backoff = 0.2
            except Exception as exc:
                self._suspect = True
                self.stats.last_error = repr(exc) or type(exc).__name__
                log.info("spool drain waiting for Kafka: %r (retry in %.1fs)", exc, backoff)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                backoff = min(backoff * 2, 5.0)

    # ------------------------------------------------------------------ Kafka

    async def _ensure_producer(self) -> None:
        if self._producer is not None and not self._suspect:
            return
        if self._producer is not None:
            await self._close_producer()
            self.stats.producer_restarts += 1
        producer = self._factory()
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout=2)
            raise
        self._producer, self._suspect = producer, False
        self._partitions.clear()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # stop() flushes; a dead broker would make it wait for the request timeout.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout=2)

    async def _partitions_of(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            found = await self._producer.partitions_for(topic)
            if not found:
                raise PublishError(f"topic '{topic}' has no partitions",
                                   hint="create the topics: `unimeter topics create`")
            parts = sorted(found)
            self._partitions[topic] = parts
        return parts

    def _partition(self, topic: str, key: bytes | None, parts: list[int]) -> int:
        if key is None:
            return parts[0]
        cache_key = (topic, key)
        part = self._partition_cache.get(cache_key)
        if part is None:
            from aiokafka.partitioner import murmur2

            part = parts[(murmur2(key) & 0x7FFFFFFF) % len(parts)]
            if len(self._partition_cache) > 500_000:
                self._partition_cache.clear()
            self._partition_cache[cache_key] = part
        return part

    async def _send(self, records: Sequence[OutRecord]) -> None:
        """Send ``records`` in per-partition batches and wait for every ack (acks=all)."""
        if self._producer is None or self._suspect:
            raise PublishError("no healthy Kafka producer")
        producer = self._producer
        by_tp: dict[tuple[str, int], list[OutRecord]] = {}
        for record in records:
            parts = self._partitions.get(record.topic) or await self._partitions_of(record.topic)
            tp = (record.topic, self._partition(record.topic, record.key, parts))
            bucket = by_tp.get(tp)
            if bucket is None:
                by_tp[tp] = [record]
            else:
                bucket.append(record)
        futures = []
        for (topic, partition), bucket in by_tp.items():
            batch = producer.create_batch()
            for record in bucket:
                if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                        raise PublishError(f"a record of {len(record.value):,} bytes does not "
                                           "fit in a Kafka batch", where=topic)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    # ------------------------------------------------------------------ helpers

    def _set_mode(self, mode: Literal["direct", "spool"], why: str) -> None:
        if mode != self._mode:
            log.warning("publisher: %s -> %s (%s)", self._mode, mode, why)
            self._mode = mode
            self.stats.mode = mode
            self.stats.extra["mode_changed_at"] = time.time()
            if mode == "spool":
                self._drain_wakeup.set()

    async def _io_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)
