"""Collection plans: the FEP asks meters behind DTUs, and counts per plan."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ingest.settings import PollPlanSettings
from schemas.messages import Reading
from schemas.settings import KafkaSettings
from simulator.log import read_log
from tests.ingest._fep import dtu_point, ledger_of, running_fep, simulator_for, small_fleet
from tests.ingest._kafka import consume_messages

pytestmark = pytest.mark.integration


async def test_a_read_plan_asks_every_meter_of_every_link(kafka_settings: KafkaSettings,
                                                          tmp_path: Path) -> None:
    from simulator.runner import Simulator, SimulatorSettings

    spec = small_fleet(gas_dtu_meters=6, water_dtu_meters=2)
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    plans = {"hourly-read": PollPlanSettings(service_point="dtu", interval_s=3600,
                                             jitter_s=0, per_link_concurrency=1,
                                             timeout_s=3)}
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()},
                           ledger=ledger_of(probe), poll_plans=plans) as fep:
        # a slow clock: the meters hardly report by themselves, the plan must ask them
        sim = simulator_for(fep, spec, tmp_path, speed=1)
        await sim.start(kinds=("dtu",))
        await sim.wait_connected(10)
        for _ in range(50):
            if len(fep.links) == 2:
                break
            await asyncio.sleep(0.1)
        poller = fep.pollers[0]
        stats = await poller.run_plan("hourly-read")
        await sim.stop()
        assert stats.requests == 8
        assert stats.successes == 8
        assert stats.failures == stats.timeouts == 0
        assert poller.snapshot()["hourly-read"]["runs"] == 1
    answered = read_log(tmp_path / "sim.jsonl")
    assert sum(1 for c in answered.commands if c.command == "read_now") == 8

    def polled(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance
                and m.source == "poll" and m.register == "volume"]

    readings = polled(await consume_messages(kafka_settings, "readings.raw",
                                             until=lambda ms: len(polled(ms)) >= 8))
    assert {r.meter_id for r in readings} == set(probe.fleet.meters)
