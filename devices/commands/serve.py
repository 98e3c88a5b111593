"""``unimeter command serve``: the long-running command control plane.

Strategy: one asyncio process with four loops over one database and one Kafka cluster,
any number of which may run side by side (consumer group; ``FOR UPDATE SKIP LOCKED``):

* **intake** consumes ``commands.requests`` (billing, rules, other services submit there)
  and ``commands.results`` (from the FEPs), and ``device.events`` for valves a meter closed
  itself for a safety cause. Each record is applied in its own database transaction through
  :class:`~devices.commands.service.CommandService` / :class:`~.dispatch.CommandEngine`;
  offsets are committed only after the database committed, so a crash replays, and replays
  are idempotent (command ids, result attempts). A record that cannot be applied goes to
  ``dlq.commands`` with the reason, and the loop goes on.
* **dispatcher** runs :meth:`~.dispatch.CommandEngine.dispatch_due` and
  :meth:`~.dispatch.CommandEngine.sweep` whenever ``NOTIFY unimeter_commands`` says there is
  work (the API and the CLI notify on commit), and at least every ``poll_interval_s``.
* **publisher** sends outbox rows (dispatches, alerts) with ``acks=all`` and deletes them in
  the same transaction that locked them;
* service operations (:mod:`devices.operations`) are advanced after every sweep, so a step
  whose command finished moves on within a poll interval;
* **heartbeat** touches a file the supervisor (``unimeter run``) checks.

Blocking database work runs in worker threads (``asyncio.to_thread``); the outbox publisher
and the listener use psycopg's async connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from psycopg_pool import ConnectionPool

from devices.commands import outbox
from devices.commands.dispatch import CommandEngine
from devices.commands.errors import CommandError, SafetyPolicyError
from devices.commands.service import CommandService
from devices.commands.settings import CommandSettings
from devices.operations import OperationService
from schemas import codec
from schemas.errors import MessageDecodeError, UnimeterError
from schemas.messages import CommandRequest, CommandResult, DeadLetter, DeviceEvent
from schemas.settings import DatabaseSettings, KafkaSettings

__all__ = ["SAFETY_CAUSES", "CommandServer", "ServerStats", "serve"]

log = logging.getLogger(__name__)

#: Causes for which a meter closes its own valve and the supply must stay closed.
SAFETY_CAUSES = frozenset({"tamper", "leak", "overload", "earthquake", "battery",
                           "magnetic", "over_temperature", "gas_alarm"})


@dataclass
class ServerStats:
    requests: int = 0
    results: int = 0
    events: int = 0
    dead_letters: int = 0
    dispatched: int = 0
    published: int = 0
    sweeps: int = 0
    operations_moved: int = 0
    started_at: float = field(default_factory=time.time)


class CommandServer:
    """The command control plane process (see the module docstring)."""

    def __init__(self, database: DatabaseSettings, kafka: KafkaSettings,
                 settings: CommandSettings | None = None, *, heartbeat_file: Path | None = None,
                 pool_size: int = 4, clock: Callable[[], datetime] | None = None) -> None:
        self.database = database
        self.kafka = kafka
        self.settings = settings or CommandSettings()
        self.heartbeat_file = heartbeat_file
        self.conninfo = database.conninfo("api")
        self.pool = ConnectionPool(self.conninfo, min_size=1, max_size=pool_size, open=False,
                                   name="unimeter-commands")
        kwargs: dict[str, Any] = {"clock": clock} if clock else {}
        self.service = CommandService(self.pool, self.settings, **kwargs)
        self.engine = CommandEngine(self.service)
        self.operations = OperationService(self.service)
        self.stats = ServerStats()
        self._wake = asyncio.Event()          # the dispatcher has work
        self._wake_publish = asyncio.Event()  # the outbox has rows
        self._producer: AIOKafkaProducer | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; a failing loop stops the process (the supervisor restarts
        it) after the others were cancelled cleanly."""
        await asyncio.to_thread(self.pool.open, True, 30.0)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka.bootstrap, acks="all", enable_idempotence=True,
            client_id=f"{self.kafka.client_id}-commands", linger_ms=5)
        await self._producer.start()
        tasks = [asyncio.create_task(coro, name=name) for name, coro in (
            ("intake", self._intake(stop)), ("dispatcher", self._dispatcher(stop)),
            ("publisher", self._publisher(stop)), ("listener", self._listener(stop)),
            ("heartbeat", self._heartbeat(stop)))]
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [*tasks, stopper]:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await self._producer.stop()
            await asyncio.to_thread(self.pool.close)

    # ------------------------------------------------------------------ intake

    async def _intake(self, stop: asyncio.Event) -> None:
        topics = {self.kafka.topic("commands.requests"): self._on_request,
                  self.kafka.topic("commands.results"): self._on_result,
                  self.kafka.topic("device.events"): self._on_event}
        consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=self.kafka.bootstrap,
            group_id=self.settings.consumer_group or self.kafka.group("commands"),
            client_id=f"{self.kafka.client_id}-commands", enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed")
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                for tp, records in batch.items():
                    handler = topics[tp.topic]
                    for record in records:
                        await self._apply(handler, record)
                if batch:
                    await consumer.commit()
                    self._wake.set()
                    self._wake_publish.set()
        finally:
            await consumer.stop()

    async def _apply(self, handler: Callable[[Any], Awaitable[None]], record: Any) -> None:
        try:
            await handler(record)
        except (MessageDecodeError, UnimeterError) as exc:
            await self._dead_letter(record, exc.to_dict())
        except psycopg.OperationalError:
            raise  # the database is gone: stop, the supervisor restarts us, Kafka replays
        except Exception as exc:  # a bug must not lose the record or stop the others
            log.exception("applying %s@%s failed", record.topic, record.offset)
            await self._dead_letter(record, {"error": type(exc).__name__, "reason": str(exc)})

    async def _on_request(self, record: Any) -> None:
        _, message = codec.decode(record.value, CommandRequest)
        assert isinstance(message, CommandRequest)
        self.stats.requests += 1
        # A refusal by the safety policy is stored as a rejected command (queryable by its id);
        # any other error has no command to attach to and goes to the dead-letter topic.
        with contextlib.suppress(SafetyPolicyError):
            await asyncio.to_thread(self.service.submit, message)

    async def _on_result(self, record: Any) -> None:
        _, message = codec.decode(record.value, CommandResult)
        assert isinstance(message, CommandResult)
        self.stats.results += 1
        applied = await asyncio.to_thread(self.engine.apply_result, message)
        if applied is None:
            raise CommandError(f"result for unknown command '{message.command_id}'",
                               where=f"device {message.device_id}",
                               hint="the command was not issued by this control plane")

    async def _on_event(self, record: Any) -> None:
        _, message = codec.decode(record.value, DeviceEvent)
        assert isinstance(message, DeviceEvent)
        attrs = message.attributes
        cause = str(attrs.get("cause") or attrs.get("alarm") or "")
        if attrs.get("valve") == "closed" and cause in SAFETY_CAUSES:
            self.stats.events += 1
            await asyncio.to_thread(self.service.record_safety_close, message.device_id, cause,
                                    source=f"device_event:{message.event_id}",
                                    actor=f"device:{message.device_id}")

    async def _dead_letter(self, record: Any, reason: dict[str, Any]) -> None:
        assert self._producer is not None
        self.stats.dead_letters += 1
        letter = DeadLetter(stage="commands",
                            reason={k: v if isinstance(v, str | int | float | bool) or v is None
                                    else str(v) for k, v in reason.items()},
                            ts=datetime.now(UTC), value=record.value or b"",
                            key_bytes=record.key, source_topic=record.topic,
                            partition=record.partition, offset=record.offset)
        await self._producer.send_and_wait(self.kafka.topic("dlq.commands"),
                                           codec.encode(letter, producer="commands"),
                                           key=letter.key() or None)

    # ------------------------------------------------------------------ dispatcher

    async def _dispatcher(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)
            self._wake.clear()
            while True:
                n = await asyncio.to_thread(self.engine.dispatch_due)
                self.stats.dispatched += n
                if n < self.settings.batch_size:
                    break
            report = await asyncio.to_thread(self.engine.sweep)
            self.stats.sweeps += 1
            self.stats.operations_moved += await asyncio.to_thread(self.operations.advance_due)
            self._wake_publish.set()
            if report.total():
                log.info("sweep: %s", report)
                self._wake.set()

    async def _listener(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute(f"LISTEN {outbox.NOTIFY_CHANNEL}")
            while not stop.is_set():
                async for _ in conn.notifies(timeout=5.0):
                    self._wake.set()
                    self._wake_publish.set()

    # ------------------------------------------------------------------ publisher

    async def _publisher(self, stop: asyncio.Event) -> None:
        assert self._producer is not None
        async with await psycopg.AsyncConnection.connect(self.conninfo) as conn:
            while not stop.is_set():
                sent = 0
                async with conn.transaction():
                    cur = await conn.execute(
                        "SELECT id, topic, key, value FROM ops.command_outbox ORDER BY id "
                        "LIMIT %s FOR UPDATE SKIP LOCKED", (self.settings.batch_size,))
                    rows = await cur.fetchall()
                    if rows:
                        futures = [await self._producer.send(self.kafka.topic(topic),
                                                             bytes(value), key=bytes(key))
                                   for _, topic, key, value in rows]
                        await asyncio.gather(*futures)
                        await conn.execute("DELETE FROM ops.command_outbox WHERE id = ANY (%s)",
                                           ([r[0] for r in rows],))
                        sent = len(rows)
                self.stats.published += sent
                if sent < self.settings.batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake_publish.wait(),
                                               self.settings.poll_interval_s)
                    self._wake_publish.clear()

    # ------------------------------------------------------------------ heartbeat

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        if self.heartbeat_file is None:
            await stop.wait()
            return
        self.heartbeat_file.parent.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            self.heartbeat_file.touch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)


async def serve(database: DatabaseSettings, kafka: KafkaSettings,
                settings: CommandSettings | None = None, *, stop: asyncio.Event | None = None,
                heartbeat_file: Path | None = None) -> ServerStats:
    """Library entry point: run the control plane until ``stop`` is set (or forever)."""
    server = CommandServer(database, kafka, settings, heartbeat_file=heartbeat_file)
    await server.run(stop or asyncio.Event())
    return server.stats
