"""Time rules: future timestamps, clock drift, clock-set events (reception time is "now")."""

from __future__ import annotations

from tests.vee.conftest import reading, run


def test_future_timestamp() -> None:
    ok = run("[future_timestamp]", [reading(0, "1", received_after_s=-200)])
    assert ok.at(0).flags == ()
    future = run("[future_timestamp]", [reading(0, "1", received_after_s=-3600)])
    assert future.at(0).flags == ("future_timestamp",)
    assert future.at(0).quality == "questionable"


def test_clock_drift_says_which_way() -> None:
    assert run("[clock_drift]", [reading(0, "1", meter_clock_offset_s=60)]).at(0).flags == ()
    ahead = run("[clock_drift]", [reading(0, "1", meter_clock_offset_s=900)])
    assert ahead.at(0).flags == ("clock_forward",)
    behind = run("[clock_drift]", [reading(0, "1", meter_clock_offset_s=-900)])
    assert behind.at(0).flags == ("clock_back",)
    assert behind.at(0).quality == "validated"  # a flag only
    assert run("[clock_drift]", [reading(0, "1")]).at(0).flags == ()  # no meter clock


def test_clock_set_event() -> None:
    r = run("[clock_set]", [reading(0, "1", status=("clock_set",))])
    assert "clock_set" in r.at(0).flags
    invalid = run("[clock_set]", [reading(0, "1", status=("clock_invalid",))])
    assert "clock_invalid" in invalid.at(0).flags
    assert run("[clock_set]", [reading(0, "1", status=("battery_low:no",))]).at(0).flags == ()
