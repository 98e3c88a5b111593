"""The simulator process: a fleet on a clock, its links, its scheduler, faults and log.

Strategy: one asyncio loop drives every link. A scheduler keeps a heap of (simulated time the
meter reports next, meter) and hands due reports to the meter's link, which builds the frame
at that simulated instant (register integrated up to it) and sends it when its window allows.
Report intervals are simulated time, so ``speed`` (simulated seconds per real second) turns a
week into minutes without changing what the meters say. ``burst`` mode ignores the schedule
and keeps every link's window full (throughput measurement): DTU links send their meters'
registers stamped now; with ``nbiot_pack`` the NB-IoT bridge sends pack uploads, each the
next hours of a meter's backlog since the simulated start (see ``MqttBridge``).

A small line-based control port (``--control-port``) takes ``inject KIND TARGET [COUNT]``,
``rate KIND VALUE``, ``stats`` and ``flush`` while running, so a fault test in another process
can break things on demand.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import json
import logging
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.settings import ComponentSettings, MqttSettings
from simulator.clock import SimClock
from simulator.faults import FaultPlan, parse_fault_spec
from simulator.fleet import Fleet, FleetSpec, SimMeter
from simulator.log import FORMAT_VERSION, MeterRec, RunRec, SimLog

__all__ = ["DeliverySettings", "Simulator", "SimulatorSettings", "parse_delivery"]

log = logging.getLogger(__name__)


class DeliverySettings(BaseModel):
    """Delivery of DTU uploads: each sent ``copies_min``–``copies_max`` times (extra copies
    go out later, between other frames), up to ``reorder`` uploads held for
    ``reorder_hold_s`` and sent shuffled, and a share ``late`` of uploads held back until
    ``late_after`` later uploads of the link went first — past the same meter's next reports,
    so the platform gets a meter's readings out of time order (what shuffling a burst of
    different meters' uploads never does). The default is one copy, in order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    copies_min: int = Field(default=1, ge=1, le=10)
    copies_max: int = Field(default=1, ge=1, le=10)
    reorder: int = Field(default=0, ge=0, le=1000,
                         description="Uploads shuffled together (0 or 1 = in order).")
    reorder_hold_s: float = Field(default=0.5, ge=0, le=60)
    late: float = Field(default=0.0, ge=0, le=0.5,
                        description="Share of uploads whose first delivery is held back.")
    late_after: int = Field(default=12, ge=1, le=1000,
                            description="Later uploads of the link sent before a held one.")

    @model_validator(mode="after")
    def _range(self) -> DeliverySettings:
        if self.copies_max < self.copies_min:
            raise ValueError(f"copies_max {self.copies_max} is below copies_min "
                             f"{self.copies_min}")
        return self


def parse_delivery(text: str) -> DeliverySettings:
    """``"copies=1-5,reorder=8,hold=0.5,late=0.02,late_after=12"`` → :class:`DeliverySettings`
    (ValueError if bad)."""
    values: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name == "copies":
            low, _, high = value.partition("-")
            values["copies_min"], values["copies_max"] = int(low), int(high or low)
        elif name == "reorder":
            values["reorder"] = int(value)
        elif name == "hold":
            values["reorder_hold_s"] = float(value)
        elif name == "late":
            values["late"] = float(value)
        elif name == "late_after":
            values["late_after"] = int(value)
        else:
            raise ValueError(f"unknown delivery option '{name}' (known: copies, reorder, hold, "
                             "late, late_after)")
    return DeliverySettings(**values)


