"""Test helpers: an FEP runtime on free ports against the real broker, and a fleet for it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.fep import FepRuntime
from ingest.ledger import LedgerView
from ingest.registry import SessionRegistry
from ingest.settings import FepSettings, ServicePointSettings
from schemas.settings import KafkaSettings, MqttSettings
from simulator.clock import SimClock
from simulator.fleet import FleetSpec
from simulator.runner import Simulator, SimulatorSettings

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def dtu_point(**kw: Any) -> ServicePointSettings:
    base: dict[str, Any] = {"transport": "tcp", "protocol": "cjt188-2004", "link": "dtu",
                            "host": "127.0.0.1", "port": 0, "link_protocol": "dtu-text",
                            "max_connections_per_source": 1000}
    base.update(kw)
    return ServicePointSettings(**base)


def concentrator_point(**kw: Any) -> ServicePointSettings:
    base: dict[str, Any] = {"transport": "tcp", "protocol": "qgdw376.1",
                            "link": "concentrator", "host": "127.0.0.1", "port": 0,
                            "forwarded_protocol": "dlt645-2007",
                            "max_connections_per_source": 1000}
    base.update(kw)
    return ServicePointSettings(**base)


def nbiot_point(**kw: Any) -> ServicePointSettings:
    base: dict[str, Any] = {"transport": "mqtt", "protocol": "cjt188-2004", "link": "direct",
                            "wake_window_s": 5.0, "mqtt_shared_group": None}
    base.update(kw)
    return ServicePointSettings(**base)


def small_fleet(**kw: Any) -> FleetSpec:
    base: dict[str, Any] = {"gas_dtu_meters": 0, "water_dtu_meters": 0, "electricity_meters": 0,
                            "electricity_dtu_meters": 0,
                            "nbiot_meters": 0, "modbus_rtus": 0, "meters_per_dtu": 4,
                            "dtu_service_point": "dtu", "nbiot_service_point": "nbiot",
                            "concentrator_service_point": "con", "dtu645_service_point": "dtu645",
                            "modbus_service_point": "rtu"}
    base.update(kw)
    return FleetSpec(**base)


@asynccontextmanager
async def running_fep(kafka: KafkaSettings, tmp_path: Path, points: dict[str, Any], *,
                      ledger: LedgerView | None = None, registry: SessionRegistry | None = None,
                      mqtt: MqttSettings | None = None, instance: str | None = None,
                      consume_commands: bool = False, database: Any = None, **settings: Any
                      ) -> AsyncIterator[FepRuntime]:
    fep_settings = FepSettings(instance=instance or f"fep-{uuid.uuid4().hex[:6]}",
                               service_points=points, spool_dir=tmp_path / "spool",
                               registry="memory", **settings)
    runtime = FepRuntime(fep_settings, kafka, mqtt=mqtt, registry=registry, database=database,
                         ledger=ledger if ledger is not None else LedgerView(),
                         follow_ledger=False, consume_commands=consume_commands)
    await runtime.start()
    try:
        if consume_commands:
            # commands dispatched before the intake's consumer holds its partitions would be
            # skipped by its "latest" reset: wait for it (a race CI met under load)
            async with asyncio.timeout(60):
                await runtime.commands.intake_ready.wait()
        yield runtime
    finally:
        await runtime.stop()


def simulator_for(runtime: FepRuntime, spec: FleetSpec, tmp_path: Path, *, speed: float = 3600,
                  mqtt: MqttSettings | None = None, **kw: Any) -> Simulator:
    port = runtime.servers["dtu"].port if "dtu" in runtime.servers else 1
    con = runtime.servers["con"].port if "con" in runtime.servers else 1
    settings = SimulatorSettings(dtu_port=port, concentrator_port=con, speed=speed,
                                 heartbeat_s=kw.pop("heartbeat_s", 5),
                                 ack_timeout_s=kw.pop("ack_timeout_s", 3),
                                 wake_window_s=kw.pop("wake_window_s", 3),
                                 reconnect_delay_s=0.2, **kw.pop("settings", {}))
    return Simulator(settings, spec=spec, clock=SimClock(T0, speed), mqtt=mqtt,
                     log_path=tmp_path / "sim.jsonl", **kw)


def ledger_of(sim: Simulator) -> LedgerView:
    view = LedgerView()
    view.load(sim.fleet.ledger())
    return view
