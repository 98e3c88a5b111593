"""The outbox publisher: ledger changes to the compacted ``ledger.*`` topics, in order, at
least once, idempotently.

Strategy: triggers write ``(topic, entity, entity_id)`` rows into ``ledger.outbox`` in the
writer's own transaction, so a change and its publication commit or vanish together. The
publisher takes a batch of rows in ``seq`` order (``FOR UPDATE SKIP LOCKED``), *expands* each
entity to the message keys it affects (an account to its meters, a location to every meter
and account below it, a concentrator to the meters of its subtree …), builds those messages
from the **current** state of the ledger (:mod:`devices.ledger.messages`), produces them with
``acks=all`` and an idempotent producer, waits for every acknowledgement, and only then
deletes the rows and commits. A crash in between re-publishes the same current state: a
compacted topic keyed by entity id absorbs it. A key whose entity is gone is produced as a
tombstone (``value=None``).

Publishing the current state rather than the state at write time makes ordering simple: a
later publication of a key is never older than an earlier one *as long as one publisher is
active*, which a session-level advisory lock guarantees; other publishers wait as standbys.
``ledger_version`` of a ``LedgerMeter``/``LedgerAccount`` comes from the
``ledger.publish_version`` sequence, so it strictly increases over everything published:
a consumer may drop a message whose version is not newer than the one it holds.

Other modules publish through the same outbox (the sync process queues ``billing.topups``):
:func:`register_topic` adds an expander and a builder for a topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from psycopg import AsyncConnection

from devices.ledger.messages import BUILDERS, Builder
from schemas import codec
from schemas.messages import LedgerAccount, LedgerMeter, Message
from schemas.settings import DatabaseSettings, KafkaSettings

__all__ = [
    "EXPANDERS",
    "PUBLISHER_LOCK_ID",
    "OutboxPublisher",
    "PublishReport",
    "enqueue_all",
    "register_topic",
]

log = logging.getLogger(__name__)

#: Advisory lock that makes one publisher the active one ("ledg").
PUBLISHER_LOCK_ID = 0x6C656467

#: ``(topic, entity) -> SQL`` returning the message keys an entity change affects; the SQL
#: gets the entity ids as ``%(ids)s`` (text[]). An entity missing here maps to itself.
EXPANDERS: dict[tuple[str, str], str] = {
    # A meter maps to itself; a concentrator, collector, DTU or RTU to the meters below it.
    ("ledger.meters", "device"): """
        WITH hubs AS (
            SELECT array_agg(d.device_id) AS ids FROM ledger.devices d
             WHERE d.device_id = ANY(%(ids)s) AND d.kind <> 'meter')
        SELECT m.meter_id FROM ledger.meters m WHERE m.meter_id = ANY(%(ids)s)
        UNION
        SELECT d.device_id FROM hubs, ledger.devices d
          JOIN ledger.meters m ON m.meter_id = d.device_id
         WHERE hubs.ids IS NOT NULL AND d.path && hubs.ids""",
    ("ledger.meters", "device_type"): """
        SELECT m.meter_id FROM ledger.meters m JOIN ledger.devices d ON d.device_id = m.meter_id
         WHERE d.device_type = ANY(%(ids)s)""",
    ("ledger.meters", "meter_size"):
        "SELECT meter_id FROM ledger.meters WHERE size = ANY(%(ids)s)",
    ("ledger.meters", "account"):
        "SELECT meter_id FROM ledger.meters WHERE account_id = ANY(%(ids)s)",
    ("ledger.meters", "customer"): """
        SELECT m.meter_id FROM ledger.meters m JOIN ledger.accounts a USING (account_id)
         WHERE a.customer_id = ANY(%(ids)s)""",
    ("ledger.meters", "location"): """
        SELECT c.device_id FROM ledger.device_context c
          JOIN ledger.locations l ON l.location_id = c.location_id
         WHERE c.kind = 'meter' AND l.path && %(ids)s""",
    ("ledger.accounts", "customer"):
        "SELECT account_id FROM ledger.accounts WHERE customer_id = ANY(%(ids)s)",
    ("ledger.accounts", "location"): """
        SELECT a.account_id FROM ledger.accounts a
          JOIN ledger.locations l ON l.location_id = a.location_id
         WHERE l.path && %(ids)s
        UNION
        SELECT m.account_id FROM ledger.meters m
          JOIN ledger.device_context c ON c.device_id = m.meter_id
          JOIN ledger.locations l ON l.location_id = c.location_id
         WHERE m.account_id IS NOT NULL AND l.path && %(ids)s""",
    ("ledger.tariffs", "tariff"): """
        SELECT tariff_id || ':' || version FROM ledger.tariff_versions
         WHERE tariff_id = ANY(%(ids)s)""",
}

_BUILDERS: dict[str, Builder] = dict(BUILDERS)


def register_topic(topic: str, builder: Builder,
                   expanders: dict[str, str] | None = None) -> None:
    """Let the outbox publish ``topic``: ``builder`` makes its messages from keys."""
    _BUILDERS[topic] = builder
    for entity, query in (expanders or {}).items():
        EXPANDERS[(topic, entity)] = query


@dataclass
class PublishReport:
    """What one batch did."""

    rows: int = 0
    messages: int = 0
    tombstones: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


#: ``(topic, key, value)`` -> awaitable acknowledgement; ``value=None`` is a tombstone.
Send = Callable[[str, bytes, bytes | None], Awaitable[Any]]


class OutboxPublisher:
    """Drains ``ledger.outbox`` to Kafka; a library loop (:meth:`run`) and one-shot calls.

    ``send`` replaces the Kafka producer (tests of the expansion logic, benchmarks); by default
    an ``aiokafka`` producer with ``acks=all`` and idempotence is started by :meth:`start`.
    """

    def __init__(self, database: DatabaseSettings, kafka: KafkaSettings, *,
                 batch_size: int = 5000, poll_interval_s: float = 1.0,
                 producer_name: str = "ledger-publisher", send: Send | None = None) -> None:
        self.database = database
        self.kafka = kafka
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.producer_name = producer_name
        self._send = send
        self._producer: Any = None
        self._conn: AsyncConnection[Any] | None = None
        self._listen: AsyncConnection[Any] | None = None
        self.total = PublishReport()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._conn = await AsyncConnection.connect(self.database.conninfo("api"))
        if self._send is None:
            from aiokafka import AIOKafkaProducer

            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.kafka.bootstrap, acks="all", enable_idempotence=True,
                client_id=f"{self.kafka.client_id}-{self.producer_name}", linger_ms=5)
            await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        for conn in (self._conn, self._listen):
            if conn is not None:
                await conn.close()
        self._conn = self._listen = None

    async def __aenter__(self) -> OutboxPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ publishing

    async def _send_one(self, topic: str, key: bytes, value: bytes | None) -> Any:
        if self._send is not None:
            return await self._send(topic, key, value)
        return await self._producer.send(topic, value=value, key=key)

    async def _expand(self, conn: AsyncConnection[Any], topic: str, entity: str,
                      ids: list[str]) -> list[str]:
        query = EXPANDERS.get((topic, entity))
        if query is None:
            return ids
        cur = await conn.execute(query, {"ids": ids})
        return [r[0] for r in await cur.fetchall()]

    async def publish_once(self) -> PublishReport:
        """Publish one batch of the outbox; returns what was published (0 rows = empty)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("OutboxPublisher.start() was not called")
        report = PublishReport()
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT seq, topic, entity, entity_id FROM ledger.outbox ORDER BY seq "
                "LIMIT %s FOR UPDATE SKIP LOCKED", (self.batch_size,))
            rows = await cur.fetchall()
            if not rows:
                return report
            report.rows = len(rows)
            # Group by (topic, entity) keeping the order of first appearance, then expand.
            groups: dict[tuple[str, str], list[str]] = {}
            for _seq, topic, entity, entity_id in rows:
                groups.setdefault((topic, entity), []).append(entity_id)
            keys_by_topic: dict[str, dict[str, None]] = {}
            for (topic, entity), ids in groups.items():
                keys = keys_by_topic.setdefault(topic, {})
                for key in await self._expand(conn, topic, entity, list(dict.fromkeys(ids))):
                    keys[key] = None
            futures = []
            for topic, keys in keys_by_topic.items():
                builder = _BUILDERS.get(topic)
                if builder is None:
                    raise RuntimeError(f"the outbox holds rows for '{topic}', which has no "
                                       "builder; register_topic() it")
                messages = await builder(conn, list(keys))
                versions = await self._versions(conn, len(keys))
                full_topic = self.kafka.topic(topic)
                for (key, version) in zip(keys, versions, strict=True):
                    message = messages.get(key)
                    value = None if message is None else self._encode(message, version)
                    futures.append(await self._send_one(full_topic, key.encode(), value))
                    report.messages += 1
                    report.tombstones += message is None
                    report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
            # Every acknowledgement before the rows go: at least once.
            for fut in futures:
                if isinstance(fut, asyncio.Future):
                    await fut
            await conn.execute("DELETE FROM ledger.outbox WHERE seq = ANY(%s)",
                               ([r[0] for r in rows],))
        self.total.rows += report.rows
        self.total.messages += report.messages
        self.total.tombstones += report.tombstones
        for topic, count in report.by_topic.items():
            self.total.by_topic[topic] = self.total.by_topic.get(topic, 0) + count
        return report

    @staticmethod
    async def _versions(conn: AsyncConnection[Any], count: int) -> list[int]:
        cur = await conn.execute(
            "SELECT nextval('ledger.publish_version') FROM generate_series(1, %s)", (count,))
        return [r[0] for r in await cur.fetchall()]

    def _encode(self, message: Message, version: int) -> bytes:
        if isinstance(message, LedgerMeter | LedgerAccount):
            message = msgspec.structs.replace(message, ledger_version=version)
        event_time = getattr(message, "updated_at", None)
        return codec.encode(message, producer=self.producer_name, event_time=event_time)

    async def drain(self, *, timeout_s: float = 60.0) -> PublishReport:
        """Publish until the outbox is empty (or ``timeout_s`` passes)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            report = await self.publish_once()
            if report.rows == 0:
                break
        return self.total

    # ------------------------------------------------------------------ the loop

    async def _acquire_leadership(self, stop: asyncio.Event) -> bool:
        assert self._conn is not None
        while not stop.is_set():
            cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)",
                                           (PUBLISHER_LOCK_ID,))
            row = await cur.fetchone()
            await self._conn.commit()
            if row and row[0]:
                return True
            log.info("another ledger publisher is active; standing by")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(self.poll_interval_s, 1.0))
        return False

    async def _wait_for_changes(self, stop: asyncio.Event) -> None:
        """Sleep until a NOTIFY on ``ledger_outbox``, ``stop``, or the poll interval."""
        if self._listen is None:
            self._listen = await AsyncConnection.connect(self.database.conninfo("api"),
                                                         autocommit=True)
            await self._listen.execute("LISTEN ledger_outbox")
        gen = self._listen.notifies(timeout=self.poll_interval_s, stop_after=1)
        waiter = asyncio.ensure_future(_consume(gen))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def run(self, stop: asyncio.Event | None = None, *,
                  on_batch: Callable[[PublishReport], None] | None = None) -> PublishReport:
        """Publish until ``stop`` is set; waits as a standby while another publisher leads.

        A failed batch (Kafka or database unavailable) is retried with backoff: its rows stay
        in the outbox, so nothing is lost.
        """
        stop = stop or asyncio.Event()
        if self._conn is None:
            await self.start()
        if not await self._acquire_leadership(stop):
            return self.total
        backoff = 0.5
        while not stop.is_set():
            try:
                report = await self.publish_once()
                backoff = 0.5
            except Exception as exc:  # the loop must survive outages; the rows stay queued
                log.warning("ledger publish failed, retrying in %.1fs: %s", backoff, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 30.0)
                await self._reconnect()
                continue
            if on_batch is not None and report.rows:
                on_batch(report)
            if report.rows < self.batch_size:
                await self._wait_for_changes(stop)
        return self.total

    async def _reconnect(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                await conn.rollback()
            return
        with contextlib.suppress(Exception):
            self._conn = await AsyncConnection.connect(self.database.conninfo("api"))
            cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)",
                                           (PUBLISHER_LOCK_ID,))
            await cur.fetchone()
            await self._conn.commit()


async def _consume(gen: Any) -> None:
    async for _ in gen:
        break


def enqueue_all_sql(topics: Sequence[str]) -> list[str]:
    """The statements that queue every entity of ``topics`` for (re)publication."""
    statements = {
        "ledger.meters": "INSERT INTO ledger.outbox (topic, entity, entity_id) "
                         "SELECT 'ledger.meters', 'meter', meter_id FROM ledger.meters "
                         "ORDER BY meter_id",
        "ledger.accounts": "INSERT INTO ledger.outbox (topic, entity, entity_id) "
                           "SELECT 'ledger.accounts', 'account', account_id "
                           "FROM ledger.accounts ORDER BY account_id",
        "ledger.tariffs": "INSERT INTO ledger.outbox (topic, entity, entity_id) "
                          "SELECT 'ledger.tariffs', 'tariff_version', tariff_id || ':' || version "
                          "FROM ledger.tariff_versions ORDER BY tariff_id, version",
        "ledger.vee_groups": "INSERT INTO ledger.outbox (topic, entity, entity_id) "
                             "SELECT 'ledger.vee_groups', 'vee_group', vee_group_id "
                             "FROM ledger.vee_groups ORDER BY vee_group_id",
    }
    return [statements[t] for t in topics if t in statements]


async def enqueue_all(conn: AsyncConnection[Any],
                      topics: Sequence[str] = ("ledger.vee_groups", "ledger.tariffs",
                                               "ledger.accounts", "ledger.meters")) -> int:
    """Queue every meter/account/tariff version/VEE group for republication (a new topic, a
    new consumer prefix, a lost topic). Returns how many rows were queued."""
    total = 0
    async with conn.transaction():
        for statement in enqueue_all_sql(topics):
            cur = await conn.execute(statement)
            total += cur.rowcount
        await conn.execute("SELECT pg_notify('ledger_outbox', '')")
    return total
