"""Device status rules: tamper, battery, reverse flow, leak, valve consistency …"""

from __future__ import annotations

import pytest

from tests.vee.conftest import reading, run


@pytest.mark.parametrize(("rule", "tag", "quality"), [
    ("tamper", "magnetic", "questionable"),
    ("battery_low", "battery_low", "validated"),
    ("reverse_flow", "reverse_flow", "questionable"),
    ("leak", "continuous_flow", "validated"),
    ("overload", "overflow", "validated"),
    ("power_fail", "power_failure", "validated"),
    ("device_error", "crc_error", "questionable"),
])
def test_status_flag_rules(rule: str, tag: str, quality: str) -> None:
    fired = run(f"[{rule}]", [reading(0, "1"), reading(1, "2", status=(tag,))])
    assert rule in fired.at(1).flags
    assert fired.at(1).quality == quality
    quiet = run(f"[{rule}]", [reading(0, "1"), reading(1, "2", status=(f"{tag}:no",))])
    assert quiet.at(1).flags == ()


def test_status_flags_are_reported_even_without_their_rule() -> None:
    r = run("[]", [reading(0, "1", status=("battery_low",))])
    assert r.at(0).flags == ("battery_low",)
    assert r.at(0).quality == "validated"


def test_device_status_flags_any_status() -> None:
    r = run("[device_status]", [reading(0, "1", status=("tamper",))])
    assert "device_status" in r.at(0).flags
    assert run("[device_status]", [reading(0, "1")]).at(0).flags == ()


def test_valve_consistency_consumption_while_closed() -> None:
    closed = ("valve_state:closed",)
    r = run("[valve_consistency]", [reading(0, "10", status=closed),
                                    reading(1, "10.0005", status=closed),
                                    reading(2, "10.5", status=closed)])
    assert "valve_consistency" not in r.at(1).flags  # within the residual tolerance
    assert "valve_consistency" in r.at(2).flags
    assert any(a.code == "vee.valve_consistency" and a.severity == "major" for a in r.alerts)
    opened = run("[valve_consistency]", [reading(0, "10", status=closed),
                                         reading(1, "10.5", status=("valve_state:open",))])
    assert "valve_consistency" not in opened.at(1).flags
