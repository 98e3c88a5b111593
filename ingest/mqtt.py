"""MQTT ingest: NB-IoT and LoRa meters that publish to the broker and listen for a moment.

Strategy: the FEP subscribes (QoS 1, persistent session, optionally a shared subscription so
N FEPs split the traffic) to ``<root>/meters/+/up``; the ``+`` is the device id. Each payload
is one frame of the service point's protocol (binary CJ/T 188, or any protocol ``decoders``
knows), interpreted by the stack exactly as a TCP frame would be.

Guarantees: the PUBACK is *manual* — it leaves only once the frame's unit is durable (Kafka or
spool), so a crash before that makes the broker redeliver. Redeliveries (QoS 1 may deliver
twice) are absorbed by natural key: a reading (meter, register, time) published recently is
not published again. After the unit is durable the device gets its acknowledgement on
``<root>/meters/<device>/down``: the protocol's own ack frame when the stack has one, else
``{"type": "ack", "ref": "<first 16 hex digits of sha256(uplink payload)>"}``.

Wake windows: an uplink opens (or extends) a window of ``wake_window_s`` in which the meter
listens. The window is a :class:`~ingest.commands.CommandLink`: on opening, the commands
waiting for the meter are claimed and published to its downlink topic, and the replies it
sends back are matched like any other. When the window closes the meter is offline again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ingest.errors import PublishError
from ingest.events import new_session_id
from ingest.publisher import OutRecord
from ingest.registry import SessionEntry
from ingest.stack import LinkStack
from schemas.errors import UnimeterError
from schemas.messages import DeadLetter, Reading
from schemas.settings import MqttSettings

if TYPE_CHECKING:
    from ingest.fep import FepRuntime
    from ingest.settings import ServicePointSettings

__all__ = ["MqttIngest", "NbiotLink"]

log = logging.getLogger(__name__)

_MAX_INFLIGHT = 2000


class NbiotLink:
    """A meter's wake window: the link through which its commands go while it listens."""

    def __init__(self, ingest: MqttIngest, device: str) -> None:
        self.ingest = ingest
        self.stack: LinkStack = ingest.stack
        self.point_name = ingest.name
        self.device = device
        self.session_id = new_session_id()
        self.closed = asyncio.Event()
        self.connected_at = datetime.now(UTC)
        self.last_heard = self.connected_at
        self.deadline = 0.0
        self.meters: dict[str, str] = {}
        self._seq = 0
        self._frame_seq = 0

    @property
    def device_id(self) -> str:
        return self.device

    def next_command_sequence(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def next_frame_id(self) -> str:
        self._frame_seq += 1
        return f"{self.ingest.runtime.instance}/{self.session_id}/{self._frame_seq}"

    def touch(self) -> None:
        loop = asyncio.get_running_loop()
        self.last_heard = datetime.now(UTC)
        self.deadline = loop.time() + self.ingest.point.wake_window_s

    async def send(self, data: bytes, what: str = "") -> bool:
        if self.closed.is_set():
            return False
        return await self.ingest.downlink(self, data)

    def close(self, reason: str = "") -> None:
        self.closed.set()


class MqttIngest:
    def __init__(self, runtime: FepRuntime, name: str, point: ServicePointSettings,
                 stack: LinkStack, mqtt: MqttSettings) -> None:
        self.runtime = runtime
        self.name = name
        self.point = point
        self.stack = stack
        self.mqtt = mqtt
        root = mqtt.topic_root.rstrip("/")
        self.filter = f"{root}/{point.mqtt_topic}"
        self._device_index = self.filter.split("/").index("+")
        self._down = f"{root}/{point.mqtt_down_topic}"
        self.links: dict[str, NbiotLink] = {}
        self._seen: collections.OrderedDict[tuple[str, str, datetime], None] = \
            collections.OrderedDict()
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._inflight = asyncio.Semaphore(_MAX_INFLIGHT)
        self._pending: set[asyncio.Task[None]] = set()
        self._reconnect = asyncio.Event()
        self.connected = asyncio.Event()
        self.stats: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.name}")
        self._janitor = asyncio.create_task(self._close_windows(), name=f"mqtt-win-{self.name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 10)

    async def stop(self) -> None:
        for task in (self._task, self._janitor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)

    async def _run(self) -> None:
        import aiomqtt

        parts = urlsplit(self.mqtt.url)
        topic = (f"$share/{self.point.mqtt_shared_group}/{self.filter}"
                 if self.point.mqtt_shared_group else self.filter)
        backoff = 0.5
        while True:
            client = aiomqtt.Client(
                parts.hostname or "127.0.0.1", parts.port or 1883,
                username=parts.username, password=parts.password,
                identifier=f"unimeter-{self.runtime.instance}-{self.name}",
                clean_session=False, keepalive=30, max_inflight_messages=_MAX_INFLIGHT)
            # PUBACK only after the data is durable: paho's manual-ack mode (aiomqtt does not
            # expose it yet, so reach the paho client it wraps).
            client.pending_calls_threshold = _MAX_INFLIGHT  # many meters, many acks
            client._client.manual_ack_set(True)
            try:
                async with client:
                    self._client = client
                    await client.subscribe(topic, qos=1)
                    self.connected.set()
                    backoff = 0.5
                    log.info("MQTT service point %s subscribed to %s", self.name, topic)
                    reader: asyncio.Task[Any] = asyncio.create_task(self._read(client))
                    waiter: asyncio.Task[Any] = asyncio.create_task(self._reconnect.wait())
                    try:
                        done, _ = await asyncio.wait({reader, waiter},
                                                     return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        # also when this task is cancelled (the FEP stops): the reader must
                        # end before the client disconnects, or it fails unobserved
                        for task in (reader, waiter):
                            task.cancel()
                    for task in done:
                        if not task.cancelled() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                    self._reconnect.clear()
                    log.warning("MQTT %s: reconnecting so the broker redelivers what was not "
                                "acknowledged", self.name)
            except aiomqtt.MqttError as exc:
                self.stats["disconnects"] += 1
                log.warning("MQTT %s: %s; reconnecting in %.1fs", self.name, exc, backoff)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _read(self, client: Any) -> None:
        async for message in client.messages:
            await self._inflight.acquire()
            try:
                await self._on_message(client, message)
            except Exception:
                self._inflight.release()
                log.exception("MQTT message on %s failed", message.topic)

    # ------------------------------------------------------------------ uplink

    def _device_of(self, topic: str) -> str:
        parts = topic.split("/")
        return parts[self._device_index] if len(parts) > self._device_index else ""

    async def _on_message(self, client: Any, message: Any) -> None:
        runtime = self.runtime
        self.stats["messages"] += 1
        device = self._device_of(str(message.topic))
        payload = bytes(message.payload or b"")
        received_at = runtime.clock.now()
        link = self._window(device)
        frame_id = link.next_frame_id()
        records: list[OutRecord] = []
        try:
            inbound = self.stack.interpret(payload)
        except UnimeterError as exc:
            self.stats["malformed"] += 1
            runtime.stats["malformed"] += 1
            detail = {k: (v if isinstance(v, str | int | float | bool | None) else str(v))
                      for k, v in exc.to_dict().items()}
            detail.update({"topic": str(message.topic), "service_point": self.name})
            records = [
                runtime.messages.frame(frame_id=frame_id, device_id=device,
                                       service_point=self.name, peer="mqtt",
                                       protocol=self.stack.protocol, direction="in",
                                       data=payload, received_at=received_at, valid=False,
                                       error=str(exc)),
                runtime.messages.message("dlq.ingest", DeadLetter(
                    stage="ingest", reason=detail, ts=received_at, value=payload,
                    key_bytes=device.encode())),
            ]
            # Bad bytes never become good: acknowledge them once they are kept.
            self._finish(client, message, runtime.publisher.submit(records), None, link)
            return
        records.append(runtime.messages.frame(
            frame_id=frame_id, device_id=device, service_point=self.name, peer="mqtt",
            protocol=inbound.protocol, direction="in", data=payload, received_at=received_at))
        solicited = False
        if inbound.kind in ("reply", "confirm"):
            solicited = runtime.commands.on_reply(link, inbound)
        readings: list[Reading] = []
        for draft in inbound.readings:
            meter_id = self._admit(link, draft.address or device, inbound.protocol, records)
            if meter_id is None:
                continue
            ts = draft.ts or runtime.reception.stamp(meter_id, draft.register, received_at)
            key = (meter_id, draft.register, ts)
            if key in self._seen:
                self.stats["duplicates"] += 1
                self._seen.move_to_end(key)
                continue
            self._seen[key] = None
            if len(self._seen) > 500_000:
                self._seen.popitem(last=False)
            readings.append(Reading(
                meter_id=meter_id, register=draft.register, ts=ts, value=draft.value,
                unit=draft.unit, received_at=received_at, kind=draft.kind,  # type: ignore[arg-type]
                interval_s=draft.interval_s, meter_clock=draft.meter_clock,
                source="poll" if solicited else "mqtt",
                device_id=device, fep=runtime.instance, protocol=inbound.protocol,
                status=draft.status, frame_id=frame_id))
        if readings:
            records.extend(runtime.messages.readings(readings, event_time=received_at))
        for number, event in enumerate(inbound.events):
            meter_id = link.meters.get(event.address or device)
            if not runtime.event_changed(meter_id or device, event.kind, event.attributes):
                continue
            records.append(runtime.messages.event(
                device_id=meter_id or device, kind=event.kind, meter_id=meter_id,
                event_id=f"{frame_id}#{number}", severity=event.severity,  # type: ignore[arg-type]
                ts=received_at, attributes=event.attributes))
        ack: bytes | None = inbound.ack if inbound.ack is not None else json.dumps(
            {"type": "ack", "ref": hashlib.sha256(payload).hexdigest()[:16]}).encode()
        if solicited:
            ack = None  # the answer to our request, not an upload: nothing to acknowledge
        self._finish(client, message, runtime.publisher.submit(records), ack, link)

    def _admit(self, link: NbiotLink, address: str, protocol: str,
               records: list[OutRecord]) -> str | None:
        runtime = self.runtime
        decision = runtime.admission_for(self.name).admit_meter(self.name, link.device,
                                                                 address, protocol)
        if not decision.admitted:
            self.stats["rejected"] += 1
            alert = runtime.messages.alert(
                code="admission_rejected", object_type="meter", object_id=address,
                reason=f"{decision.reason} (MQTT device {link.device} at {self.name})")
            if alert is not None:
                records.append(alert)
            return None
        meter_id = decision.meter_id or address
        if decision.auto_registered:
            runtime.audit_auto_registration(self.name, link.device, address, protocol,
                                            meter_id, "mqtt")
        if address not in link.meters:
            link.meters[address] = meter_id
            runtime.bind_meter(link, meter_id)
            runtime.registry.record(SessionEntry(
                device_id=meter_id, kind="meter", service_point=self.name, online=True,
                last_heard=datetime.now(UTC), link_id=link.device, address=address,
                protocol=protocol, peer="mqtt", connected_at=link.connected_at))
            if meter_id != link.device:
                runtime.commands.device_online(link, [meter_id])
        return meter_id

    def _finish(self, client: Any, message: Any, future: asyncio.Future[Any],
                ack: bytes | None, link: NbiotLink) -> None:
        task = asyncio.create_task(self._after_durable(client, message, future, ack, link))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _after_durable(self, client: Any, message: Any, future: asyncio.Future[Any],
                             ack: bytes | None, link: NbiotLink) -> None:
        try:
            try:
                await future
            except PublishError as exc:
                # Not durable: no PUBACK. Reconnect later so the broker redelivers.
                self.stats["not_acked"] += 1
                log.warning("MQTT uplink of %s not acknowledged: %s", link.device, exc)
                self._reconnect.set()
                return
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)
            if ack is not None:
                await self.downlink(link, ack, record=ack[:1] != b"{")
        finally:
            self._inflight.release()

    # ------------------------------------------------------------------ downlink

    async def downlink(self, link: NbiotLink, data: bytes, *, record: bool = True) -> bool:
        client = self._client
        if client is None:
            return False
        topic = self._down.format(device=link.device)
        try:
            await client.publish(topic, data, qos=1)
        except Exception as exc:
            log.warning("MQTT downlink to %s failed: %r", link.device, exc)
            return False
        if record:
            self.runtime.publish_soon([self.runtime.messages.frame(
                frame_id=link.next_frame_id(), device_id=link.device, service_point=self.name,
                peer="mqtt", protocol=self.stack.protocol, direction="out", data=data,
                received_at=self.runtime.clock.now())])
        return True

    # ------------------------------------------------------------------ wake windows

    def _window(self, device: str) -> NbiotLink:
        link = self.links.get(device)
        opened = link is None or link.closed.is_set()
        if opened:
            link = NbiotLink(self, device)
            self.links[device] = link
        assert link is not None
        link.touch()
        if opened:
            runtime = self.runtime
            runtime.attach_link(link)
            runtime.registry.record(SessionEntry(
                device_id=device, kind="link", service_point=self.name, online=True,
                last_heard=link.last_heard, link_id=device, protocol=self.stack.protocol,
                peer="mqtt", connected_at=link.connected_at))
            runtime.publish_soon([runtime.messages.event(
                device_id=device, kind="online", attributes={"via": "mqtt",
                                                             "service_point": self.name})])
            runtime.commands.device_online(link, [device])
        return link

    async def _close_windows(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.point.wake_window_s / 4))
            now = loop.time()
            for device, link in list(self.links.items()):
                if link.deadline <= now:
                    link.close("wake window over")
                    del self.links[device]
                    self._offline(link)

    def _offline(self, link: NbiotLink) -> None:
        runtime = self.runtime
        if runtime.links.get(link.device) is link:
            del runtime.links[link.device]
        now = datetime.now(UTC)
        runtime.registry.record(SessionEntry(
            device_id=link.device, kind="link", service_point=self.name, online=False,
            last_heard=link.last_heard, link_id=link.device, protocol=self.stack.protocol,
            peer="mqtt", connected_at=link.connected_at, disconnected_at=now))
        for address, meter_id in link.meters.items():
            if runtime.meter_links.get(meter_id) is link:
                del runtime.meter_links[meter_id]
            if meter_id != link.device:
                runtime.registry.record(SessionEntry(
                    device_id=meter_id, kind="meter", service_point=self.name, online=False,
                    last_heard=link.last_heard, link_id=link.device, address=address,
                    protocol=self.stack.protocol, peer="mqtt", disconnected_at=now))
        runtime.publish_soon([runtime.messages.event(
            device_id=link.device, kind="offline", attributes={"reason": "wake window over",
                                                               "service_point": self.name})])

    def status(self) -> dict[str, Any]:
        return {"awake": len(self.links), **dict(self.stats)}
