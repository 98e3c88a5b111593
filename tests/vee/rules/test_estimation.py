"""Estimation methods, their order, and what an estimate may never replace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from schemas.messages import ReadingEdit
from tests.vee.conftest import Run, reading, run

LOCAL_MIDNIGHT = datetime(2026, 7, 5, 16, tzinfo=UTC)  # Monday 2026-07-06 00:00 Shanghai


def _daily(days: int, skip: set[int], weekday: str = "2", weekend: str = "5") -> list:  # type: ignore[type-arg]
    """Register reads at local midnight; weekdays use 2 m³, weekends 5 m³."""
    out, total = [], Decimal("100")
    for d in range(days + 1):
        if d not in skip:
            out.append(reading(24 * d, str(total), t0=LOCAL_MIDNIGHT))
        total += Decimal(weekend if d % 7 in (5, 6) else weekday)
    return out


def _values(r: Run) -> dict[int, Decimal | None]:
    return {(o.ts - LOCAL_MIDNIGHT).days: o.value for o in r.latest().values()}


def test_like_day_shapes_a_register_gap_by_the_nearest_days_of_the_same_type() -> None:
    # 4 weeks of history; Friday night to Monday missing (Sat and Sun reads lost)
    seq = _daily(28, skip={26, 27})
    r = run("[missing]", seq, estimation="[like_day, {method: linear, max_gap: 10d}]")
    values = _values(r)
    friday = values[25]  # the actual read at Friday 00:00
    assert friday is not None
    assert values[26] == friday + 2  # + Friday (weekday, 2 m³)
    assert values[27] == friday + 7  # + Saturday (weekend, 5 m³)
    assert values[28] == friday + 12  # actual
    assert {o.method for o in r.latest().values() if o.quality == "estimated"} == {"like_day"}
    # linear alone would spread the 12 m³ evenly
    flat = _values(run("[missing]", seq, estimation="[{method: linear, max_gap: 10d}]"))
    assert flat[26] == friday + 4


def test_like_day_needs_enough_like_days_and_falls_through_to_the_next_method() -> None:
    seq = _daily(9, skip={7})
    r = run("[missing]", seq, estimation="[like_day, {method: linear, max_gap: 2d}]")
    assert r.at(24 * 7 - 8).method == "linear"  # hours from T0 (08:00) to local midnight


def test_like_day_on_interval_data_uses_the_same_time_of_day() -> None:
    readings = []
    for d in range(4):
        for h in range(24):
            if d == 3 and h in (10, 11):
                continue
            value = "2" if 8 <= h < 20 else "1"
            readings.append(reading(24 * d + h + 1, value, kind="interval", interval_s=3600,
                                    register="vi"))
    r = run("[missing]", readings, estimation="[like_day]", window_points=200)
    assert r.at(24 * 3 + 11, "vi").value == Decimal("2")
    assert r.at(24 * 3 + 11, "vi").method == "like_day"


def test_flat_fill_of_a_one_sided_gap_register_and_interval() -> None:
    r = run("[max_flow]", [reading(0, "0"), reading(1, "1.5"), reading(2, "90")],
            estimation="[linear, flat]")
    last = r.at(2)
    assert (last.quality, last.method) == ("estimated", "flat")
    assert last.value == Decimal("3.000")  # the last rate (1.5 m³/h) carried on
    assert "forward" in last.flags
    iv = run("[negative_consumption]", [reading(1, "0.7", kind="interval", interval_s=3600),
                                        reading(2, "-1", kind="interval", interval_s=3600)],
             estimation="[flat]")
    assert iv.at(2).value == Decimal("0.700")


def test_forward_estimate_is_replaced_once_the_next_read_arrives() -> None:
    r = run("[max_flow]", [reading(0, "0"), reading(1, "1"), reading(2, "90")],
            estimation="[linear, flat]")
    assert r.at(2).method == "flat"
    r.feed([reading(3, "4")])
    again = r.at(2)
    assert (again.method, again.version) == ("linear", 2)
    assert again.value == Decimal("2.500")
    assert "forward" not in again.flags


def test_average_daily_own_then_group() -> None:
    extra = "history: {average_daily_use: {residential: 2.4}}"
    r = run("[max_flow]", [reading(0, "0"), reading(1, "90")], estimation="[average_daily]",
            extra=extra)
    assert r.at(1).value == Decimal("0.100")  # 2.4 m³/day for one hour
    none = run("[max_flow]", [reading(0, "0"), reading(1, "90")],
               estimation="[{method: average_daily, source: own}]", extra=extra)
    assert none.at(1).quality == "questionable"  # no own history: not estimable


def test_scaled_to_register_spreads_a_long_register_gap_equally() -> None:
    seq = [reading(h, str(10 + h)) for h in (0, 1, 2, 3)] + [reading(9, "25")]
    r = run("[missing]", seq, estimation="[{method: linear, max_gap: 1h}, scaled_to_register]")
    gap = [r.at(h) for h in range(4, 9)]
    assert {o.method for o in gap} == {"scaled_to_register"}
    assert [o.value for o in gap] == [Decimal(v) for v in ("15", "17", "19", "21", "23")]


def test_register_constrained_fill_worked_example() -> None:
    # reference: register 1000.000 at 00:00 and 1003.000 at 06:00; hourly values 0.4, 0.6,
    # ?, ?, 0.7, 0.5 -> the two missing hours share 0.8 in the linear shape
    readings = [reading(0, "1000.000"), reading(6, "1003.000")] + [
        reading(h, v, kind="interval", interval_s=3600, register="vi")
        for h, v in ((1, "0.4"), (2, "0.6"), (5, "0.7"), (6, "0.5"))]
    r = run("[missing]", readings, estimation="[{method: linear, max_gap: 2h}, scaled_to_register]")
    three, four = r.at(3, "vi"), r.at(4, "vi")
    assert abs(three.value - Decimal("0.3897")) < Decimal("0.0001")  # type: ignore[operator]
    assert abs(four.value - Decimal("0.4103")) < Decimal("0.0001")  # type: ignore[operator]
    assert three.method == "scaled_to_register"
    assert sum(o.value for o in r.latest("vi").values()) == Decimal("3")  # type: ignore[misc]


def test_zero_fill_while_the_valve_is_closed() -> None:
    closed = ("valve_state:closed",)
    seq = [reading(h, "10", status=closed) for h in (0, 1, 2, 3)] + [
        reading(6, "10", status=closed)]
    r = run("[missing]", seq, estimation="[zero, {method: linear, max_gap: 1h}]")
    assert (r.at(4).value, r.at(4).method) == (Decimal("10"), "zero")
    open_valve = [reading(h, str(10 + h)) for h in (0, 1, 2, 3)] + [reading(6, "16")]
    assert run("[missing]", open_valve, estimation="[zero, {method: linear, max_gap: 3h}]"
               ).at(4).method == "linear"


def test_the_order_of_methods_decides() -> None:
    seq = [reading(h, str(10 + h)) for h in (0, 1, 2, 3)] + [reading(5, "15")]
    first = run("[missing]", seq, estimation="[{method: linear, max_gap: 2h}, flat]")
    assert first.at(4).method == "linear"
    second = run("[missing]", seq, estimation="[flat, {method: linear, max_gap: 2h}]")
    assert second.at(4).method == "flat"


def test_an_estimate_never_replaces_an_edited_or_final_value() -> None:
    r = run("[max_flow]", [reading(0, "0"), reading(1, "1"), reading(2, "2")],
            estimation="[linear, flat]")
    edit = ReadingEdit(edit_id="e1", meter_id="GM-1", register="volume",
                       ts=r.at(2).ts, user="alice", at=r.at(2).ts + timedelta(days=1),
                       reason_code="AGREED", value=Decimal("50"), method="agreed", final=True)
    result = r.engine.apply_edit(edit, r.meter, r.state)
    r.outputs.extend(result.outputs)
    final = r.at(2)
    assert (final.quality, final.method, final.value) == ("final", "agreed", Decimal("50.000"))
    assert final.edit is not None
    assert final.edit.previous_value == Decimal("2.000")
    r.feed([reading(3, "51")])
    assert r.at(2).value == Decimal("50.000")  # max_flow fires, but a final value stays
    assert r.at(2).quality == "final"