class SimulatorSettings(ComponentSettings):
    """The simulator's defaults (section ``simulator``); the CLI overrides most of them."""

    section: ClassVar[str] = "simulator"

    fep_host: str = Field(default="127.0.0.1", description="Where the FEP listens.")
    dtu_port: int = Field(default=9110, ge=1, le=65535,
                          description="Port of the CJ/T 188 DTU service point.")
    dtu645_port: int = Field(default=9111, ge=1, le=65535,
                             description="Port of the DL/T 645 DTU service point.")
    concentrator_port: int = Field(default=9120, ge=1, le=65535)
    modbus_host: str = Field(default="127.0.0.1",
                             description="Where the simulated Modbus TCP RTUs listen.")
    modbus_port: int = Field(default=9502, ge=0, le=65535,
                             description="First port of the simulated Modbus TCP RTU gateways "
                                         "(one per 200 units, consecutive; 0 = free ports).")
    link_protocol: str = Field(default="dtu-text", description="DTU link template.")
    speed: float = Field(default=1.0, ge=0, le=1e6,
                         description="Simulated seconds per real second.")
    dtu_report_s: float = Field(default=3600.0, gt=0, description="Simulated seconds between "
                                                                   "reports of DTU meters.")
    nbiot_report_s: float = Field(default=86400.0, gt=0,
                                  description="NB-IoT meters wake and report this often.")
    nbiot_pack: int = Field(default=0, ge=0, le=1000,
                            description="NB-IoT JSON meters upload their last N hourly "
                                        "registers in each report (the JSON map's series), "
                                        "not the current register; 0 = off.")
    electricity_report_s: float = Field(default=900.0, gt=0)
    heartbeat_s: float = Field(default=60.0, gt=0, description="DTU heartbeat (real seconds).")
    ack_timeout_s: float = Field(default=10.0, gt=0,
                                 description="Retransmit an upload not acknowledged by then.")
    window: int = Field(default=16, ge=1, le=10_000,
                        description="Uploads per link awaiting acknowledgement at most.")
    wake_window_s: float = Field(default=20.0, gt=0,
                                 description="NB-IoT meters listen this long after an uplink.")
    reconnect_delay_s: float = Field(default=1.0, ge=0)
    log_dir: Path = Field(default=Path(".unimeter/simulator"))
    delivery: DeliverySettings = Field(default_factory=lambda: DeliverySettings(),
                                       description="How uploads reach the FEP (fault tests: "
                                                   "several copies, out of order).")


