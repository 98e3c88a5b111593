"""The front-end processor process: service points, publisher, ledger, registry, commands.

Strategy: :class:`FepRuntime` owns the process-wide parts — one publisher (and spool), one
ledger view, the session registry, the command router — and starts one server per service
point it runs: a TCP listener (:mod:`ingest.server`), an MQTT subscription
(:mod:`ingest.mqtt`) or, for points of polled devices, nothing but their collection plans
(:mod:`ingest.polling`). Sessions report to the runtime when a link identifies itself, when a
meter is heard through it, and when it ends; the runtime keeps the indexes the command router
uses to find the link that holds a device (link id → session, meter id → session).

Start-up order matters for the guarantees: the publisher (and a non-empty spool's drain)
first, then the ledger (admission needs it), the registry, the command router, and only then
the listeners, so no device is acknowledged before its data can be made durable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ingest.clock import ReceptionClock
from ingest.commands import CommandLink, CommandRouter
from ingest.events import MessageFactory
from ingest.ledger import Admission, LedgerView
from ingest.publisher import OutRecord, Publisher
from ingest.registry import MemoryRegistry, PostgresRegistry, SessionRegistry
from ingest.settings import FepSettings, ServicePointSettings
from ingest.spool import Spool
from ingest.stamps import ReceptionStamps
from schemas.settings import DatabaseSettings, KafkaSettings, MqttSettings

if TYPE_CHECKING:
    from ingest.session import LinkSession

__all__ = ["FepRuntime"]

_UNSEEN = object()

log = logging.getLogger(__name__)


class FepRuntime:
    """One FEP process (or, in tests, one of several in a process)."""

    def __init__(self, settings: FepSettings, kafka: KafkaSettings, *,
                 database: DatabaseSettings | None = None, mqtt: MqttSettings | None = None,
                 service_points: Sequence[str] = (), registry: SessionRegistry | None = None,
                 ledger: LedgerView | None = None, follow_ledger: bool = True,
                 consume_commands: bool = True, timezone: str = "Asia/Shanghai") -> None:
        self.settings = settings
        self.kafka = kafka
        self.database = database
        self.mqtt = mqtt
        self.instance = settings.instance
        self.timezone = timezone
        self.points: dict[str, ServicePointSettings] = settings.points_served(
            tuple(service_points))
        self.stats: collections.Counter[str] = collections.Counter()
        #: "now" for data received and sent (real, or a simulation's time line)
        self.clock = ReceptionClock(settings.clock_file)
        self.clock.check()
        #: whole-second, per meter and register distinct stamps of readings without time
        self.reception = ReceptionStamps()
        self.messages = MessageFactory(kafka, fep=self.instance,
                                       alert_interval_s=settings.alert_interval_s,
                                       now=self.clock.now)
        self.publisher = Publisher(
            kafka, spool=Spool(settings.instance_spool_dir(), max_bytes=settings.spool_max_bytes,
                               segment_bytes=settings.spool_segment_bytes),
            client_id=f"{kafka.client_id}-{self.instance}",
            ack_timeout_s=settings.kafka_ack_timeout_s, linger_ms=settings.publish_linger_ms,
            max_records=settings.publish_max_records,
            max_inflight=settings.publish_max_inflight)
        self.ack_timeout_s = settings.kafka_ack_timeout_s
        self.ledger = ledger or LedgerView()
        self._follow_ledger = follow_ledger
        self.admissions = {name: Admission(self.ledger, mode=point.admission)
                           for name, point in self.points.items()}
        if registry is None:
            if settings.registry == "postgres" and database is not None and database.url:
                registry = PostgresRegistry(self.instance, database, advertise=settings.advertise,
                                            flush_s=settings.registry_flush_s,
                                            instance_ttl_s=settings.instance_ttl_s)
            else:
                registry = MemoryRegistry(self.instance, flush_s=settings.registry_flush_s)
        self.registry = registry
        self.commands = CommandRouter(self, expire_every_s=settings.command_expire_every_s)
        self._consume_commands = consume_commands
        self.links: dict[str, CommandLink] = {}
        self.meter_links: dict[str, CommandLink] = {}
        self.servers: dict[str, Any] = {}
        self.pollers: list[Any] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._clock_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._last_status: dict[tuple[str, str, str], Any] = {}

    def meter_address_at_point(self, link_id: str, point_no: int) -> str | None:
        """The address of the meter at a concentrator's measuring point, by the ledger."""
        meter = self.ledger.at_point(link_id, point_no)
        return meter.address if meter is not None else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        from ingest.protocols import build_stack

        if self.clock.path is not None:
            self._clock_task = asyncio.create_task(self.clock.watch())
        await self.publisher.start()
        if self._follow_ledger:
            await self.ledger.follow(self.kafka, client_id=f"{self.kafka.client_id}-"
                                     f"{self.instance}",
                                     ready_timeout_s=self.settings.ledger_load_timeout_s)
        else:
            self.ledger.ready.set()
        await self.registry.start(list(self.points))
        await self.commands.start(consume=self._consume_commands)
        for name, point in self.points.items():
            if point.transport == "tcp":
                from ingest.server import ServicePointServer

                stack = build_stack(point, self.timezone)
                stack.point_address = self.meter_address_at_point
                stack.now = self.clock.now
                server: Any = ServicePointServer(self, name, point, stack)
            elif point.transport == "mqtt":
                from ingest.mqtt import MqttIngest

                if self.mqtt is None:
                    from schemas.errors import ConfigurationError

                    raise ConfigurationError(f"service point {name} needs MQTT settings",
                                             hint="set UNIMETER_MQTT_URL")
                mqtt_stack = build_stack(point, self.timezone)
                mqtt_stack.now = self.clock.now
                server = MqttIngest(self, name, point, mqtt_stack, self.mqtt)
            else:
                continue  # polled devices: the collection plans below
            await server.start()
            self.servers[name] = server
        plans = {n: p for n, p in self.settings.poll_plans.items()
                 if p.service_point in self.points}
        ledger_plans = (self.settings.ledger_plans and isinstance(self.registry, PostgresRegistry)
                        and self.database is not None)
        if plans or ledger_plans:
            from ingest.polling import Poller

            poller = Poller(self, plans)
            await poller.start(ledger_plans=ledger_plans)
            self.pollers.append(poller)
        self.registry.stats = {"points": list(self.points)}
        log.info("FEP %s running: %s", self.instance, ", ".join(
            f"{n} ({p.transport}:{p.protocol})" for n, p in self.points.items()))

    async def stop(self) -> None:
        if self._clock_task is not None:
            self._clock_task.cancel()
            self._clock_task = None
        for poller in self.pollers:
            await poller.stop()
        for server in self.servers.values():
            await server.stop()
        await self.commands.stop()
        if self._background:
            await asyncio.wait(self._background, timeout=10)
        await self.registry.stop()
        await self.ledger.stop()
        await self.publisher.stop()
        self._stopped.set()

    async def run_forever(self) -> None:
        """Start, serve until SIGINT/SIGTERM, stop cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------------ used by sessions

    def admission_for(self, point_name: str) -> Admission:
        return self.admissions[point_name]

    def publish_soon(self, records: list[OutRecord]) -> None:
        """Publish without waiting (frames out, events, alerts): durability still applies.

        The records of one loop tick travel as one publisher unit (no future each); a unit
        that fails is counted in the publisher's ``loose_failed``."""
        if not records:
            return
        try:
            self.publisher.submit_loose(records)
        except Exception as exc:
            self.stats["publish_refused"] += 1
            log.warning("publish refused: %r", exc)

    def attach_link(self, link: CommandLink) -> None:
        previous = self.links.get(link.device_id)
        if previous is not None and previous is not link:
            close = getattr(previous, "close", None)
            if close is not None:
                close(f"replaced by a new connection of {link.device_id}")
        self.links[link.device_id] = link

    def bind_meter(self, link: CommandLink, meter_id: str) -> None:
        self.meter_links[meter_id] = link

    async def session_ended(self, session: LinkSession) -> None:
        reason = session.close_reason.split(":")[0] or "unknown"
        self.stats[f"closed: {reason}"] += 1
        if not session.identified:
            return
        if self.links.get(session.device_id) is session:
            del self.links[session.device_id]
        for meter_id in session.bound_meter_ids():
            if self.meter_links.get(meter_id) is session:
                del self.meter_links[meter_id]
        for entry in session.offline_entries():
            self.registry.record(entry)
        self.publish_soon([self.messages.event(
            device_id=session.device_id, kind="offline",
            attributes={"reason": session.close_reason, "peer": session.peer,
                        "service_point": session.point_name,
                        "frames_in": session.stats.frames_in})])

    def link_for_device(self, device_id: str, link_id: str | None = None) -> CommandLink | None:
        """The live link through which ``device_id`` can be reached from this FEP."""
        for candidate in (self.links.get(device_id), self.meter_links.get(device_id),
                          self.links.get(link_id) if link_id else None):
            if candidate is not None and not candidate.closed.is_set():
                return candidate
        meter = self.ledger.meters.get(device_id)
        if meter is not None and meter.link_id:
            link = self.links.get(meter.link_id)
            if link is not None and not link.closed.is_set():
                return link
        return None

    def event_changed(self, device_id: str, kind: str, attributes: Mapping[str, Any]) -> bool:
        """Whether a status/alarm event says something new for ``device_id``.

        Meters repeat their status bits in every frame; ``device.events`` carries a change
        (valve opened, battery low raised or cleared), not every repetition.
        """
        item = str(attributes.get("item", kind))
        key = (device_id, kind, item)
        value = attributes.get("value", True)
        if self._last_status.get(key, _UNSEEN) == value:
            return False
        if len(self._last_status) > 2_000_000:
            self._last_status.clear()
        self._last_status[key] = value
        return True

    def serves_protocol(self, protocol: str) -> bool:
        return any(protocol in (p.protocol, p.forwarded_protocol) for p in self.points.values())

    def audit_auto_registration(self, service_point: str, link_id: str, address: str,
                                protocol: str, meter_id: str, peer: str) -> None:
        self.stats["auto_registered"] += 1
        self.spawn(self.registry.audit_auto_registration(
            service_point=service_point, link_id=link_id, address=address, protocol=protocol,
            meter_id=meter_id, peer=peer))

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %r", task.exception())

    def snapshot(self) -> dict[str, Any]:
        """Counters for the status line and the registry heartbeat."""
        pub = self.publisher.stats
        return {
            "fep": self.instance, "links": len(self.links), "meters": len(self.meter_links),
            "publisher_mode": pub.mode, "records_kafka": pub.records_kafka,
            "records_spooled": pub.records_spooled, "records_drained": pub.records_drained,
            "spool_bytes": self.publisher.spool.bytes_used, **dict(self.stats),
            "commands": dict(self.commands.stats.by_status),
        }
