"""Data rules: missing (markers), duplicate, interval/unit, inactive device, prolonged
estimation."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from tests.vee.conftest import T0, gas_meter, reading, run


def _hourly(values: dict[int, str]) -> list:  # type: ignore[type-arg]
    return [reading(h, v) for h, v in sorted(values.items())]


def test_missing_values_get_markers_estimated_or_missing() -> None:
    seq = _hourly({0: "10", 1: "11", 2: "12", 3: "13", 6: "16"})
    filled = run("[missing]", seq, estimation="[{method: linear, max_gap: 3h}]")
    assert [o.value for o in filled.latest().values()] == [Decimal(v) for v in
                                                          ("10", "11", "12", "13", "14", "15",
                                                           "16")]
    marker = filled.at(4)
    assert (marker.quality, marker.method, marker.flags) == ("estimated", "linear", ("missing",))
    assert marker.original_value is None
    bare = run("[missing]", seq)  # no estimation method: the markers stay missing
    assert bare.at(4).quality == "missing"
    assert bare.at(4).value is None
    assert bare.at(4).intervals == ()
    # nothing is lost: the value after the gap carries the whole advance
    assert bare.at(6).consumption == 3
    assert bare.at(6).interval_start == T0 + timedelta(hours=3)


def test_no_markers_without_a_gap_or_over_max_markers() -> None:
    seq = _hourly({0: "10", 1: "11", 2: "12", 3: "13", 4: "14"})
    assert len(run("[missing]", seq).latest()) == 5
    long_gap = _hourly({0: "10", 1: "11", 2: "12", 3: "13", 40: "50"})
    r = run("[{rule: missing, max_markers: 10}]", long_gap)
    assert len(r.latest()) == 5


def test_missing_asks_the_meter_for_its_history_once_per_gap() -> None:
    seq = [reading(24 * d, str(10 + d)) for d in (0, 1, 2, 3)] + [reading(24 * 7, "17")]
    r = run("[{rule: missing, read_history: true}]", seq)
    assert len(r.commands) == 1
    command = r.commands[0]
    assert command.command == "read_history"
    assert command.device_id == "GM-1"
    assert command.params["granularity"] == "day"
    assert command.params["start"] == (T0 + timedelta(days=3)).isoformat()
    again = run("[{rule: missing, read_history: true}]", seq)
    assert again.commands[0].command_id == command.command_id  # idempotent on replay


def test_exact_duplicate_is_dropped_and_a_different_value_is_flagged() -> None:
    r = run("[duplicate]", _hourly({0: "10", 1: "11"}))
    r.feed([reading(1, "11")])
    assert r.dropped == ["duplicate"]
    assert len(r.outputs) == 2
    r.feed([reading(1, "11.5")])
    conflict = r.at(1)
    assert conflict.version == 2
    assert "duplicate" in conflict.flags
    assert conflict.value == Decimal("11.000")  # the first value is kept
    assert any(a.code == "vee.duplicate" for a in r.alerts)


def test_duplicate_within_tolerance_and_keep_last() -> None:
    r = run("[{rule: duplicate, value_tolerance: 0.01, keep: last}]", _hourly({0: "10", 1: "11"}))
    r.feed([reading(1, "11.005")])
    assert r.dropped == ["duplicate"]
    r.feed([reading(1, "11.5")])
    assert r.at(1).value == Decimal("11.500")


def test_interval_unit_rule() -> None:
    r = run("[interval_unit]", [reading(0, "10"), reading(1, "11", unit="L")])
    assert r.at(0).flags == ()
    assert r.at(1).flags == ("interval_unit",)
    assert r.at(1).quality == "questionable"
    iv = run("[interval_unit]", [reading(1, "1", kind="interval", interval_s=3600),
                                 reading(2, "1", kind="interval", interval_s=900)])
    assert iv.at(2).flags == ("interval_unit",)


def test_inactive_device() -> None:
    assert run("[inactive_device]", [reading(0, "1")]).at(0).flags == ()
    removed = run("[inactive_device]", [reading(0, "1")], meter=gas_meter(status="removed"))
    assert removed.at(0).flags == ("inactive_device",)
    early = run("[inactive_device]", [reading(0, "1")],
                meter=gas_meter(installed_at=int((T0 + timedelta(days=1)).timestamp())))
    assert early.at(0).flags == ("inactive_device",)
    unknown = run("[inactive_device]", [reading(0, "1")], meter=gas_meter(known=False))
    assert unknown.at(0).flags == ("inactive_device",)
    lenient = run("[{rule: inactive_device, unknown_meters: false}]", [reading(0, "1")],
                  meter=gas_meter(known=False))
    assert lenient.at(0).flags == ()


def test_prolonged_estimation_flags_the_run_beyond_max_count() -> None:
    seq = _hourly({0: "10", 1: "11", 2: "12", 3: "13", 9: "19"})
    r = run("[missing, {rule: prolonged_estimation, max_count: 3}]", seq,
            estimation="[{method: linear, max_gap: 6h}]")
    flags = {o.ts.hour: o.flags for o in r.latest().values()}
    assert "prolonged_estimation" not in flags[6]
    assert "prolonged_estimation" in flags[7]
    assert "prolonged_estimation" in flags[8]
    assert "prolonged_estimation" not in flags[9]
