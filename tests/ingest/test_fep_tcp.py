"""Simulated DTUs → FEP (real sockets) → Kafka (real broker): what arrives, exactly."""

from __future__ import annotations

import asyncio
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from schemas.messages import DeviceEvent, RawFrame, Reading
from schemas.settings import KafkaSettings
from simulator.log import read_log
from tests.ingest._fep import (
    dtu_point,
    ledger_of,
    running_fep,
    simulator_for,
    small_fleet,
)
from tests.ingest._kafka import consume_messages

pytestmark = pytest.mark.integration


def _key(meter_id: str, register: str, ts: Any, value: Any) -> tuple[str, str, str, str]:
    return (meter_id, register, ts.astimezone(UTC).isoformat() if ts else "", str(value))


async def _wait_acked(sim: Any, seconds: float) -> None:
    for _ in range(int(seconds * 10)):
        await asyncio.sleep(0.1)
        if sim.stats["acked_frames"] and not sim.summary()["unacked"]:
            return


async def test_readings_sent_by_the_fleet_arrive_exactly(kafka_settings: KafkaSettings,
                                                          tmp_path: Path) -> None:
    spec = small_fleet(gas_dtu_meters=24, water_dtu_meters=8)
    probe = simulator_for_probe(spec, tmp_path)
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()},
                           ledger=ledger_of(probe)) as fep:
        sim = simulator_for(fep, spec, tmp_path)
        await sim.start(kinds=("dtu",))
        await sim.wait_connected(10)
        await asyncio.sleep(3.0)  # three simulated hours: every meter reports ~3 times
        sim.stats["stop_scheduling"] = 1
        await _wait_acked(sim, 10)
        assert fep.snapshot()["links"] == 8  # while connected: stopping closes the links
        summary = await sim.stop()
    log = read_log(tmp_path / "sim.jsonl")
    acked = {_key(r.meter_id, r.register, r.ts, r.value) for r in log.acknowledged()}
    sent = {_key(r.meter_id, r.register, r.ts, r.value) for r in log.readings}
    assert summary["acked_frames"] >= 32 * 2
    assert len(acked) >= 2 * summary["acked_frames"] - 2  # two registers per 901F frame

    def mine(messages: list[Any]) -> list[Reading]:
        return [m for m in messages if isinstance(m, Reading) and m.fep == fep.instance]

    readings = mine(await consume_messages(
        kafka_settings, "readings.raw",
        until=lambda ms: acked <= {_key(r.meter_id, r.register, r.ts, r.value)
                                   for r in mine(ms)}))
    stored = {_key(r.meter_id, r.register, r.ts, r.value) for r in readings}
    assert acked <= stored, f"lost: {sorted(acked - stored)[:5]}"
    assert stored <= sent, f"unexpected: {sorted(stored - sent)[:5]}"
    assert {r.meter_id for r in readings} == set(probe.fleet.meters)
    assert all(r.unit == "m3" and r.source == "tcp" for r in readings)

    frames = [m for m in await consume_messages(kafka_settings, "frames.raw", count=1,
                                                wait_s=10)
              if isinstance(m, RawFrame) and m.fep == fep.instance]
    directions = {f.direction for f in frames}
    assert directions == {"in", "out"}  # uploads in, acks out
    assert all(f.valid for f in frames)
    events = [m for m in await consume_messages(kafka_settings, "device.events", count=1)
              if isinstance(m, DeviceEvent) and m.fep == fep.instance]
    assert {e.device_id for e in events if e.kind == "online"} == set(probe.fleet.links)


def simulator_for_probe(spec: Any, tmp_path: Path) -> Any:
    """The fleet the simulator will build (same seed), to load the ledger beforehand."""
    from simulator.runner import Simulator, SimulatorSettings

    return Simulator(SimulatorSettings(), spec=spec, log_path=None)
