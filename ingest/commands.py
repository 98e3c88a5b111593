"""Command delivery: ``commands.dispatch`` in, frames to devices, ``commands.results`` out.

Strategy: every FEP instance reads the whole ``commands.dispatch`` topic in a consumer group
of its own (``unimeter-fep-<instance>``) and considers each dispatch addressed to it
(``fep`` is this instance or unset, ``service_point`` one it serves or unset). Delivery is
coordinated through the registry's wake-queue, never through luck:

1. the dispatch is *parked* (``INSERT … ON CONFLICT DO NOTHING`` on ``command_id``) — every
   FEP that sees it may try, it is stored once, and the offset is committed only after that;
2. if this FEP holds the device's link right now, it *claims* the command (an atomic
   ``UPDATE … WHERE state='pending'``) and delivers it; an FEP that does not hold the device
   leaves it pending;
3. when a device connects or wakes (a DTU registers, an NB-IoT meter publishes), the FEP that
   got it claims that device's pending commands and delivers them inside the wake window;
4. a sweeper marks pending commands past their expiry ``expired`` (exactly once, whoever
   runs it first) and publishes that result.

Delivery encodes the unified command with the link's stack (``decoders``), sends it, and
waits for the reply that matches (address, identifier, sequence). No reply within
``reply_timeout_s`` → retry up to ``max_attempts``; the link dropped → the command goes back
to pending for the next connection; an abnormal reply → ``failed`` with the device's reason.
Every step publishes a :class:`~schemas.messages.CommandResult`: ``queued``, ``sent``,
``confirmed`` / ``failed`` / ``rejected`` / ``expired``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ingest.registry import PendingCommand
from ingest.stack import CommandFrame, Inbound, LinkStack
from schemas import codec
from schemas.errors import MessageDecodeError, UnimeterError
from schemas.messages import CommandDispatch, CommandResult

if TYPE_CHECKING:
    from ingest.fep import FepRuntime

__all__ = ["CommandLink", "CommandRouter", "delivery_params"]

log = logging.getLogger(__name__)


class CommandLink(Protocol):
    """What the router needs of a link: a TCP session or an NB-IoT wake window."""

    stack: LinkStack
    closed: asyncio.Event
    point_name: str

    @property
    def device_id(self) -> str: ...

    def next_command_sequence(self) -> int: ...

    async def send(self, data: bytes, what: str = "") -> bool: ...


@dataclass
class _Waiter:
    command: CommandFrame
    future: asyncio.Future[Inbound]


@dataclass
class RouterStats:
    dispatches: int = 0
    ignored: int = 0
    parked: int = 0
    delivered: int = 0
    confirmed: int = 0
    failed: int = 0
    expired: int = 0
    rejected: int = 0
    timeouts: int = 0
    undecodable: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


class CommandRouter:
    def __init__(self, runtime: FepRuntime, *, expire_every_s: float = 5.0) -> None:
        self.runtime = runtime
        self.expire_every_s = expire_every_s
        self.stats = RouterStats()
        self._waiters: dict[int, list[_Waiter]] = {}  # id(link) → waiters
        self._tasks: set[asyncio.Task[Any]] = set()
        self._consumer: Any = None
        self._loops: list[asyncio.Task[None]] = []
        #: Set once the dispatch consumer holds its partitions and knows where it reads
        #: from: a command dispatched after that reaches this FEP even with the "latest"
        #: reset of a new consumer group (one dispatched before it may be skipped).
        self.intake_ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, consume: bool = True) -> None:
        if consume:
            from aiokafka import AIOKafkaConsumer

            kafka = self.runtime.kafka
            reset = "earliest" if self.runtime.settings.registry == "postgres" else "latest"
            self._consumer = AIOKafkaConsumer(
                kafka.topic("commands.dispatch"), bootstrap_servers=kafka.bootstrap,
                group_id=kafka.group(f"fep-{self.runtime.instance}"),
                client_id=f"{kafka.client_id}-{self.runtime.instance}-commands",
                enable_auto_commit=False, auto_offset_reset=reset)
            await self._consumer.start()
            self._loops.append(asyncio.create_task(self._consume(), name="commands-consume"))
        self._loops.append(asyncio.create_task(self._expire_loop(), name="commands-expire"))

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

    # ------------------------------------------------------------------ intake

    async def _consume(self) -> None:
        consumer = self._consumer
        while not self.intake_ready.is_set():
            try:
                if not consumer.assignment():  # the group join completes in the background
                    await asyncio.sleep(0.05)
                    continue
                for tp in consumer.assignment():
                    await consumer.position(tp)  # resolve the reset now, not at first fetch
                self.intake_ready.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away at start: the join retries itself
                log.warning("command intake not ready: %r; retrying", exc)
                await asyncio.sleep(1.0)
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                for records in batch.values():
                    for record in records:
                        await self.handle_raw(record.value)
                if batch:
                    await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a registry outage: retry the batch later
                log.warning("command intake: %r; retrying", exc)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await consumer.seek_to_committed()

    async def handle_raw(self, value: bytes) -> None:
        """One ``commands.dispatch`` record (raises only if the registry is unreachable)."""
        self.stats.dispatches += 1
        try:
            _, message = codec.decode(value, CommandDispatch)
        except MessageDecodeError as exc:
            self.stats.undecodable += 1
            log.warning("commands.dispatch record skipped: %s", exc)
            return
        assert isinstance(message, CommandDispatch)
        await self.handle(message, value)

    def _mine(self, d: CommandDispatch) -> bool:
        runtime = self.runtime
        if d.fep and d.fep != runtime.instance:
            return False
        if d.service_point and d.service_point not in runtime.points:
            return False
        return not (not d.service_point and not d.fep and not runtime.serves_protocol(d.protocol))

    async def handle(self, d: CommandDispatch, envelope: bytes | None = None) -> None:
        if not self._mine(d):
            self.stats.ignored += 1
            return
        expires_at = d.expires_at or (d.dispatched_at + timedelta(
            seconds=self.runtime.settings.command_default_ttl_s))
        envelope = envelope or codec.encode(d, producer=self.runtime.instance)
        inserted = await self.runtime.registry.park(PendingCommand(
            command_id=d.command_id, device_id=d.device_id, envelope=envelope,
            expires_at=expires_at))
        link = self.runtime.link_for_device(d.device_id, d.link_id)
        if link is not None and self._awake(link):
            claimed = await self.runtime.registry.claim(d.command_id)
            if claimed is not None:
                self._spawn(self._deliver(link, d))
            return
        if inserted:
            self.stats.parked += 1
            holder = await self._holder(d.device_id)
            detail = ("waiting for the device's next connection" if holder is None
                      else f"held by {holder}; waiting for delivery there")
            await self._result(d, "queued", detail=detail)

    @staticmethod
    def _awake(link: CommandLink) -> bool:
        return not link.closed.is_set()

    async def _holder(self, device_id: str) -> str | None:
        try:
            return await self.runtime.registry.holder(device_id)
        except Exception:  # informational only
            return None

    def device_online(self, link: CommandLink, device_ids: Sequence[str]) -> None:
        """A device connected or woke up: deliver what waits for it."""
        self._spawn(self._claim_and_deliver(link, list(device_ids)))

    async def _claim_and_deliver(self, link: CommandLink, device_ids: list[str]) -> None:
        try:
            pending = await self.runtime.registry.claim_for(device_ids)
        except Exception as exc:
            log.warning("cannot claim commands for %s: %r", device_ids, exc)
            return
        for item in pending:
            try:
                _, message = codec.decode(item.envelope, CommandDispatch)
            except MessageDecodeError as exc:
                await self.runtime.registry.finish(item.command_id, f"undecodable: {exc}")
                continue
            assert isinstance(message, CommandDispatch)
            await self._deliver(link, message)  # one after another: a serial bus

    # ------------------------------------------------------------------ delivery

    async def _deliver(self, link: CommandLink, d: CommandDispatch) -> None:
        registry = self.runtime.registry
        attempt = max(1, d.attempt)
        if d.expires_at is not None and d.expires_at <= datetime.now(UTC):
            self.stats.expired += 1
            await registry.finish(d.command_id, "expired")
            await self._result(d, "expired", attempt=attempt, detail="expired before delivery")
            return
        while True:
            try:
                meter = self.runtime.ledger.meters.get(d.device_id)
                frame = link.stack.encode_command(d.command, d.address,
                                                  delivery_params(d, self.runtime.clock.now()),
                                                  sequence=link.next_command_sequence(),
                                                  medium=meter.medium if meter else None,
                                                  link_id=_link_address(link),
                                                  handler=d.handler or None)
            except UnimeterError as exc:
                self.stats.rejected += 1
                await registry.finish(d.command_id, "rejected")
                await self._result(d, "rejected", attempt=attempt, detail=str(exc),
                                   error_code=type(exc).__name__)
                return
            sent, reply = await self.exchange(
                link, frame, wait_s=d.reply_timeout_s, what=f"command {d.command}",
                on_sent=functools.partial(self._sent, d, attempt, link))
            if not sent:
                await registry.release(d.command_id)
                await self._result(d, "queued", attempt=attempt,
                                   detail="link lost before sending; waiting for the "
                                          "device's next connection")
                return
            if not frame.expects_reply:
                await registry.finish(d.command_id, "delivered")
                await self._result(d, "delivered", attempt=attempt)
                return
            if reply is not None:
                ok, details = link.stack.reply_outcome(frame, reply)
                status = "confirmed" if ok else "failed"
                if ok:
                    self.stats.confirmed += 1
                else:
                    self.stats.failed += 1
                await registry.finish(d.command_id, status)
                await self._result(d, status, attempt=attempt, reply=details,
                                   error_code=None if ok else "device_refused",
                                   detail="" if ok else "the device answered abnormally")
                return
            if link.closed.is_set():
                await registry.release(d.command_id)
                await self._result(d, "queued", attempt=attempt,
                                   detail="link lost while waiting for the reply; will retry "
                                          "on the next connection")
                return
            self.stats.timeouts += 1
            if attempt >= d.max_attempts:
                self.stats.failed += 1
                await registry.finish(d.command_id, "failed")
                await self._result(d, "failed", attempt=attempt, error_code="timeout",
                                   detail=f"no reply in {d.reply_timeout_s:g} s after "
                                          f"{attempt} attempts")
                return
            attempt += 1

    async def _sent(self, d: CommandDispatch, attempt: int, link: CommandLink) -> None:
        self.stats.delivered += 1
        await self._result(d, "sent", attempt=attempt,
                           detail=f"via {link.device_id} at {link.point_name}")

    async def exchange(self, link: CommandLink, frame: CommandFrame, *, wait_s: float,
                       what: str = "request", on_sent: Callable[[], Awaitable[None]] | None = None
                       ) -> tuple[bool, Inbound | None]:
        """Send ``frame`` on ``link`` and wait for its reply: (sent?, reply or None).

        The reply is matched by the stack (address, identifier, sequence); replies that
        match nothing waiting are ordinary data for the session.
        """
        waiter = _Waiter(frame, asyncio.get_running_loop().create_future())
        self._waiters.setdefault(id(link), []).append(waiter)
        try:
            if not await link.send(frame.data, what):
                return False, None
            if on_sent is not None:
                await on_sent()
            if not frame.expects_reply:
                return True, None
            return True, await self._wait_reply(link, waiter, wait_s=wait_s)
        finally:
            waiters = self._waiters.get(id(link), [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(id(link), None)

    async def _wait_reply(self, link: CommandLink, waiter: _Waiter, *, wait_s: float
                          ) -> Inbound | None:
        closed: asyncio.Future[Any] = asyncio.ensure_future(link.closed.wait())
        watched: set[asyncio.Future[Any]] = {waiter.future, closed}
        try:
            done, _ = await asyncio.wait(watched, timeout=wait_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if waiter.future in done:
            return waiter.future.result()
        return None

    def on_reply(self, link: CommandLink, inbound: Inbound) -> bool:
        """A reply or confirmation came in on ``link``: wake the command waiting for it."""
        for waiter in self._waiters.get(id(link), []):
            if not waiter.future.done() and link.stack.reply_matches(waiter.command, inbound):
                waiter.future.set_result(inbound)
                return True
        return False

    # ------------------------------------------------------------------ expiry

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.expire_every_s)
            try:
                await self.expire_now()
            except Exception as exc:
                log.warning("command expiry sweep: %r", exc)

    async def expire_now(self) -> int:
        expired = await self.runtime.registry.expire_due()
        for item in expired:
            try:
                _, message = codec.decode(item.envelope, CommandDispatch)
            except MessageDecodeError:
                continue
            assert isinstance(message, CommandDispatch)
            self.stats.expired += 1
            await self._result(message, "expired", detail="the device did not connect before "
                                                          "the command expired")
        return len(expired)

    # ------------------------------------------------------------------ results

    async def _result(self, d: CommandDispatch, status: str, *, attempt: int | None = None,
                      detail: str = "", error_code: str | None = None,
                      reply: dict[str, Any] | None = None) -> None:
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        result = CommandResult(command_id=d.command_id, device_id=d.device_id,
                               status=status,  # type: ignore[arg-type]
                               ts=datetime.now(UTC), fep=self.runtime.instance,
                               attempt=attempt or d.attempt, detail=detail,
                               error_code=error_code, reply=reply or {})
        try:
            await self.runtime.publisher.publish([self.runtime.messages.message(
                "commands.results", result)])
        except Exception as exc:
            log.error("command %s: result '%s' could not be published: %r", d.command_id,
                      status, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("command delivery failed: %r", task.exception())


def delivery_params(d: CommandDispatch, now: datetime | None = None) -> dict[str, Any]:
    """The encoder parameters at the moment of delivery.

    A ``sync_time`` without ``time`` sets the meter to the FEP's clock *now*: the command may
    have waited hours for a sleeping meter, so the time of submission would be wrong by
    that much. Each attempt takes the clock again.
    """
    if d.command == "sync_time" and not d.params.get("time"):
        return {**d.params, "time": (now or datetime.now(UTC)).isoformat()}
    return d.params


def _link_address(link: CommandLink) -> str:
    """The link's own address as its protocol writes it (a concentrator's A1A2)."""
    return getattr(link, "link_address", None) or link.device_id
