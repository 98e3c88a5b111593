"""The faust app of the pipeline, built from settings, and the way agents plug into it.

Strategy: :func:`create_app` builds one :class:`PipelineApp` — a faust app plus what every
agent needs: catalog topics with the configured prefix, the ledger view
(:mod:`pipeline.ledger`), a sender that encodes with our envelope codec and *waits for the
broker's acknowledgement*, and dead-lettering. Topics carry raw bytes (faust's own
serializers never touch the wire): an agent decodes with :mod:`schemas.codec`, and a record
it cannot decode goes to ``dlq.pipeline`` with the reason and the original bytes.

Agents are registered with :meth:`PipelineApp.batch_agent`: the handler gets a batch of
decoded messages and returns a :class:`BatchResult` — the messages to produce and an
``after_send`` step that writes the agent's table state. The app sends the outputs, waits
until the broker has them, and only then runs ``after_send``; the tables' writes of the
batch then go to their changelogs together and, once acknowledged, into the local store
(:mod:`pipeline._state`); faust commits the input offsets after the handler returns. A
crash anywhere therefore replays input whose state was not yet written, and the agent
produces the same messages again (at-least-once, made exact by the natural keys
downstream). We never use faust's ``exactly_once``. A handler that
raises on a batch is retried message by message, and the message that still fails is
dead-lettered with the error: bad input never stops the worker.

Agent modules are ``pipeline/<name>_agent.py`` defining ``register(app: PipelineApp)``;
they are discovered by name (see CONTRIBUTING.md, "Adding a pipeline agent").
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import faust
from faust.sensors import Monitor
from faust.streams import _current_event  # faust's current-event context variable

from pipeline._consumer import new_transport
from pipeline._follow import follow_ledger
from pipeline._state import ChangelogRecord, StateTable
from pipeline.errors import PipelineError
from pipeline.ledger import LedgerView, open_ledger_store
from pipeline.settings import PipelineSettings
from schemas import codec
from schemas.errors import MessageDecodeError, UnimeterError
from schemas.messages import DeadLetter, Message
from schemas.settings import KafkaSettings, UtilitySettings
from schemas.topics import topic_spec

__all__ = [
    "BatchResult",
    "Incoming",
    "KafkaSender",
    "Output",
    "PartitionCache",
    "PipelineApp",
    "Sender",
    "StateTable",
    "create_app",
    "discover_agents",
]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce: catalog topic (no prefix), key, encoded value.

    ``internal`` records (table changelogs) name their full Kafka topic, carry the partition
    their key lives in, and a ``None`` value to delete the key.
    """

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None
    internal: bool = False


@dataclass(frozen=True, slots=True)
class Incoming(Generic[M]):
    """A decoded input message with where it came from."""

    message: M
    key: bytes | None
    topic: str
    partition: int
    offset: int
    #: The record's value exactly as it arrived (for dead letters).
    raw: bytes = b""


@dataclass
class BatchResult:
    """What a batch handler wants done: produce ``outputs``, then run ``after_send``."""

    outputs: list[Output] = field(default_factory=list)
    after_send: Callable[[], None] | None = None


#: The payload type an agent expects, or the tuple of types a mixed topic carries.
Expected = type[Message] | tuple[type[Message], ...]

BatchHandler = Callable[[list[Incoming[Any]]], "BatchResult | Awaitable[BatchResult]"]


class Sender(Protocol):
    """Produces outputs and returns once the broker acknowledged every one of them: the
    records' metadata in order (with ``offset``), or ``None`` when there is none (tests)."""

    async def send(self, outputs: Sequence[Output]) -> Sequence[Any] | None: ...


