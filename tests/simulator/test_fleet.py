"""The fleet: 10,000 meters by default, unique identities, ledger entries, faults, control."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from simulator.faults import FaultPlan, parse_fault_spec
from simulator.fleet import Fleet, FleetSpec
from simulator.runner import Simulator, SimulatorSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_default_fleet_has_ten_thousand_meters_with_unique_identities() -> None:
    fleet = Fleet(FleetSpec(), T0)
    counts = fleet.counts()
    assert counts["meters"] >= 10_000
    assert counts["modbus_meters"] == 100
    assert counts["dtu_meters"] == 7300
    assert counts["concentrator_meters"] == 1300
    assert counts["nbiot_links"] == 1400
    addresses = [(m.protocol, m.address) for m in fleet.meters.values()]
    assert len(set(addresses)) == len(addresses)
    mix = {m.customer_type for m in fleet.meters.values()}
    assert mix == {"residential", "commercial", "industrial"}
    ledger = fleet.ledger()
    assert len(ledger) == counts["meters"]
    dtu_meter = fleet.meters["GAS-000001"]
    assert dtu_meter.link_id == "DTU000001"
    assert ledger[0].link_id == dtu_meter.link_id


def test_same_seed_same_fleet_and_scaling_keeps_the_mix(tmp_path: Path) -> None:
    a, b = Fleet(FleetSpec(), T0), Fleet(FleetSpec(), T0)
    assert [m.consumption.total for m in a.meters.values()][:50] == \
        [m.consumption.total for m in b.meters.values()][:50]
    small = FleetSpec().scaled(1000)
    assert 900 <= small.meters <= 1100
    assert small.gas_dtu_meters > small.water_dtu_meters > 0
    rows = Fleet(small, T0).export_csv(tmp_path / "fleet.csv")
    assert rows == small.meters


def test_fault_specs_and_forced_faults() -> None:
    assert parse_fault_spec("spike=0.5, disconnect") == {"spike": 0.5, "disconnect": 0.01}
    with pytest.raises(ValueError, match="unknown fault 'melt'"):
        parse_fault_spec("melt=0.1")
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_fault_spec("spike=2")
    plan = FaultPlan({}, seed=1)
    plan.inject("garbage", "DTU7", count=2)
    assert not plan.should("garbage", "DTU8")
    assert plan.should("garbage", "DTU7")
    assert plan.should("garbage", "DTU7")
    assert not plan.should("garbage", "DTU7")
    assert plan.fired["garbage"] == 2


def test_control_commands() -> None:
    sim = Simulator(SimulatorSettings(), spec=FleetSpec().scaled(20), log_path=None)
    assert sim.control("inject disconnect DTU000001 3")["pending"] == \
        {"disconnect:DTU000001": 3}
    assert sim.control("rate spike 0.25")["rates"] == {"spike": 0.25}
    assert not sim.control("inject melt")["ok"]
    assert "unknown command" in sim.control("reboot")["error"]


def test_clock_speed_change_keeps_time_continuous() -> None:
    import time as _time

    from simulator.clock import SimClock

    clock = SimClock(T0, speed=3600)
    _time.sleep(0.05)
    before = clock.now()
    clock.set_speed(1.0)
    after = clock.now()
    assert before <= after < before + timedelta(seconds=1)  # no jump back or forward
    _time.sleep(0.05)
    assert clock.now() - after < timedelta(seconds=1)  # real time from now on
    assert before - T0 >= timedelta(seconds=100)  # it had been running fast


def test_clock_slows_to_real_speed_at_until_and_shares_its_time_line() -> None:
    import time as _time

    from simulator.clock import SimClock

    until = T0 + timedelta(hours=1)
    clock = SimClock(T0, speed=36_000, until=until)  # the hour takes 0.1 real seconds
    assert clock.current_speed() == 36_000
    assert clock.real_seconds(timedelta(hours=1)) == pytest.approx(0.1)
    _time.sleep(0.25)
    now = clock.now()
    assert until < now < until + timedelta(seconds=5)  # past until: real speed, no overshoot
    assert clock.current_speed() == 1.0
    assert clock.real_seconds(timedelta(seconds=3)) == 3.0
    # the FEP evaluates the same line on the wall clock: both say the same "now"
    wall = clock.wall_timeline()
    assert abs((wall.at(_time.time()) - clock.now()).total_seconds()) < 0.05
    assert wall.until == until
    assert wall.speed == 36_000


def test_clock_anchored_ahead_stands_before_its_start_until_then() -> None:
    import time as _time

    from simulator.clock import SimClock

    clock = SimClock(T0, speed=60, wall_anchor=_time.time() + 10)
    assert T0 - timedelta(minutes=11) < clock.now() < T0 - timedelta(minutes=9)
    assert abs(clock.wall_timeline().anchor - (_time.time() + 10)) < 0.5


def test_a_closed_valve_stops_the_register() -> None:
    """Regression: valve_close changed the meter's valve state but gas kept flowing, so
    every cut-off meter looked like a bypass to the VEE (the demo raised hundreds of
    vee.valve_consistency alerts, all made by the simulator)."""
    fleet = Fleet(FleetSpec(), T0)
    meter = next(m for m in fleet.meters.values() if m.has_valve and m.medium == "gas"
                 and m.customer_type == "commercial")
    twin = Fleet(FleetSpec(), T0).meters[meter.meter_id]  # same profile, always supplied
    t1, t2, t3 = (T0 + timedelta(days=d) for d in (1, 2, 3))
    meter.advance(t1)
    at_close = meter.consumption.total
    assert at_close > 0
    meter.set_valve("closed", t2 - timedelta(hours=12))  # what flowed until then counts
    closed_at = meter.consumption.total
    assert closed_at > at_close
    meter.advance(t2)
    assert meter.consumption.total == closed_at  # no flow while closed
    meter.set_valve("armed", t2)  # armed for a local opening: still shut
    meter.advance(t2 + timedelta(hours=6))
    assert meter.consumption.total == closed_at
    meter.set_valve("open", t2 + timedelta(hours=6))
    meter.advance(t3)
    # from the opening on it consumes as its always-supplied twin did in the same hours
    twin.advance(t2 + timedelta(hours=6))
    before = twin.consumption.total
    twin.advance(t3)
    assert meter.consumption.total - closed_at == pytest.approx(twin.consumption.total - before)
    # a meter without a valve is always supplied
    plain = next(m for m in fleet.meters.values() if not m.has_valve)
    plain.valve = "closed"
    assert plain.supplied
