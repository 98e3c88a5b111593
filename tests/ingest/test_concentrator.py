"""Q/GDW 376.1 concentrators: login and heartbeat confirmed, meters read and commanded
through AFN 10 forwarding (real sockets, real broker)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.settings import PollPlanSettings
from schemas.messages import CommandDispatch, Reading
from schemas.settings import KafkaSettings
from simulator.log import read_log
from tests.ingest._fep import (
    concentrator_point,
    ledger_of,
    running_fep,
    simulator_for,
    small_fleet,
)
from tests.ingest._kafka import consume_messages

pytestmark = pytest.mark.integration


async def test_concentrator_meters_are_read_and_tripped_through_afn10(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    from simulator.runner import Simulator, SimulatorSettings

    spec = small_fleet(electricity_meters=6, meters_per_concentrator=3)
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    plans = {"read-645": PollPlanSettings(service_point="con", interval_s=3600, jitter_s=0,
                                          timeout_s=3)}
    async with running_fep(kafka_settings, tmp_path, {"con": concentrator_point()},
                           ledger=ledger_of(probe), poll_plans=plans) as fep:
        sim = simulator_for(fep, spec, tmp_path, speed=60, heartbeat_s=0.5)
        await sim.start(kinds=("concentrator",))
        await sim.wait_connected(10)  # each login was confirmed (AFN 00 F1)
        assert set(fep.links) == {"32010001", "32010002"}
        stats = await fep.pollers[0].run_plan("read-645")
        assert (stats.requests, stats.successes, stats.failures) == (6, 6, 0)

        meter = sim.fleet.meters["ELE-000002"]
        command = CommandDispatch(command_id=uuid.uuid4().hex, device_id=meter.meter_id,
                                  command="relay_trip", protocol=meter.protocol,
                                  address=meter.address, dispatched_at=datetime.now(UTC),
                                  reply_timeout_s=3)
        await fep.commands.handle(command)
        for _ in range(100):
            if fep.commands.stats.confirmed:
                break
            await asyncio.sleep(0.05)
        assert meter.valve == "closed"  # the supply really tripped
        await asyncio.sleep(1.2)  # a couple of heartbeats
        links = list(sim.links.values())
        await sim.stop()
    assert fep.commands.stats.by_status == {"sent": 1, "confirmed": 1}
    assert all(link.confirmed >= 2 for link in links)  # login + heartbeats answered
    log = read_log(tmp_path / "sim.jsonl")
    assert sorted(c.command for c in log.commands) == ["read_now"] * 6 + ["relay"]

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= 6))
    assert {r.meter_id for r in readings} == set(probe.fleet.meters)
    assert {(r.register, r.unit, r.source, r.protocol) for r in readings} == \
        {("energy_import", "kWh", "poll", "dlt645-2007")}
    sent = {r.meter_id: r.value for r in log.readings}
    assert all(str(r.value) == sent[r.meter_id] for r in readings)
