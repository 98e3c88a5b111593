"""One device link: a TCP connection from a DTU, a concentrator or a directly connected meter.

Strategy: the session reads bytes, feeds its framer, and hands every whole frame to its
:class:`~ingest.stack.LinkStack`, which says what the frame means. It then

* **identifies** the link — the DTU id from its registration packet, the concentrator address
  from its login, or (``link=direct``) the meter address of the first frame — and checks with
  admission that the ledger knows it; until then only identity frames are accepted;
* **binds** every meter address heard through the link to it (the registry records meter →
  link → FEP, so commands find their way) and tracks "last heard" of the link and each meter;
* turns data frames into one publisher *unit* (the ``frames.raw`` record, the readings of the
  admitted meters, device events) and acknowledges the device only when the publisher says
  the unit is durable. Units are pipelined: frames keep being read while earlier units wait
  for Kafka, and acknowledgements leave in frame order from a writer task. A full spool
  means no acknowledgement: the device keeps its data and sends it again;
* enforces the service point's limits: largest frame (the framer's bound), a malformed-frame
  budget per window (then the link is closed), an identification deadline and an idle
  timeout; replies to commands go to the command router.

Bad input never escapes: every decode error becomes an invalid ``frames.raw`` record plus a
``dlq.ingest`` record with the reason, and is counted against the budget.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ingest.errors import PublishError
from ingest.publisher import OutRecord
from ingest.registry import SessionEntry
from ingest.stack import FramerLike, Inbound, LinkStack
from schemas.errors import UnimeterError
from schemas.messages import DeadLetter, Reading

if TYPE_CHECKING:
    from ingest.fep import FepRuntime
    from ingest.settings import ServicePointSettings

__all__ = ["LinkSession", "SessionStats"]

log = logging.getLogger(__name__)

_READ_CHUNK = 16 * 1024
_ACK_QUEUE = 512  # data units of one link waiting for Kafka before the link stops being read
_WRITE_HIGH_WATER = 256 * 1024  # unsent bytes to a device before its link stops being read
_WAITING, _DURABLE, _FAILED = 0, 1, 2


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_out: int = 0
    readings: int = 0
    malformed: int = 0
    garbage_bytes: int = 0
    acks: int = 0
    not_acked: int = 0
    rejected: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class LinkSession:
    """A connected link and what is known about it."""

    def __init__(self, runtime: FepRuntime, point_name: str, point: ServicePointSettings,
                 stack: LinkStack, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: str, session_id: str) -> None:
        self.runtime = runtime
        self.point_name = point_name
        self.point = point
        self.stack = stack
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.session_id = session_id
        self.link_id: str | None = None  # as the ledger writes it
        self.link_address: str | None = None  # as the link's protocol writes it
        self.connected_at = datetime.now(UTC)
        self.last_heard = self.connected_at
        #: meter address → meter id, for every meter heard through this link
        self.meters: dict[str, str] = {}
        self.meter_last_heard: dict[str, datetime] = {}
        self.stats = SessionStats()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._frame_seq = 0
        self._command_seq = 0
        self._malformed_at: collections.deque[float] = collections.deque()
        #: data units in frame order, waiting for durability: [state, ack bytes, frame id]
        #: (state: _WAITING, _DURABLE or _FAILED); acknowledgements leave from the head
        self._pending: collections.deque[list[Any]] = collections.deque()
        self._ack_room = asyncio.Event()  # set when the pending window has room again
        self._drained = asyncio.Event()  # set when nothing is pending
        self._drained.set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._held = False  # reading paused while the link's units wait for Kafka
        self._write_lock = asyncio.Lock()

    # ------------------------------------------------------------------ identity

    @property
    def identified(self) -> bool:
        return self.link_id is not None

    @property
    def device_id(self) -> str:
        return self.link_id or self.peer

    def next_frame_id(self) -> str:
        self._frame_seq += 1
        return f"{self.runtime.instance}/{self.session_id}/{self._frame_seq}"

    def next_command_sequence(self) -> int:
        self._command_seq = (self._command_seq + 1) % 256
        return self._command_seq

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        framer = self.stack.new_framer(self.point.max_frame_bytes)
        reader, transport = self.reader, self.writer.transport
        clock = self.runtime.clock
        self._last_read = loop.time()
        self._arm_watchdog(loop)
        try:
            while not self.closed.is_set():
                if len(self._pending) >= _ACK_QUEUE:  # Kafka is behind: stop reading
                    self._ack_room.clear()
                    self._held = True  # we hold the link back: not idle
                    try:
                        await self._ack_room.wait()
                    finally:
                        self._held = False
                        self._last_read = loop.time()
                    continue
                try:
                    data = await reader.read(_READ_CHUNK)
                except (ConnectionError, OSError) as exc:
                    if not self.closed.is_set():
                        self.close_reason = f"connection error: {exc}"
                    break
                if not data:
                    if not self.closed.is_set():
                        self.close_reason = "closed by peer"
                    break
                self._last_read = loop.time()
                # the frames of one read arrived together: one reception time for all
                self.last_heard = received_at = clock.now()
                view = memoryview(data)
                while view and not self.closed.is_set():
                    room = framer.max_buffer - framer.buffered
                    if room <= 0:
                        # The buffer holds the start of a frame that cannot complete within
                        # the bound (a false start byte in garbage): give it up.
                        framer.resync()
                    else:
                        framer.feed(view[:room])
                        view = view[room:]
                    await self._drain_framer(framer, received_at)
                if transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
                    # the device does not read its acks and replies: wait before reading more
                    with contextlib.suppress(ConnectionError, OSError):
                        await self.writer.drain()
                if len(data) == _READ_CHUNK:
                    await asyncio.sleep(0)  # more is buffered: every link gets its turn
        finally:
            self.closed.set()
            if self._watchdog is not None:
                self._watchdog.cancel()
            if self._pending:  # acknowledge what becomes durable while we wait
                self._ack_room.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._drained.wait(),
                                           timeout=self.runtime.ack_timeout_s + 2)
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 2)

    def _arm_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        timeout = self.point.idle_timeout_s if self.identified else self.point.identify_timeout_s
        self._watchdog = loop.call_at(self._last_read + timeout, self._check_idle, loop)

    def _check_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """The idle / identification deadline: one timer per period and link, re-armed from
        the last read, instead of a ``wait_for`` (a task and a timer) around every read."""
        self._watchdog = None
        if self.closed.is_set():
            return
        timeout = self.point.idle_timeout_s if self.identified else self.point.identify_timeout_s
        now = loop.time()
        if self._held:  # paused by us, not idle: look again a period from now
            self._watchdog = loop.call_at(now + timeout, self._check_idle, loop)
            return
        if now >= self._last_read + timeout:
            self.close("idle timeout" if self.identified else "not identified in time")
            return
        self._arm_watchdog(loop)

    async def _drain_framer(self, framer: FramerLike, received_at: datetime) -> None:
        while not self.closed.is_set():
            frame = framer.next_frame()
            garbage = framer.take_garbage()
            if garbage:
                await self._malformed(garbage, "garbage: bytes that are not a frame of "
                                               f"{self.stack.protocol}")
            if not isinstance(frame, bytes | bytearray):
                return
            await self._on_frame(bytes(frame), received_at, getattr(framer, "last_spec", None))

    def close(self, reason: str) -> None:
        """Ask the session to end (replaced by a newer connection, budget spent, shutdown)."""
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
            self.writer.close()

    # ------------------------------------------------------------------ frames

    async def _on_frame(self, data: bytes, received_at: datetime | None = None,
                        spec: Any = None) -> None:
        self.stats.frames_in += 1
        if received_at is None:
            received_at = self.runtime.clock.now()
        try:
            inbound = self.stack.interpret(data, spec=spec)
        except UnimeterError as exc:
            await self._malformed(data, str(exc), error=exc)
            return
        kind = inbound.kind
        if kind in ("registration", "login"):
            await self._identify(inbound, data, received_at)
            return
        if not self.identified:
            if self.point.link == "direct" and inbound.address and kind in ("data", "reply"):
                if not await self._identify_direct(inbound, data, received_at):
                    return
            else:
                await self._malformed(data, f"{kind} frame before the link identified itself",
                                      count=False)
                return
        if kind == "heartbeat":
            self.runtime.registry.record(self._link_entry(online=True))
            self.runtime.publish_soon([self._frame_record(data, received_at, "in")])
            if inbound.reply_now:
                await self.send(inbound.reply_now, "heartbeat reply")
            return
        if kind == "logout":
            self.runtime.publish_soon([self._frame_record(data, received_at, "in")])
            if inbound.reply_now:
                await self.send(inbound.reply_now, "logout reply")
            self.close("logout")
            return
        solicited = False
        if kind in ("reply", "confirm"):
            # A reply that answers our request (a command, a poll) needs no acknowledgement;
            # one nobody asked for is a meter pushing its data through the link.
            solicited = self.runtime.commands.on_reply(self, inbound)
        if inbound.reply_now:
            await self.send(inbound.reply_now, f"{kind} reply")
        await self._publish_data(inbound, data, received_at, solicited=solicited)

    async def _publish_data(self, inbound: Inbound, data: bytes, received_at: datetime, *,
                            solicited: bool = False) -> None:
        runtime = self.runtime
        frame_id = self.next_frame_id()
        records: list[OutRecord] = [runtime.messages.frame(
            frame_id=frame_id, device_id=self.device_id, service_point=self.point_name,
            peer=self.peer, protocol=inbound.protocol, direction="in", data=data,
            received_at=received_at)]
        source = "poll" if solicited else "tcp"
        admitted: dict[str, str | None] = {}  # one decision per meter and frame
        readings: list[Reading] = []
        for draft in inbound.readings:
            if draft.address in admitted:
                meter_id = admitted[draft.address]
            else:
                meter_id = admitted[draft.address] = self._admit(
                    draft.address, inbound.protocol, records, received_at)
            if meter_id is None:
                continue
            readings.append(Reading(
                meter_id=meter_id, register=draft.register,
                ts=draft.ts or runtime.reception.stamp(meter_id, draft.register, received_at),
                value=draft.value, unit=draft.unit, received_at=received_at, kind=draft.kind,  # type: ignore[arg-type]
                interval_s=draft.interval_s, meter_clock=draft.meter_clock, source=source,
                device_id=self.device_id, fep=runtime.instance, protocol=inbound.protocol,
                status=draft.status, frame_id=frame_id))
        if readings:
            records.extend(runtime.messages.readings(readings, event_time=received_at))
            self.stats.readings += len(readings)
        for number, event in enumerate(inbound.events):
            meter_id = self.meters.get(event.address) if event.address else None
            if event.address and meter_id is None:
                meter_id = self._admit(event.address, inbound.protocol, records, received_at)
                if meter_id is None:
                    continue
            if not runtime.event_changed(meter_id or self.device_id, event.kind,
                                         event.attributes):
                continue
            records.append(runtime.messages.event(
                device_id=meter_id or self.device_id, kind=event.kind,
                event_id=f"{frame_id}#{number}", meter_id=meter_id,
                severity=event.severity,  # type: ignore[arg-type]
                ts=received_at, attributes={**event.attributes, "link_id": self.link_id}))
        entry: list[Any] = [_WAITING, None if solicited else inbound.ack, frame_id]
        self._pending.append(entry)
        self._drained.clear()
        try:
            runtime.publisher.submit_callback(records, lambda durability, error: self._settle(
                entry, error))
        except PublishError as exc:  # shutting down: this frame is not acknowledged
            self._settle(entry, exc)

    def _admit(self, address: str, protocol: str, records: list[OutRecord],
               received_at: datetime) -> str | None:
        """The meter id for ``address`` on this link, or None (rejected, alerted)."""
        known = self.meters.get(address)
        runtime = self.runtime
        decision = runtime.admission_for(self.point_name).admit_meter(
            self.point_name, self.link_id or "", address, protocol)
        if not decision.admitted:
            self.stats.rejected += 1
            alert = runtime.messages.alert(
                code="admission_rejected", object_type="link", object_id=self.device_id,
                limit_key=f"{self.device_id}/{address}",
                severity="warning", reason=f"{decision.reason} (reported through link "
                                           f"{self.device_id} at {self.point_name})",
                attributes={"address": address, "peer": self.peer,
                            "service_point": self.point_name})
            if alert is not None:
                records.append(alert)
                records.append(runtime.messages.event(
                    device_id=self.device_id, kind="admission_rejected", severity="warning",
                    attributes={"address": address, "reason": decision.reason}))
            return None
        meter_id = decision.meter_id or address
        now = received_at
        if decision.auto_registered:
            runtime.audit_auto_registration(self.point_name, self.link_id or "", address,
                                            protocol, meter_id, self.peer)
            records.append(runtime.messages.event(
                device_id=meter_id, meter_id=meter_id, kind="auto_registered",
                severity="warning", attributes={"address": address, "link_id": self.link_id,
                                                "service_point": self.point_name}))
            alert = runtime.messages.alert(
                code="auto_registered", object_type="meter", object_id=meter_id,
                severity="info", reason=f"meter {address} admitted without a ledger entry "
                                        f"(auto-registration at {self.point_name})")
            if alert is not None:
                records.append(alert)
        if known is None:
            self.meters[address] = meter_id
            runtime.bind_meter(self, meter_id)
        previous = self.meter_last_heard.get(meter_id)
        self.meter_last_heard[meter_id] = now
        if previous is not None and (now - previous).total_seconds() < \
                runtime.settings.registry_flush_s:
            return meter_id  # the registry heard from it within this flush interval
        runtime.registry.record(SessionEntry(
            device_id=meter_id, kind="meter", service_point=self.point_name, online=True,
            last_heard=now, link_id=self.link_id, address=address, protocol=protocol,
            peer=self.peer, connected_at=self.connected_at))
        return meter_id

    # ------------------------------------------------------------------ identification

    async def _identify(self, inbound: Inbound, data: bytes, received_at: datetime) -> None:
        link_id = inbound.link_id or inbound.address
        if not link_id:
            await self._malformed(data, f"{inbound.kind} without an identity")
            return
        if self.identified and link_id == self.link_address:  # a repeated login: answer again
            if inbound.reply_now:
                await self.send(inbound.reply_now, f"{inbound.kind} reply")
            return
        await self._become(link_id, inbound, data, received_at)
        if self.identified and inbound.reply_now:
            await self.send(inbound.reply_now, f"{inbound.kind} reply")

    async def _identify_direct(self, inbound: Inbound, data: bytes, received_at: datetime
                               ) -> bool:
        await self._become(inbound.address, inbound, data, received_at)
        return self.identified

    async def _become(self, link_id: str, inbound: Inbound, data: bytes,
                      received_at: datetime) -> None:
        runtime = self.runtime
        admission = runtime.admission_for(self.point_name)
        decision = admission.admit_link(self.point_name, link_id)
        if self.point.link == "direct":
            decision = admission.admit_meter(self.point_name, link_id, inbound.address,
                                             inbound.protocol)
        if not decision.admitted:
            self.stats.rejected += 1
            records = [self._frame_record(data, received_at, "in", device_id=link_id),
                       runtime.messages.event(device_id=link_id, kind="admission_rejected",
                                              severity="warning",
                                              attributes={"reason": decision.reason,
                                                          "peer": self.peer})]
            alert = runtime.messages.alert(
                code="link_rejected", object_type="link", object_id=link_id,
                severity="major", reason=f"{decision.reason}; connection from {self.peer} "
                                         f"closed", attributes={"service_point": self.point_name})
            if alert is not None:
                records.append(alert)
            runtime.publish_soon(records)
            self.close(f"link {link_id} rejected: {decision.reason}")
            return
        self.link_address = link_id
        self.link_id = runtime.ledger.canonical_link(link_id)
        runtime.attach_link(self)
        if self._watchdog is not None:  # from the identification deadline to the idle one
            self._watchdog.cancel()
            self._arm_watchdog(asyncio.get_running_loop())
        kind = "login" if inbound.kind in ("registration", "login") else "online"
        records = [self._frame_record(data, received_at, "in"),
                   runtime.messages.event(device_id=link_id, kind="online",
                                          attributes={"peer": self.peer,
                                                      "service_point": self.point_name,
                                                      "via": kind, "fep": runtime.instance})]
        runtime.publish_soon(records)
        runtime.registry.record(self._link_entry(online=True))
        runtime.commands.device_online(self, [self.link_id])

    def _link_entry(self, *, online: bool) -> SessionEntry:
        now = datetime.now(UTC)
        return SessionEntry(device_id=self.device_id, kind="link", service_point=self.point_name,
                            online=online, last_heard=self.last_heard, link_id=self.link_id,
                            protocol=self.stack.protocol, peer=self.peer,
                            connected_at=self.connected_at,
                            disconnected_at=None if online else now)

    def offline_entries(self) -> list[SessionEntry]:
        now = datetime.now(UTC)
        entries = [self._link_entry(online=False)]
        for address, meter_id in self.meters.items():
            entries.append(SessionEntry(
                device_id=meter_id, kind="meter", service_point=self.point_name, online=False,
                last_heard=self.meter_last_heard.get(meter_id, self.last_heard),
                link_id=self.link_id, address=address, protocol=self.stack.protocol,
                peer=self.peer, connected_at=self.connected_at, disconnected_at=now))
        return entries

    # ------------------------------------------------------------------ malformed input

    async def _malformed(self, data: bytes, reason: str, *, error: UnimeterError | None = None,
                         count: bool = True) -> None:
        runtime = self.runtime
        self.stats.malformed += 1
        runtime.stats["malformed"] += 1
        frame_id = self.next_frame_id()
        detail: dict[str, Any] = error.to_dict() if error is not None else {"reason": reason}
        detail.update({"protocol": self.stack.protocol, "service_point": self.point_name,
                       "peer": self.peer, "link_id": self.link_id or "", "frame_id": frame_id})
        reason_fields = {k: (v if isinstance(v, str | int | float | bool | None) else str(v))
                         for k, v in detail.items()}
        runtime.publish_soon([
            self._frame_record(data, self.runtime.clock.now(), "in", valid=False, error=reason,
                               frame_id=frame_id),
            runtime.messages.message("dlq.ingest", DeadLetter(
                stage="ingest", reason=reason_fields, ts=datetime.now(UTC), value=data,
                key_bytes=self.device_id.encode(), source_topic=None)),
        ])
        if not count:
            return
        now = time.monotonic()
        window = self.point.malformed_window_s
        self._malformed_at.append(now)
        while self._malformed_at and now - self._malformed_at[0] > window:
            self._malformed_at.popleft()
        if len(self._malformed_at) > self.point.malformed_budget:
            runtime.stats["closed_malformed"] += 1
            alert = runtime.messages.alert(
                code="malformed_budget", object_type="link", object_id=self.device_id,
                severity="warning",
                reason=f"more than {self.point.malformed_budget} malformed frames in "
                       f"{window:.0f} s from {self.peer}; link closed",
                attributes={"service_point": self.point_name})
            if alert is not None:
                runtime.publish_soon([alert])
            self.close("malformed-frame budget spent")

    # ------------------------------------------------------------------ output

    def _frame_record(self, data: bytes, received_at: datetime, direction: str, *,
                      valid: bool = True, error: str | None = None, frame_id: str | None = None,
                      device_id: str | None = None) -> OutRecord:
        return self.runtime.messages.frame(
            frame_id=frame_id or self.next_frame_id(), device_id=device_id or self.device_id,
            service_point=self.point_name, peer=self.peer, protocol=self.stack.protocol,
            direction=direction, data=data, received_at=received_at, valid=valid, error=error)

    async def send(self, data: bytes, what: str = "") -> bool:
        """Write a frame to the device and record it in ``frames.raw`` (direction out)."""
        if self.closed.is_set() and self.writer.is_closing():
            return False
        async with self._write_lock:
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, OSError) as exc:
                self.close(f"write failed: {exc}")
                return False
        self.stats.frames_out += 1
        self.runtime.publish_soon([self._frame_record(data, self.runtime.clock.now(), "out")])
        return True

    def _settle(self, entry: list[Any], error: BaseException | None) -> None:
        """A unit became durable (or failed): acknowledge, in frame order, every unit from
        the oldest on that is settled — with one socket write (and one ``frames.raw``
        record each, published together): under load many units of a link become durable
        in the same Kafka round, and one write per round instead of one per frame is most
        of what an acknowledgement costs."""
        if error is None:
            entry[0] = _DURABLE
        else:
            entry[0] = _FAILED
            self.stats.not_acked += 1
            if isinstance(error, PublishError):
                self.runtime.stats["not_acked"] += 1
                log.warning("frame %s not acknowledged: %s", entry[2], error)
            else:
                log.error("frame %s: publishing failed: %r", entry[2], error)
        pending = self._pending
        if not pending or pending[0][0] == _WAITING:
            return
        acks: list[bytes] = []
        while pending and pending[0][0] != _WAITING:
            state, ack, _frame_id = pending.popleft()
            if state == _DURABLE and ack is not None:
                acks.append(ack)
        if len(pending) < _ACK_QUEUE:
            self._ack_room.set()
        if not pending:
            self._drained.set()
        if acks:
            self.stats.acks += self._write_acks(acks)

    def _write_acks(self, acks: list[bytes]) -> int:
        """Write acknowledgements in one go; each is still its own ``frames.raw`` record.
        (No ``drain`` here: the read loop waits for a device that does not read.)"""
        if self.writer.is_closing():
            return 0
        try:
            self.writer.write(acks[0] if len(acks) == 1 else b"".join(acks))
        except (ConnectionError, OSError, RuntimeError) as exc:
            self.close(f"write failed: {exc}")
            return 0
        self.stats.frames_out += len(acks)
        sent_at = self.runtime.clock.now()
        self.runtime.publish_soon([self._frame_record(a, sent_at, "out") for a in acks])
        return len(acks)

    def bound_meter_ids(self) -> Sequence[str]:
        return list(self.meters.values())
