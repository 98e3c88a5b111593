"""The safety policy, rule by rule (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devices.commands.catalog import command_spec
from devices.commands.errors import SafetyPolicyError, UnsupportedCommandError
from devices.safety import (
    DeviceFacts,
    PolicyLimits,
    SafetyLock,
    WaveProgress,
    decide,
    exceeds_anomaly_threshold,
    plan_wave,
)
from tests.devices.profiles import (
    electricity_meter,
    gas_meter_armable,
    gas_meter_direct,
    water_meter_read_only,
)

LIMITS = PolicyLimits()
NOW = datetime(2024, 6, 1, 8, tzinfo=UTC)


def _decide(command: str, params: dict[str, object], facts: DeviceFacts, *, origin: str = "api",
            mass: bool = False):  # type: ignore[no-untyped-def]
    spec = command_spec(command)
    return decide(spec, spec.validate(params), facts, requested_by="op-1", origin=origin,
                  mass=mass, limits=LIMITS)


def test_open_arms_where_the_device_supports_arming() -> None:
    decision = _decide("valve_open", {}, DeviceFacts("m1", gas_meter_armable()))
    assert decision.command == "valve_arm_open"
    assert decision.requested_command == "valve_open"
    assert decision.rewritten
    assert decision.approvals_required == 0
    assert decision.params == {"acknowledge_safety_lock": False}
    assert decision.readback


def test_direct_open_needs_a_second_approver() -> None:
    decision = _decide("valve_open", {}, DeviceFacts("m2", gas_meter_direct()))
    assert decision.command == "valve_open"
    assert not decision.rewritten
    assert decision.approvals_required == 1
    assert any("second approver" in r for r in decision.reasons)


def test_ordinary_close_and_read_need_no_approval() -> None:
    assert _decide("valve_close", {"cause": "debt"},
                   DeviceFacts("m1", gas_meter_armable())).approvals_required == 0
    assert _decide("read_now", {}, DeviceFacts("m1", gas_meter_armable())).approvals_required == 0


def test_protected_customer_blocks_debt_closes_only() -> None:
    facts = DeviceFacts("m1", gas_meter_armable(), account_id="A-9", protected_customer=True)
    with pytest.raises(SafetyPolicyError) as err:
        _decide("valve_close", {"cause": "debt"}, facts, origin="billing")
    assert err.value.context["rule"] == "protected_customer"
    with pytest.raises(SafetyPolicyError):
        _decide("relay_trip", {"cause": "debt"},
                DeviceFacts("e1", electricity_meter(), protected_customer=True))
    # A leak is closed whoever the customer is.
    decision = _decide("valve_close", {"cause": "safety", "safety_cause": "leak"}, facts)
    assert decision.sets_safety_lock


def test_safety_close_is_never_reopened_automatically() -> None:
    locked = DeviceFacts("m1", gas_meter_armable(),
                         safety_lock=SafetyLock("tamper", NOW - timedelta(hours=1)))
    for origin in ("billing", "operation", "pipeline"):
        with pytest.raises(SafetyPolicyError) as err:
            _decide("valve_arm_open", {}, locked, origin=origin)
        assert err.value.context["rule"] == "safety_lock"
        with pytest.raises(SafetyPolicyError):
            _decide("valve_open", {}, locked, origin=origin)  # rewritten to arm, still refused


def test_a_person_reopens_a_safety_close_only_acknowledged_and_with_a_second_approver() -> None:
    locked = DeviceFacts("m1", gas_meter_armable(),
                         safety_lock=SafetyLock("leak", NOW - timedelta(hours=1)))
    with pytest.raises(SafetyPolicyError, match="acknowledge_safety_lock"):
        _decide("valve_arm_open", {}, locked)
    decision = _decide("valve_arm_open", {"acknowledge_safety_lock": True}, locked)
    assert decision.approvals_required == 1
    decision = _decide("valve_open", {"acknowledge_safety_lock": True}, locked)
    assert decision.command == "valve_arm_open"
    assert decision.params == {"acknowledge_safety_lock": True}


def test_relay_close_after_safety_trip_is_held_too() -> None:
    locked = DeviceFacts("e1", electricity_meter(),
                         safety_lock=SafetyLock("overload", NOW))
    with pytest.raises(SafetyPolicyError):
        _decide("relay_close", {}, locked, origin="billing")


def test_mass_commands_need_two_approvers_and_a_preview() -> None:
    decision = _decide("valve_close", {"cause": "service"}, DeviceFacts("m1", gas_meter_armable()),
                       mass=True)
    assert decision.approvals_required == 2
    assert decision.preview_required
    direct = _decide("valve_open", {}, DeviceFacts("m2", gas_meter_direct()), mass=True)
    assert direct.approvals_required == 2


def test_unsupported_command_names_what_the_type_supports() -> None:
    with pytest.raises(UnsupportedCommandError) as err:
        _decide("valve_close", {}, DeviceFacts("w1", water_meter_read_only()))
    assert "read_now" in str(err.value.hint)
    with pytest.raises(UnsupportedCommandError):
        _decide("valve_arm_open", {}, DeviceFacts("m2", gas_meter_direct()))


def test_anomaly_threshold_counts_people_and_state_changes_only() -> None:
    limits = PolicyLimits(anomaly_max_commands=3)
    close, read = command_spec("valve_close"), command_spec("read_now")
    assert not exceeds_anomaly_threshold(2, close, "api", limits)
    assert exceeds_anomaly_threshold(3, close, "api", limits)
    assert not exceeds_anomaly_threshold(300, read, "api", limits)
    assert not exceeds_anomaly_threshold(300, close, "billing", limits)


def _progress(**kw: object) -> WaveProgress:
    base: dict[str, object] = {"waiting": 100, "in_flight": 0, "confirmed": 0, "failed": 0,
                               "last_wave_at": None}
    base.update(kw)
    return WaveProgress(**base)  # type: ignore[arg-type]


def test_waves_are_throttled() -> None:
    limits = PolicyLimits(wave_size=20, wave_interval=timedelta(seconds=30))
    assert plan_wave(_progress(), NOW, limits).dispatch == 20
    recent = _progress(in_flight=20, last_wave_at=NOW - timedelta(seconds=5))
    assert plan_wave(recent, NOW, limits).dispatch == 0
    half = _progress(in_flight=8, confirmed=12, last_wave_at=NOW - timedelta(seconds=31))
    assert plan_wave(half, NOW, limits).dispatch == 12
    assert plan_wave(_progress(waiting=3), NOW, limits).dispatch == 3
    assert plan_wave(_progress(waiting=0), NOW, limits).dispatch == 0


def test_waves_pause_when_failures_pass_the_threshold() -> None:
    limits = PolicyLimits(max_failures=5, max_failure_ratio=0.2, min_finished=10)
    assert plan_wave(_progress(failed=5), NOW, limits).pause
    ratio = plan_wave(_progress(confirmed=7, failed=3), NOW, limits)
    assert ratio.pause
    assert "3 of 10" in ratio.reason
    assert not plan_wave(_progress(confirmed=9, failed=1), NOW, limits).pause
    # Too few finished for the ratio to mean anything yet.
    assert not plan_wave(_progress(confirmed=1, failed=2), NOW, limits).pause