class KafkaSender:
    """Sends through the faust app's producer (acks=all, idempotent) and awaits the acks.

    Records are grouped by topic partition and handed to the producer as whole record
    batches (``create_batch``/``send_batch``): one future per partition batch instead of
    one per record, and no per-record metadata wait, partitioner call and result object —
    a third of the produce cost per record. Keys are partitioned by faust's producer (the
    same partitioner a per-record send would use), order per partition is kept, and the
    offset of each record is its batch's base offset plus its place in the batch.
    """

    def __init__(self, app: PipelineApp) -> None:
        self.app = app
        self._names: dict[str, str] = {}
        self.partitions = PartitionCache()

    def _full_name(self, out: Output) -> str:
        if out.internal:
            return out.topic
        name = self._names.get(out.topic)
        if name is None:
            name = self._names[out.topic] = self.app.kafka.topic(out.topic)
        return name

    async def send(self, outputs: Sequence[Output]) -> Sequence[Any] | None:
        if not outputs:
            return []
        faust_producer = self.app.faust.producer
        # the aiokafka producer under faust's (faust offers no batch send of its own)
        producer: Any = faust_producer._ensure_producer()  # type: ignore[attr-defined]
        known: dict[str, dict[bytes, int]] = {}
        by_partition: dict[tuple[str, int], list[int]] = {}
        for i, out in enumerate(outputs):
            name = self._full_name(out)
            cached = known.get(name)
            if cached is None:
                # metadata before partitioning; the cache is only good for this many partitions
                count = len(await producer.partitions_for(name))
                cached = known[name] = self.partitions.of(name, count)
            partition = out.partition
            if partition is None:
                key = out.key
                partition = cached.get(key) if key is not None else None
                if partition is None:
                    partition = faust_producer.key_partition(name, key).partition
                    if key is not None:
                        self.partitions.remember(cached, key, partition)
            by_partition.setdefault((name, partition), []).append(i)
        pending: list[tuple[Any, list[int]]] = []
        for (name, partition), indices in by_partition.items():
            batch, members = producer.create_batch(), list[int]()
            for i in indices:
                out = outputs[i]
                if batch.append(key=out.key, value=out.value, timestamp=None) is None:
                    batch.close()
                    pending.append((await producer.send_batch(batch, name,
                                                              partition=partition), members))
                    batch, members = producer.create_batch(), list[int]()
                    if batch.append(key=out.key, value=out.value, timestamp=None) is None:
                        raise PipelineError(f"a record of {len(out.value or b'')} bytes for "
                                            f"{name} exceeds the producer's batch size")
                members.append(i)
            batch.close()
            pending.append((await producer.send_batch(batch, name, partition=partition),
                            members))
        acks = await asyncio.wait_for(asyncio.gather(*(f for f, _ in pending)),
                                      self.app.settings.send_timeout_s)
        results: list[Any] = [None] * len(outputs)
        for ack, (_, members) in zip(acks, pending, strict=True):
            for place, i in enumerate(members):
                results[i] = _RecordAck(ack.topic, ack.partition, ack.offset + place)
        return results


class PartitionCache:
    """The partition of each key per topic, as the producer's partitioner chose it.

    The partitioner hashes the key (murmur2, in Python in aiokafka): about a twentieth of a
    worker's CPU when every output is partitioned afresh, while a worker sees the same meters'
    and accounts' keys again and again. A topic's entries are only good for the partition
    count they were computed with (a topic that gains partitions starts over); at most
    ``limit`` keys are kept per topic, then it starts over too.
    """

    def __init__(self, limit: int = 500_000) -> None:
        self.limit = limit
        self._topics: dict[str, tuple[int, dict[bytes, int]]] = {}

    def of(self, topic: str, partitions: int) -> dict[bytes, int]:
        """The key → partition entries of ``topic`` with ``partitions`` partitions."""
        held = self._topics.get(topic)
        if held is None or held[0] != partitions:
            held = self._topics[topic] = (partitions, {})
        return held[1]

    def remember(self, entries: dict[bytes, int], key: bytes, partition: int) -> None:
        if len(entries) >= self.limit:
            entries.clear()
        entries[key] = partition


@dataclass(frozen=True, slots=True)
class _RecordAck:
    """Where the broker put one record."""

    topic: str
    partition: int
    offset: int


def discover_agents() -> list[str]:
    """Names of the agent modules of the pipeline package (``<name>_agent.py``)."""
    import pipeline

    return sorted(m.name.removesuffix("_agent") for m in pkgutil.iter_modules(pipeline.__path__)
                  if m.name.endswith("_agent") and not m.name.startswith("_"))


