"""The sync process: CIS changes in from ``sync.in.*``, platform news out on ``sync.out.*``.

Strategy: one consumer group reads the ``sync.in.*`` topics and the platform topics the CIS
hears about (``commands.results``, ``device.events``, ``alerts``). A CIS change is applied in
one database transaction (:mod:`devices.sync.apply`) — ledger rows, history, outbox rows and
order state together — and offsets are committed only after it, so a crash replays it and
the order state absorbs the replay. A change that cannot be applied is never dropped: it is
stored in ``ledger.sync_exceptions`` and reported on ``sync.out.rejects`` and ``dlq.sync``
with its original bytes; one that waits for a reference still on its way on another topic (an
account for a meter) is parked as *pending* and retried for ``retry_window_s`` first.

Top-ups and tariff versions reach ``billing.topups`` / ``ledger.tariffs`` through the ledger
outbox; the process runs the outbox publisher too (standby while another one leads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from devices.ledger.session import acting_as
from devices.outbox import OutboxPublisher
from devices.sync.apply import HANDLERS, Duplicate, SyncRejectedError
from devices.sync.outbound import (
    account_of,
    alarm_for_cis,
    data_availability,
    status_from_event,
    status_from_result,
)
from devices.sync.settings import SyncSettings
from schemas import codec
from schemas.errors import MessageDecodeError
from schemas.messages import (
    Alert,
    CommandResult,
    DeadLetter,
    DeviceEvent,
    Message,
    SyncReject,
)
from schemas.settings import DatabaseSettings, KafkaSettings

__all__ = ["SYNC_IN_TOPICS", "SyncService", "SyncStats"]

log = logging.getLogger(__name__)

SYNC_IN_TOPICS = ("sync.in.customers", "sync.in.meters", "sync.in.tariffs", "sync.in.topups",
                  "sync.in.collection", "sync.in.device_parameters")
OUTWARD_TOPICS = ("commands.results", "device.events", "alerts")


@dataclass
class SyncStats:
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0
    pending: int = 0
    retried: int = 0
    outbound: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Incoming:
    """A record as the service needs it (from Kafka or from a parked exception)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    offset: int | None = None


