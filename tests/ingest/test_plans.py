"""The ledger's collection plans, read by the FEP (ingest role) from the demo ledger."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any

import pytest

from ingest.plans import LedgerPlan, load_ledger_plans

DEMO = sorted((Path(__file__).parents[1] / "data" / "ledger" / "demo").glob("*.csv"))


def test_windows_including_across_midnight() -> None:
    def plan(start: time | None, end: time | None) -> LedgerPlan:
        return LedgerPlan(plan_id="p", command="read_now", interval_s=3600, schedule="",
                          window_start=start, window_end=end, retries=1)

    night = plan(time(23, 0), time(5, 0))
    assert night.in_window(time(23, 30))
    assert night.in_window(time(4, 59))
    assert not night.in_window(time(12, 0))
    early = plan(time(1, 0), time(5, 0))
    assert early.in_window(time(1, 0))
    assert not early.in_window(time(5, 0))
    assert plan(None, None).in_window(time(12, 0))


@pytest.fixture
def demo_ledger(database: Any) -> Any:
    from devices.importer import import_files

    with database.connect("api") as conn:
        import_files(conn, DEMO, actor="test")
    return database


@pytest.mark.integration
async def test_plans_resolved_to_meters_of_our_service_points(demo_ledger: Any,
                                                              tmp_path: Path) -> None:
    plans = await load_ledger_plans(demo_ledger.settings, ["SP-376"])
    assert set(plans) == {"DAILY-376", "HOURLY-COM"}  # GM-0006/7 are read through SP-376 too
    daily = plans["DAILY-376"]
    assert (daily.command, daily.interval_s, daily.window_start, daily.retries) == (
        "read_history", 86400, time(1, 0), 3)
    assert daily.targets
    assert {t.service_point for t in daily.targets} == {"SP-376"}
    assert {t.device_id for t in plans["HOURLY-COM"].targets} == {"GM-0006", "GM-0007"}
    assert all(t.address and t.link_id in ("4201-0001", "4201-0002") for t in daily.targets)
    assert await load_ledger_plans(demo_ledger.settings, ["SP-NOTHING"]) == {}


@pytest.mark.integration
async def test_the_fep_schedules_the_ledger_plans_and_asks_only_what_it_holds(
        demo_ledger: Any, kafka_settings: Any, tmp_path: Path) -> None:
    from ingest.registry import PostgresRegistry
    from tests.ingest._fep import concentrator_point, running_fep

    registry = PostgresRegistry("fep-plans", demo_ledger.settings)
    async with running_fep(kafka_settings, tmp_path, {"SP-376": concentrator_point()},
                           registry=registry, instance="fep-plans",
                           database=demo_ledger.settings) as fep:
        poller = fep.pollers[0]  # started for the ledger's plans alone
        plans = await poller.refresh_ledger_plans()
        assert "DAILY-376" in plans
        assert poller._scheduler.get_job("ledger:DAILY-376") is not None
        daily = plans["DAILY-376"]
        always = LedgerPlan(**{**daily.__dict__, "window_start": None, "window_end": None})
        poller._ledger_plans["DAILY-376"] = always
        stats = await poller.run_ledger_plan("DAILY-376")
    assert stats.runs == 1
    assert stats.not_held == len(daily.targets)  # no concentrator is connected to this FEP
    assert stats.requests == 0