class PipelineApp:
    """The faust app with the topics, ledger view, sender and dead-letter handling of unimeter.

    ``faust`` is the underlying :class:`faust.App` (for tables, timers, web views);
    ``ledger`` the :class:`~pipeline.ledger.LedgerView`; ``sender`` may be replaced in unit
    tests (``agent.test_context()``) by one that records instead of producing.
    """

    def __init__(self, settings: PipelineSettings, kafka: KafkaSettings,
                 utility: UtilitySettings | None = None, *, worker_index: int = 0) -> None:
        self.settings = settings
        self.kafka = kafka
        self.utility = utility or UtilitySettings()
        self.worker_index = worker_index
        self.producer_name = f"{settings.app_id}-{worker_index}"
        self.app_id = f"{kafka.topic_prefix}{settings.app_id}"
        self.data_dir = Path(settings.data_dir) / self.app_id / f"worker-{worker_index}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        brokers = [f"kafka://{b.strip()}" for b in kafka.bootstrap.split(",") if b.strip()]
        self.faust = faust.App(
            self.app_id,
            broker=brokers or "kafka://127.0.0.1:9092",
            store=settings.store,
            datadir=str(self.data_dir / "faust"),
            key_serializer="raw",
            value_serializer="raw",
            processing_guarantee="at_least_once",
            producer_acks=-1,
            # A batch's outputs go out together and are awaited once: larger producer batches
            # (faust's default is 16 KiB) and a short linger make that a few requests, not
            # one per partition batch of 16 KiB. Below the broker's 1 MiB message limit.
            producer_max_batch_size=512 * 1024,
            producer_linger=0.002,
            consumer_auto_offset_reset="earliest",
            # A worker killed with -9 keeps its partitions until its session times out (faust's
            # default: 60 s), and a restarted worker's join waits for that too.
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.heartbeat_interval_s,
            topic_partitions=kafka.default_partitions,
            topic_replication_factor=kafka.replication_factor,
            topic_disable_leader=True,
            web_enabled=settings.web_port > 0,
            web_port=settings.web_port or 6066,
            broker_client_id=f"{kafka.client_id}-{self.producer_name}",
            autodiscover=False,
            # Without the web server nobody reads the per-record rates and latencies.
            monitor=None if settings.web_port else _PerRecordQuietMonitor(),
        )
        # Records reach the streams without four tasks each (pipeline/_consumer.py).
        self.faust.transport = new_transport(self.faust)
        self.ledger = LedgerView(
            open_ledger_store(settings.store, self.data_dir / "ledger"),
            cache_size=settings.ledger_cache_size, on_reject=self._reject_ledger_record)
        self.sender: Sender = KafkaSender(self)
        self.ledger_ready = asyncio.Event()
        self._topics: dict[tuple[str, ...], Any] = {}
        self._state_tables: list[StateTable] = []
        self._pending_rejects: list[Output] = []
        self._decoders: dict[type[Message], Callable[[bytes], Message]] = {}
        self.counters: dict[str, int] = {}
        #: What agents register for others (and tests) to reach: ``extensions["vee"]``.
        self.extensions: dict[str, Any] = {}
        self.faust.task(self._follow_ledger)
        self.faust.task(self._flush_rejects_forever)
        if settings.heartbeat_file is not None:
            self.faust.timer(5.0)(self._heartbeat)

    # ------------------------------------------------------------------ topics and tables

    def topic(self, *names: str) -> Any:
        """The faust topic of catalog topics (``readings.raw``), raw bytes in and out; several
        names make one channel over all of them."""
        if names not in self._topics:
            for name in names:
                topic_spec(name)  # a KeyError naming the known topics for a typo
            self._topics[names] = self.faust.topic(
                *(self.kafka.topic(n) for n in names), key_type=bytes, value_type=bytes,
                key_serializer="raw", value_serializer="raw", internal=False)
        return self._topics[names]

    def catalog_name(self, full_name: str) -> str:
        """``unimeter.readings.raw`` -> ``readings.raw``."""
        return full_name.removeprefix(self.kafka.topic_prefix)

    def table(self, name: str, *, help_text: str = "") -> StateTable:
        """A partitioned table of bytes (per-meter state), co-partitioned with the input:
        each key lives in the partition of the event that wrote it. Writes reach the
        changelog and the local store once per batch, after the batch's outputs
        (:mod:`pipeline._state`); ``.table`` is the faust table."""
        # Raw bytes through the app's raw key/value serializers (faust's Table takes no
        # serializer arguments of its own).
        state = StateTable(self.faust.Table(name, default=None, key_type=bytes,
                                            value_type=bytes, help=help_text or name))
        self._state_tables.append(state)
        return state

    # ------------------------------------------------------------------ agents

    def batch_agent(self, topic: str | tuple[str, ...], expected: Expected, *,
                    name: str) -> Callable[[BatchHandler], BatchHandler]:
        """Register a batch handler as a faust agent consuming catalog topic ``topic`` (or a
        tuple of co-partitioned topics, consumed as one stream).

        The handler receives ``list[Incoming[expected]]`` (``expected`` may be a tuple of the
        payload types of a mixed topic; undecodable records have already gone to
        ``dlq.pipeline``) and returns a :class:`BatchResult` (or an awaitable of
        one). One agent instance per worker (``concurrency=1``): ordering per partition is
        what per-meter state relies on.
        """

        names = (topic,) if isinstance(topic, str) else tuple(topic)

        def decorate(handler: BatchHandler) -> BatchHandler:
            async def agent(stream: Any) -> None:
                await self.wait_for_ledger()
                counters = self.counters
                async for events in stream.take_events(self.settings.batch_max,
                                                       within=self.settings.batch_within_s):
                    counters[f"batches.{name}"] = counters.get(f"batches.{name}", 0) + 1
                    counters[f"events.{name}"] = counters.get(f"events.{name}", 0) + len(events)
                    await self.handle_events(events, expected, handler, topic=names[0])

            self.faust.agent(self.topic(*names), name=name, concurrency=1)(agent)
            return handler

        return decorate

    async def handle_events(self, events: Sequence[Any], expected: Expected,
                            handler: BatchHandler, *, topic: str) -> None:
        """Decode ``events``, run ``handler`` and send its outputs (the agent loop's body).

        Events are handled partition by partition, each group with one of its own events as
        faust's *current event*: faust's RocksDB store and table changelog put a key in the
        current event's partition, so a key read or written by the handler or its
        ``after_send`` stays in the partition of the input it belongs to — a batch spanning
        partitions would otherwise file every key under the last event's partition and lose
        it at the next rebalance. The outputs of all groups go to the broker together and
        are awaited once (one acknowledgement round trip per batch, not per partition);
        then each group's ``after_send`` runs, again under its own partition's event.
        """
        groups: dict[int, list[Any]] = {}
        for event in events:
            groups.setdefault(event.message.partition, []).append(event)
        outputs: list[Output] = []
        after: list[tuple[Any, Callable[[], None]]] = []
        for group in groups.values():
            anchor = group[-1]
            token = _current_event.set(weakref.ref(anchor))
            try:
                result = await self._handle_partition(group, expected, handler, topic=topic)
            finally:
                _current_event.reset(token)
            outputs.extend(result.outputs)
            if result.after_send is not None:
                after.append((anchor, result.after_send))
        await self.send_until_acknowledged(outputs)
        for anchor, step in after:
            token = _current_event.set(weakref.ref(anchor))
            try:
                step()
            finally:
                _current_event.reset(token)
        await self.write_state()

    async def write_state(self) -> None:
        """Produce the tables' pending writes to their changelogs (one acknowledgement
        round trip for all of them) and store what the broker acknowledged locally, moving
        each store's persisted changelog offset (what a restart recovers from).

        Only after the batch's outputs were acknowledged: a changelog ahead of the outputs
        would, after a crash, make the replayed batch look like duplicates and its outputs
        would never be sent. Without the broker's offsets (a test sender) the persisted
        offset becomes -1, so a restart would re-read the whole changelog.
        """
        writes: list[tuple[StateTable, int, bytes, bytes | None]] = []
        for state in self._state_tables:
            if state.pending:
                writes.extend((state, p, k, v) for p, k, v in state.take_pending())
        if not writes:
            return
        acks = await self.send_until_acknowledged(
            [Output(state.changelog_topic, key, value, partition=partition, internal=True)
             for state, partition, key, value in writes])
        records: dict[int, tuple[StateTable, list[ChangelogRecord]]] = {}
        for i, (state, partition, key, value) in enumerate(writes):
            offset = acks[i].offset if acks else -1
            records.setdefault(id(state), (state, []))[1].append(
                ChangelogRecord.of(state.changelog_topic, partition, offset, key, value))
        for state, applied in records.values():
            state.apply(applied)

    async def send_until_acknowledged(self, outputs: Sequence[Output]) -> Sequence[Any] | None:
        """Send ``outputs`` and wait for the broker's acknowledgement, again and again while
        the broker is away.

        Giving up is not an option: an agent that raises here is restarted by faust *past*
        the batch it was handling, whose input offsets then get committed — the fault run
        lost 868 readings that way when Kafka was down longer than ``send_timeout_s``.
        Waiting holds the input back (nothing new is read meanwhile); a batch partly sent
        before the failure is sent again, which the natural keys downstream absorb.
        """
        delay = 0.5
        while True:
            try:
                return await self.sender.send(outputs)
            except Exception as exc:  # timeouts and Kafka errors alike: the broker is away
                self.counters["send_retries"] = self.counters.get("send_retries", 0) + 1
                log.warning("%d outputs not acknowledged (%r); sending them again in %.1f s "
                            "(the input is not committed meanwhile)", len(outputs), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _handle_partition(self, events: Sequence[Any], expected: Expected,
                                handler: BatchHandler, *, topic: str) -> BatchResult:
        """The result of one partition's events, not yet sent (the caller sends it)."""
        batch: list[Incoming[Any]] = []
        rejects: list[Output] = []
        for event in events:
            message = event.message
            source = self.catalog_name(message.topic) if message.topic else topic
            incoming = self.decode(event.value, expected, key=event.key, topic=source,
                                   partition=message.partition, offset=message.offset,
                                   rejects=rejects)
            if incoming is not None:
                batch.append(incoming)
        if not batch:
            return BatchResult(outputs=rejects)
        try:
            result = await _maybe_await(handler(batch))
        except Exception:
            if len(batch) == 1:
                log.exception("agent failed on %s[%d]@%d; dead-lettered", topic,
                              batch[0].partition, batch[0].offset)
                return BatchResult(outputs=[*rejects, self._internal_error_record(batch[0])])
            log.warning("batch of %d failed; retrying message by message", len(batch))
            # One at a time, each sent and its state written before the next: a later
            # message of the same meter must see the state the earlier one left.
            await self.send_until_acknowledged(rejects)
            for one in batch:
                try:
                    single = await _maybe_await(handler([one]))
                except Exception:
                    log.exception("agent failed on %s[%d]@%d; dead-lettered", topic,
                                  one.partition, one.offset)
                    await self.send_until_acknowledged([self._internal_error_record(one)])
                    continue
                await self.send_until_acknowledged(single.outputs)
                if single.after_send is not None:
                    single.after_send()
            return BatchResult()
        return BatchResult(outputs=[*rejects, *result.outputs], after_send=result.after_send)

    async def wait_for_ledger(self) -> None:
        """Wait (at most ``ledger_wait_s``) until the ledger view has caught up."""
        if self.ledger_ready.is_set() or self.settings.ledger_wait_s == 0:
            return
        try:
            await asyncio.wait_for(self.ledger_ready.wait(), self.settings.ledger_wait_s)
        except TimeoutError:
            log.warning("ledger view not caught up after %.0f s; processing anyway (readings "
                        "of unknown meters carry no dimensions)", self.settings.ledger_wait_s)

    # ------------------------------------------------------------------ encoding

    def output(self, topic: str, message: Message, *, event_time: datetime | None = None,
               message_id: str | None = None) -> Output:
        """Encode ``message`` in the envelope for catalog topic ``topic``."""
        return Output(topic, message.key(),
                      codec.encode(message, producer=self.producer_name,
                                   event_time=event_time, message_id=message_id))

    def decode(self, value: bytes | None, expected: Expected, *, key: bytes | None, topic: str,
               partition: int, offset: int, rejects: list[Output]) -> Incoming[Any] | None:
        """Decode one record; on failure append its dead letter to ``rejects``. ``expected``
        is the payload type, or a tuple of the types a mixed topic carries."""
        if value is None:
            return None  # a tombstone on a data topic carries nothing to process
        try:
            if isinstance(expected, tuple):
                # one pass for the first (main) type of a mixed topic; the others take two
                decoder = self._decoders.get(expected[0])
                if decoder is None:
                    decoder = self._decoders[expected[0]] = codec.decoder_for(expected[0])
                message = decoder(value)
                if not isinstance(message, expected):
                    raise MessageDecodeError(
                        f"schema '{message.SCHEMA}' does not belong on {topic}; expected one "
                        f"of {', '.join(t.SCHEMA for t in expected)}",
                        hint="a producer wrote to the wrong topic")
            else:
                _, message = codec.decode(value, expected)
        except MessageDecodeError as exc:
            rejects.append(self.dead_letter(exc, value=value, key=key, topic=topic,
                                            partition=partition, offset=offset))
            return None
        return Incoming(message, key, topic, partition, offset, value)

    def dead_letter(self, error: UnimeterError, *, value: bytes, key: bytes | None, topic: str,
                    partition: int | None = None, offset: int | None = None,
                    stage: str = "pipeline") -> Output:
        """The ``dlq.<stage>`` record for input that could not be used."""
        self.counters[f"dead_letters.{topic}"] = self.counters.get(f"dead_letters.{topic}", 0) + 1
        record = DeadLetter(stage=stage, reason=error.to_dict(), ts=datetime.now(UTC),
                            value=value, key_bytes=key, source_topic=self.kafka.topic(topic),
                            partition=partition, offset=offset)
        return self.output(f"dlq.{stage}", record)

    def _internal_error_record(self, incoming: Incoming[Any]) -> Output:
        error = UnimeterError(
            "the agent failed on this message (a bug, not bad input)",
            where=f"{incoming.topic}[{incoming.partition}]@{incoming.offset}",
            hint="report it with the worker log; replay the record once fixed")
        return self.dead_letter(error, value=incoming.raw, key=incoming.key, topic=incoming.topic,
                                partition=incoming.partition, offset=incoming.offset)

    # ------------------------------------------------------------------ background tasks

    def _reject_ledger_record(self, topic: str, key: bytes | None, value: bytes, partition: int,
                              offset: int, error: MessageDecodeError) -> None:
        log.warning("ledger record rejected: %s[%d]@%d: %s", topic, partition, offset, error)
        self._pending_rejects.append(self.dead_letter(error, value=value, key=key, topic=topic,
                                                      partition=partition, offset=offset))

    async def _follow_ledger(self) -> None:
        await follow_ledger(self.ledger, self.kafka, self.ledger_ready,
                            client_id=f"{self.kafka.client_id}-{self.producer_name}-ledger")

    async def _flush_rejects_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._pending_rejects:
                batch, self._pending_rejects = self._pending_rejects, []
                await self.send_until_acknowledged(batch)

    async def _heartbeat(self) -> None:
        path = self.settings.heartbeat_file
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{time.time():.0f}\n")


class _PerRecordQuietMonitor(Monitor):
    """faust's monitor without its per-record hooks (counters and clock reads several times
    per input record that only the web server's statistics read); everything else —
    commits, assignments, rebalances — it records as faust's does.

    Given to the app when it is built: swapping sensors while the worker runs broke faust's
    rebalance bookkeeping (a rebalance that started with the old sensor ended looking up
    the new one, and the consumer never resumed).
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any,
                           event: Any) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: dict[str, Any] | None = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


async def _maybe_await(value: Any) -> BatchResult:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        value = await value
    if not isinstance(value, BatchResult):
        raise TypeError(f"a batch handler must return a BatchResult, not {type(value).__name__}")
    return value


def create_app(settings: PipelineSettings, kafka: KafkaSettings,
               utility: UtilitySettings | None = None, *, worker_index: int = 0,
               agents: Sequence[str] | None = None) -> PipelineApp:
    """Build the app and register the configured agents (all discovered ones by default)."""
    app = PipelineApp(settings, kafka, utility, worker_index=worker_index)
    names = list(agents if agents is not None else (settings.agents or discover_agents()))
    known = discover_agents()
    for name in names:
        if name not in known:
            raise PipelineError(f"unknown pipeline agent '{name}'",
                                where="pipeline.agents / UNIMETER_PIPELINE_AGENTS",
                                hint=f"known agents: {', '.join(known) or 'none'}")
        module = importlib.import_module(f"pipeline.{name}_agent")
        register = getattr(module, "register", None)
        if not callable(register):
            raise PipelineError(f"pipeline/{name}_agent.py defines no register(app)",
                                hint="see CONTRIBUTING.md, 'Adding a pipeline agent'")
        register(app)
    return app
