"""The simulator's faults against a real FEP: garbage, corrupt frames, dropped connections,
duplicate uploads, spikes, rollbacks, missing reports, clock drift — the log still tells
exactly what must have been stored."""

from __future__ import annotations

import asyncio
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from schemas.messages import Reading
from schemas.settings import KafkaSettings
from simulator.log import read_log
from tests.ingest._fep import dtu_point, ledger_of, running_fep, simulator_for, small_fleet
from tests.ingest._kafka import consume_messages

pytestmark = pytest.mark.integration

FAULTS = ("garbage", "corrupt", "disconnect", "duplicate", "spike", "rollback", "missing",
          "clock_drift", "rollover")


async def test_faulty_fleet_loses_nothing_acknowledged(kafka_settings: KafkaSettings,
                                                       tmp_path: Path) -> None:
    from simulator.runner import Simulator, SimulatorSettings

    spec = small_fleet(gas_dtu_meters=12, water_dtu_meters=4)
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()},
                           ledger=ledger_of(probe)) as fep:
        sim = simulator_for(fep, spec, tmp_path, speed=3600, ack_timeout_s=2)
        for kind in FAULTS:
            sim.faults.inject(kind, "*", count=3)
        await sim.start(kinds=("dtu",))
        await sim.wait_connected(10)
        for _ in range(200):  # every forced fault has fired and the links are back
            await asyncio.sleep(0.1)
            if not sim.faults.pending() and all(link.connected.is_set()
                                                for link in sim.links.values()):
                break
        await asyncio.sleep(3.0)  # retransmissions of corrupt / cut uploads get through
        summary = await sim.stop()
        malformed = fep.stats["malformed"]
    assert sim.faults.fired == {kind: 3 for kind in FAULTS}
    assert malformed >= 3  # garbage and corrupt frames were seen, counted, kept
    log = read_log(tmp_path / "sim.jsonl")
    tagged = {tag for r in log.readings if r.fault for tag in r.fault.split("+")}
    assert {"spike", "rollback", "clock_drift"} <= tagged
    assert sum(1 for f in log.faults if f.kind == "missing") == 3
    assert max(log.frame_copies.values()) >= 2  # duplicates and retransmissions
    assert summary["acked_frames"] > 0

    def key(meter: str, register: str, ts: Any, value: Any) -> tuple[Any, ...]:
        return (meter, register, ts.astimezone(UTC), str(value))

    acked = {key(r.meter_id, r.register, r.ts, r.value) for r in log.acknowledged()}
    sent = {key(r.meter_id, r.register, r.ts, r.value) for r in log.readings}

    def stored(ms: list[Any]) -> set[Any]:
        return {key(m.meter_id, m.register, m.ts, m.value) for m in ms
                if isinstance(m, Reading) and m.fep == fep.instance}

    found = stored(await consume_messages(kafka_settings, "readings.raw",
                                          until=lambda ms: acked <= stored(ms), wait_s=30))
    assert acked <= found, f"lost: {sorted(acked - found)[:3]}"
    assert found <= sent, f"unexpected: {sorted(found - sent)[:3]}"