class Simulator:
    def __init__(self, settings: SimulatorSettings, *, spec: FleetSpec | None = None,
                 clock: SimClock | None = None, mqtt: MqttSettings | None = None,
                 log_path: Path | None = None, faults: str | dict[str, float] = "",
                 frames_hex: bool = False, burst: bool = False, seed: int = 1) -> None:
        self.settings = settings
        self.run_id = uuid.uuid4().hex[:10]
        self.clock = clock or SimClock(speed=settings.speed)
        self.spec = spec or FleetSpec()
        self.fleet = Fleet(self.spec, self.clock.start)
        self.mqtt = mqtt
        rates = parse_fault_spec(faults) if isinstance(faults, str) else dict(faults)
        self.faults = FaultPlan(rates, seed=seed)
        self.log_path = log_path
        self.log = SimLog(log_path, frames_hex=frames_hex)
        self.burst = burst
        self.stats: Counter[str] = Counter()
        self.latency_ms: dict[str, float] = {}
        self.ack_latency: collections.deque[float] = collections.deque(maxlen=10_000)
        self.links: dict[str, Any] = {}
        self.bridge: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._rng = random.Random(seed)
        # settings the links read
        self.link_protocol = settings.link_protocol
        self.window = settings.window
        self.ack_timeout_s = settings.ack_timeout_s
        self.heartbeat_s = settings.heartbeat_s
        self.wake_window_s = settings.wake_window_s
        self.nbiot_pack = settings.nbiot_pack
        if self.nbiot_pack and self.spec.nbiot_meters:
            self._check_pack_map()
        self.reconnect_delay_s = settings.reconnect_delay_s
        self.delivery = settings.delivery
        self.delivery_rng = random.Random(seed ^ 0x5EED)
        self._control: asyncio.Server | None = None
        self.started_at = 0.0

    def _check_pack_map(self) -> None:
        from simulator.devices import behaviour_for

        protocol = self.spec.nbiot_protocol
        behaviour = behaviour_for(protocol)
        if getattr(behaviour, "pack_series", lambda: None)() is None:
            raise ValueError(f"NB-IoT packs need a JSON map with a series of current_volume "
                             f"(e.g. nbiot-json:nbiot-gas); the NB-IoT meters speak {protocol}")

    def _delivery_note(self) -> dict[str, Any]:
        if self.delivery == DeliverySettings():
            return {}
        return {"delivery": self.delivery.model_dump()}

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, kinds: tuple[str, ...] = ("dtu", "nbiot", "concentrator", "modbus"),
                    control_port: int | None = None) -> None:
        from simulator.links import ConcentratorLink, DtuLink, MqttBridge
        from simulator.modbus import ModbusRtuServer

        self.started_at = time.monotonic()
        self.log.write(RunRec(run_id=self.run_id, started_at=datetime.now(UTC),
                              sim_start=self.clock.start, speed=self.clock.speed,
                              seed=self.spec.seed, v=FORMAT_VERSION, fleet=self.fleet.counts(),
                              faults={**self.faults.rates, **self._delivery_note()}))
        for meter in self.fleet.meters.values():
            link = self.fleet.links.get(meter.link_id) or next(
                (lk for lk in self.fleet.links.values() if meter in lk.meters), None)
            self.log.write(MeterRec(
                meter_id=meter.meter_id, address=meter.address, medium=meter.medium,
                protocol=meter.protocol, transport=link.kind if link else "",
                link_id=meter.link_id, service_point=meter.service_point,
                customer_type=meter.customer_type, register=meter.register_name,
                unit=meter.unit, digits=meter.consumption.digits,
                decimals=meter.consumption.decimals))
        s = self.settings
        if "dtu" in kinds:
            ports = {self.spec.dtu_service_point: s.dtu_port,
                     self.spec.dtu645_service_point: s.dtu645_port}
            for link in self.fleet.of_kind("dtu"):
                self.links[link.link_id] = DtuLink(self, link, s.fep_host,
                                                   ports.get(link.service_point, s.dtu_port))
        if "concentrator" in kinds:
            for link in self.fleet.of_kind("concentrator"):
                self.links[link.link_id] = ConcentratorLink(self, link, s.fep_host,
                                                            s.concentrator_port)
        if "modbus" in kinds:
            for index, link in enumerate(self.fleet.of_kind("modbus")):
                port = s.modbus_port + index if s.modbus_port else 0
                self.links[link.link_id] = ModbusRtuServer(self, link, s.modbus_host, port)
        nbiot = list(self.fleet.of_kind("nbiot"))
        if "nbiot" in kinds and nbiot:
            if self.mqtt is None or not self.mqtt.url:
                raise ValueError("NB-IoT meters need MQTT settings (UNIMETER_MQTT_URL)")
            self.bridge = MqttBridge(self, nbiot, self.mqtt.url, self.mqtt.topic_root)
        for link in self.links.values():
            self._tasks.append(asyncio.create_task(link.run(), name=f"sim-{link.link.link_id}"))
        if self.bridge is not None:
            self._tasks.append(asyncio.create_task(self.bridge.run(), name="sim-mqtt"))
        if not self.burst:  # in burst mode the links generate their own uploads
            self._tasks.append(asyncio.create_task(self._schedule(kinds), name="sim-schedule"))
        self._tasks.append(asyncio.create_task(self._flush_log(), name="sim-log"))
        if control_port is not None:
            self._control = await asyncio.start_server(self._control_client, "127.0.0.1",
                                                       control_port)

    def stop_reporting(self) -> None:
        """No new reports from now on; links keep running, so uploads already sent are still
        retransmitted until acknowledged and commands still answered (the end of a run)."""
        for task in self._tasks:
            if task.get_name() == "sim-schedule":
                task.cancel()

    async def stop(self) -> dict[str, Any]:
        for link in self.links.values():
            link.stop()
        if self.bridge is not None:
            self.bridge.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._control is not None:
            self._control.close()
        summary = self.summary()
        self.log.close(summary)
        return summary

    def modbus_endpoints(self) -> list[str]:
        """``LINK=host:port/unit`` of every simulated RTU (for a collection plan)."""
        return [e for link in self.links.values() if hasattr(link, "endpoints")
                for e in link.endpoints()]

    def summary(self) -> dict[str, Any]:
        pending = sum(len(link.pending) for link in self.links.values())
        if self.bridge is not None:
            pending += len(self.bridge.pending)
        lat = sorted(self.ack_latency)
        if lat:
            self.latency_ms["ack_p50_ms"] = round(lat[len(lat) // 2] * 1000, 1)
            self.latency_ms["ack_p99_ms"] = round(lat[int(len(lat) * 0.99)] * 1000, 1)
        return {"run_id": self.run_id, "sim_now": self.clock.now().isoformat(),
                "links": len(self.links) + (1 if self.bridge is not None else 0),
                "real_s": round(time.monotonic() - self.started_at, 1),
                **dict(self.stats), **self.latency_ms, "unacked": pending,
                "faults": dict(self.faults.fired), "log": str(self.log_path or "")}

    async def wait_connected(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        async def all_up() -> None:
            for link in self.links.values():
                await link.connected.wait()
            if self.bridge is not None:
                await self.bridge.connected.wait()

        await asyncio.wait_for(all_up(), timeout)

    # ------------------------------------------------------------------ scheduling

    def _interval(self, meter: SimMeter) -> float:
        s = self.settings
        if meter.service_point == self.spec.nbiot_service_point:
            return s.nbiot_report_s
        if meter.medium == "electricity":
            return s.electricity_report_s
        return s.dtu_report_s

    def _link_of(self, meter: SimMeter) -> Any:
        """Where a meter's scheduled reports go; None for meters that only answer polls."""
        if meter.service_point == self.spec.nbiot_service_point:
            return self.bridge
        if meter.service_point in (self.spec.concentrator_service_point,
                                   self.spec.modbus_service_point):
            return None  # concentrators and RTUs are read by the head-end, they do not push
        return self.links.get(meter.link_id)

    async def _schedule(self, kinds: tuple[str, ...]) -> None:
        heap: list[tuple[datetime, int, str]] = []
        start = self.clock.now()
        for n, meter in enumerate(self.fleet.meters.values()):
            if self._link_of(meter) is None:
                continue
            phase = self._rng.uniform(0, self._interval(meter))
            heapq.heappush(heap, (start + timedelta(seconds=phase), n, meter.meter_id))
        while heap:
            now = self.clock.now()
            while heap and heap[0][0] <= now:
                due, n, meter_id = heapq.heappop(heap)
                meter = self.fleet.meters[meter_id]
                link = self._link_of(meter)
                if link is not None:
                    link.queue.put_nowait((meter, due))
                    self.stats["reports_due"] += 1
                heapq.heappush(heap, (due + timedelta(seconds=self._interval(meter)), n,
                                      meter_id))
            if not heap:
                return
            wait = self.clock.real_seconds(heap[0][0] - self.clock.now())
            await asyncio.sleep(min(max(wait, 0.001), 0.5))

    async def _flush_log(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.log.flush()

    # ------------------------------------------------------------------ control port

    async def _control_client(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = self.control(line.decode(errors="replace").strip())
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        finally:
            writer.close()

    def control(self, line: str) -> dict[str, Any]:
        """One control command: ``inject KIND TARGET [COUNT]``, ``rate KIND VALUE``,
        ``stats``, ``flush``."""
        parts = line.split()
        try:
            if not parts:
                return {"ok": False, "error": "empty command"}
            if parts[0] == "inject" and len(parts) in (2, 3, 4):
                target = parts[2] if len(parts) > 2 else "*"
                count = int(parts[3]) if len(parts) > 3 else 1
                self.faults.inject(parts[1], target, count)
                return {"ok": True, "pending": self.faults.pending()}
            if parts[0] == "rate" and len(parts) == 3:
                self.faults.set_rate(parts[1], float(parts[2]))
                return {"ok": True, "rates": self.faults.rates}
            if parts[0] == "stats":
                return {"ok": True, **self.summary()}
            if parts[0] == "flush":
                self.log.flush()
                return {"ok": True}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown command {line!r}; use inject KIND TARGET "
                                      "[COUNT] | rate KIND VALUE | stats | flush"}