class SyncService:
    """The long-running sync loop (:meth:`run`) and the per-record steps, for tests."""

    def __init__(self, database: DatabaseSettings, kafka: KafkaSettings, *,
                 timezone: str = "Asia/Shanghai", settings: SyncSettings | None = None,
                 producer_name: str = "sync") -> None:
        self.database = database
        self.kafka = kafka
        self.zone = ZoneInfo(timezone)
        self.settings = settings or SyncSettings()
        self.producer_name = producer_name
        self.stats = SyncStats()
        self._conn: psycopg.Connection | None = None
        self._producer: Any = None
        self._last_availability_day: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._conn = await asyncio.to_thread(psycopg.connect, self.database.conninfo("api"),
                                             autocommit=True)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka.bootstrap, acks="all", enable_idempotence=True,
            client_id=f"{self.kafka.client_id}-{self.producer_name}")
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._conn is not None:
            await asyncio.to_thread(self._conn.close)
            self._conn = None

    async def __aenter__(self) -> SyncService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None:
            raise RuntimeError("SyncService.start() was not called")
        return self._conn

    async def _produce(self, messages: list[tuple[str, Message]]) -> None:
        futures = []
        for topic, message in messages:
            futures.append(await self._producer.send(
                self.kafka.topic(topic), value=codec.encode(message, producer=self.producer_name),
                key=message.key()))
        for fut in futures:
            await fut

    # ------------------------------------------------------------------ inbound

    async def handle(self, record: Incoming, *, retry_of: int | None = None) -> str:
        """Apply one ``sync.in`` record; returns applied, duplicate, pending, rejected or
        conflict. Never raises for bad input."""
        topic = record.topic
        try:
            if record.value is None:
                raise SyncRejectedError("empty record (tombstone) on an input topic")
            envelope, message = codec.decode(record.value)
        except (MessageDecodeError, SyncRejectedError) as exc:
            return await self._refuse(record, SyncRejectedError(exc.message, hint=exc.hint),
                                      None, retry_of)
        handler = HANDLERS.get(envelope.schema)
        if handler is None or topic not in _TOPIC_OF.get(envelope.schema, ()):
            return await self._refuse(record, SyncRejectedError(
                f"'{envelope.schema}' does not belong on {topic}",
                hint="the CIS wrote to the wrong topic"), envelope.id, retry_of)

        def work() -> list[tuple[str, Message]]:
            with self.conn.transaction():
                acting_as(self.conn, "sync:cis", f"{topic} {envelope.id}")
                return handler(self.conn, message, envelope.id)

        try:
            outgoing = await asyncio.to_thread(work)
        except Duplicate:
            self.stats.duplicates += 1
            await self._resolve(retry_of, "duplicate of a change already applied")
            return "duplicate"
        except SyncRejectedError as exc:
            return await self._refuse(record, exc, envelope.id, retry_of)
        except psycopg.IntegrityError as exc:
            return await self._refuse(record, SyncRejectedError(
                f"the ledger refused the change: {exc.diag.message_primary or exc}",
                hint=exc.diag.message_hint or "check the referenced ids"), envelope.id,
                retry_of)
        if outgoing:
            await self._produce(outgoing)
        self.stats.applied += 1
        self.stats.by_topic[topic] = self.stats.by_topic.get(topic, 0) + 1
        await self._resolve(retry_of, "applied on retry")
        return "applied"

    async def _resolve(self, exception_id: int | None, resolution: str) -> None:
        if exception_id is None:
            return
        self.stats.retried += 1
        await asyncio.to_thread(
            self.conn.execute,
            "UPDATE ledger.sync_exceptions SET status = 'resolved', resolved_at = now(), "
            "resolved_by = 'sync', resolution = %s WHERE exception_id = %s",
            (resolution, exception_id))

    async def _refuse(self, record: Incoming, exc: SyncRejectedError, message_id: str | None,
                      retry_of: int | None) -> str:
        """Keep the refused record (table), and unless it waits for a retry, report it."""
        window = timedelta(seconds=self.settings.retry_window_s)

        def store() -> tuple[int, str]:
            if retry_of is not None:
                row = self.conn.execute(
                    "UPDATE ledger.sync_exceptions SET attempts = attempts + 1, "
                    "last_attempt_at = clock_timestamp(), reason = %s, "
                    "status = CASE WHEN %s AND received_at > clock_timestamp() - %s "
                    "THEN 'pending' ELSE 'open' END "
                    "WHERE exception_id = %s RETURNING exception_id, status",
                    (exc.message, exc.retryable, window, retry_of)).fetchone()
            else:
                row = self.conn.execute(
                    "INSERT INTO ledger.sync_exceptions (kind, status, topic, kafka_partition, "
                    "kafka_offset, message_id, entity, entity_id, reason, hint, key, payload) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "RETURNING exception_id, status",
                    (exc.kind, "pending" if exc.retryable and window else "open", record.topic,
                     record.partition, record.offset, message_id, exc.entity, exc.entity_id,
                     exc.message, exc.hint or "", record.key, record.value)).fetchone()
            assert row is not None
            return int(row[0]), str(row[1])

        exception_id, status = await asyncio.to_thread(store)
        if status == "pending":
            if retry_of is None:
                self.stats.pending += 1
            return "pending"
        if exc.kind == "conflict":
            self.stats.conflicts += 1
        else:
            self.stats.rejected += 1
        now = datetime.now(UTC)
        reject = SyncReject(exception_id=str(exception_id), kind=exc.kind,  # type: ignore[arg-type]
                            topic=record.topic, reason=exc.message, ts=now, entity=exc.entity,
                            entity_id=exc.entity_id, message_id=message_id,
                            hint=exc.hint or "")
        dead = DeadLetter(stage="sync", reason={"error": exc.kind, "reason": exc.message,
                                                "exception_id": exception_id},
                          ts=now, value=record.value or b"", key_bytes=record.key,
                          source_topic=self.kafka.topic(record.topic),
                          partition=record.partition, offset=record.offset)
        await self._produce([("sync.out.rejects", reject), ("dlq.sync", dead)])
        return exc.kind

    async def retry_pending(self) -> int:
        """Apply parked changes again (their reference may have arrived); returns how many
        were tried."""
        rows = await asyncio.to_thread(lambda: self.conn.execute(
            "SELECT exception_id, topic, key, payload, kafka_partition, kafka_offset "
            "FROM ledger.sync_exceptions WHERE status = 'pending' ORDER BY exception_id "
            "LIMIT 500").fetchall())
        for exception_id, topic, key, payload, partition, offset in rows:
            await self.handle(Incoming(topic, payload, key, partition, offset),
                              retry_of=exception_id)
        return len(rows)

    # ------------------------------------------------------------------ outbound

    async def forward(self, record: Incoming) -> int:
        """Translate a platform record for the CIS; returns how many messages went out."""
        if record.value is None:
            return 0
        try:
            _, message = codec.decode(record.value)
        except MessageDecodeError:
            return 0  # not ours to judge: the owning consumer dead-letters it
        out: list[tuple[str, Message]] = []
        if isinstance(message, CommandResult):
            account, kind = await asyncio.to_thread(account_of, self.conn, message.device_id)
            out = status_from_result(message, account_id=account, device_kind=kind)
        elif isinstance(message, DeviceEvent):
            account, _kind = await asyncio.to_thread(
                account_of, self.conn, message.meter_id or message.device_id)
            status = status_from_event(message, account)
            out = [("sync.out.device_status", status)] if status is not None else []
        elif isinstance(message, Alert):
            alarm = alarm_for_cis(message)
            out = [("sync.out.alarms", alarm)] if alarm is not None else []
        if out:
            await self._produce(out)
            self.stats.outbound += len(out)
        return len(out)

    async def publish_availability(self, day: Any) -> int:
        """Publish data availability of ``day`` (a date in the utility's zone)."""
        rows = await asyncio.to_thread(data_availability, self.conn, day, self.zone)
        await self._produce([("sync.out.data_availability", r) for r in rows])
        self.stats.outbound += len(rows)
        return len(rows)

    async def _maybe_availability(self) -> None:
        local = datetime.now(self.zone)
        if local.hour < self.settings.availability_hour:
            return
        day = (local - timedelta(days=1)).date()
        if self._last_availability_day == day.isoformat():
            return
        await self.publish_availability(day)
        self._last_availability_day = day.isoformat()

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event | None = None) -> SyncStats:
        """Run until ``stop`` is set: inbound, outbound, retries, availability, outbox."""
        from aiokafka import AIOKafkaConsumer

        stop = stop or asyncio.Event()
        if self._conn is None:
            await self.start()
        publisher_task = None
        if self.settings.publish_outbox:
            publisher = OutboxPublisher(self.database, self.kafka)
            publisher_task = asyncio.create_task(publisher.run(stop))
        inbound = {self.kafka.topic(t): t for t in SYNC_IN_TOPICS}
        outward = {self.kafka.topic(t): t for t in OUTWARD_TOPICS}
        consumer = AIOKafkaConsumer(
            *inbound, *outward, bootstrap_servers=self.kafka.bootstrap,
            group_id=self.settings.consumer_group or self.kafka.group("sync"),
            enable_auto_commit=False,
            auto_offset_reset="earliest", client_id=f"{self.kafka.client_id}-sync")
        await consumer.start()
        loop = asyncio.get_running_loop()
        next_retry = loop.time()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                for tp, records in batch.items():
                    for r in records:
                        incoming = Incoming(tp.topic.removeprefix(self.kafka.topic_prefix),
                                            r.value, r.key, r.partition, r.offset)
                        if tp.topic in inbound:
                            await self.handle(incoming)
                        else:
                            await self.forward(incoming)
                if batch:
                    await consumer.commit()
                if loop.time() >= next_retry:
                    await self.retry_pending()
                    await self._maybe_availability()
                    next_retry = loop.time() + self.settings.retry_interval_s
        finally:
            await consumer.stop()
            if publisher_task is not None:
                stop.set()
                with contextlib.suppress(Exception):
                    await publisher_task
                await publisher.stop()
        return self.stats


#: schema -> the input topics it may arrive on.
_TOPIC_OF: dict[str, tuple[str, ...]] = {}


def _build_topic_map() -> None:
    from schemas.topics import topic_spec

    for topic in SYNC_IN_TOPICS:
        for payload in topic_spec(topic).payloads:
            _TOPIC_OF.setdefault(payload.SCHEMA, ())
            _TOPIC_OF[payload.SCHEMA] += (topic,)


_build_topic_map()
