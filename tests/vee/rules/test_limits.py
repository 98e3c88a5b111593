"""Limit rules: absolute limits, max flow by size, high/low, jumps, spike, sum check, zero use."""

from __future__ import annotations

from decimal import Decimal

from tests.vee.conftest import gas_meter, reading, run
from vee.model import MeterInfo


def test_absolute_limits_on_consumption() -> None:
    r = run("[{rule: absolute_limits, lower: 0, upper: 2}]",
            [reading(0, "10"), reading(1, "11.5"), reading(2, "14")])
    assert r.at(1).flags == ()
    assert r.at(2).flags == ("absolute_limits",)
    assert r.at(2).quality == "questionable"


def test_absolute_limits_on_the_register_value() -> None:
    r = run("[{rule: absolute_limits, register_upper: 50000}]",
            [reading(0, "49999"), reading(1, "50001")])
    assert r.at(0).flags == ()
    assert r.at(1).flags == ("absolute_limits",)


def test_max_flow_by_ledger_qmax_and_by_gas_size() -> None:
    # Qmax 4 m³/h, +10 %: 4.3 m³ in an hour passes, 4.5 does not
    r = run("[max_flow]", [reading(0, "0"), reading(1, "4.3"), reading(2, "8.8")])
    assert r.at(1).flags == ()
    assert "max_flow" in r.at(2).flags
    # G1.6 -> 2.5 m³/h when the ledger has no Qmax
    g16 = run("[max_flow]", [reading(0, "0"), reading(1, "3")],
              meter=gas_meter(qmax=None, size="G1.6"))
    assert "max_flow" in g16.at(1).flags
    g25 = run("[max_flow]", [reading(0, "0"), reading(1, "3")],
              meter=gas_meter(qmax=None, size="G2.5"))
    assert g25.at(1).flags == ()


def test_max_flow_leaves_the_volume_at_base_conditions_alone() -> None:
    """Regression: a gas flow computer's volume converted to base conditions (several times
    the line volume at line pressure) was held to the meter's Qmax, which bounds the line
    volume: the demo's RTUs had their billing register estimated away."""
    readings = [reading(0, "0", register="volume_standard"),
                reading(1, "30", register="volume_standard")]
    assert run("[max_flow]", readings).at(1, "volume_standard").flags == ()
    line = run("[max_flow]", [reading(0, "0"), reading(1, "30")])
    assert line.at(1).flags == ("max_flow",)  # the line volume is still checked
    strict = run("[{rule: max_flow, skip_registers: []}]", readings)
    assert strict.at(1, "volume_standard").flags == ("max_flow",)


def test_max_flow_skips_meters_without_qmax_unless_a_default_is_given() -> None:
    meter = gas_meter(qmax=None, size=None)
    assert run("[max_flow]", [reading(0, "0"), reading(1, "30")], meter=meter).at(1).flags == ()
    r = run("[{rule: max_flow, default_qmax: 6}]", [reading(0, "0"), reading(1, "30")],
            meter=meter)
    assert r.at(1).flags == ("max_flow",)


def test_max_flow_estimates_by_default() -> None:
    r = run("[max_flow]", [reading(0, "0"), reading(1, "1"), reading(2, "50"), reading(3, "3")],
            estimation="[{method: linear, max_gap: 2h}]")
    spike = r.at(2)
    assert spike.quality == "estimated"
    assert spike.method == "linear"
    assert spike.value == Decimal("2.000")
    assert spike.original_value == Decimal("50.000")


def test_high_low_against_the_customer_group_average() -> None:
    extra = "history: {average_daily_use: {residential: 1.0}}"
    # a day at 1 m³/day expected: 2.5 m³ passes (< +200 %), 3.5 m³ fires
    ok = run("[high_low]", [reading(0, "0"), reading(24, "2.5")], extra=extra)
    assert ok.at(24).flags == ()
    high = run("[high_low]", [reading(0, "0"), reading(24, "3.5")], extra=extra)
    assert high.at(24).flags == ("high_low",)
    low = run("[{rule: high_low, low_pct: 20}]", [reading(0, "0"), reading(24, "0.1")],
              extra=extra)
    assert low.at(24).flags == ("high_low",)


def test_high_low_takes_the_average_of_the_meters_medium() -> None:
    """Regression: one table for every medium held 0.9 units a day for a residential
    customer — right for gas in m³, a tenth of a household's electricity in kWh: every
    electricity reading over half a day was questionable (the demo showed it once its
    electricity readings were stamped on their simulated days)."""
    extra = ("history: {average_daily_use: {gas: {residential: 1.0}, "
             "electricity: {residential: 8, '*': 20}, residential: 0.5}}")
    elec = gas_meter(medium="electricity", qmax=None)

    def day(value: str, meter: MeterInfo, unit: str = "m3") -> tuple[str, ...]:
        readings = [reading(0, "0", unit=unit), reading(24, value, unit=unit)]
        return run("[high_low]", readings, extra=extra, meter=meter).at(24).flags

    assert day("10", elec, "kWh") == ()  # 10 kWh against 8 a day
    assert day("30", elec, "kWh") == ("high_low",)  # > 3 × 8
    assert day("30", gas_meter(medium="electricity", qmax=None, customer_type="public"),
               "kWh") == ()  # the medium's "*": 20
    assert day("3.5", gas_meter()) == ("high_low",)  # gas: 1 m³ a day
    # a medium without a table: the plain numbers (0.5 for residential)
    assert day("1.2", gas_meter(medium="water", qmax=None)) == ()
    assert day("1.6", gas_meter(medium="water", qmax=None)) == ("high_low",)


def test_high_low_scales_the_group_average_by_the_month() -> None:
    """A winter day of gas heating is not a high reading; the same day in July is."""
    from datetime import UTC, datetime, timedelta

    factors = "[1.9, 1.8, 1.4, 1.0, 0.75, 0.6, 0.55, 0.55, 0.65, 0.9, 1.3, 1.7]"
    extra = (f"history: {{average_daily_use: {{gas: {{residential: 1.0}}}}, "
             f"seasonal: {{gas: {factors}}}}}")

    def day(value: str, month: int) -> tuple[str, ...]:
        t0 = datetime(2026, month, 10, tzinfo=UTC)
        readings = [reading(0, "0", t0=t0), reading(24, value, t0=t0)]
        return run("[high_low]", readings, extra=extra).latest(None)[
            t0 + timedelta(hours=24)].flags

    assert day("4.5", 12) == ()  # December: 1.7 m³ a day expected, +200 % = 5.1
    assert day("5.5", 12) == ("high_low",)
    assert day("2.0", 7) == ("high_low",)  # July: 0.55 expected, +200 % = 1.65
    assert day("1.5", 7) == ()


def test_the_shipped_reference_use_fits_each_medium() -> None:
    from vee.groups import default_rules_path, load_rule_set

    rules = load_rule_set(default_rules_path())
    per_day = {m: rules.average_daily_use("residential", m) for m in
               ("gas", "water", "electricity", "heat")}
    assert per_day["electricity"] is not None
    assert per_day["gas"] is not None
    assert per_day["electricity"] >= 4 * per_day["gas"]  # kWh of a household vs m³ of gas
    assert rules.history_class(5 * 10**6, "electricity") == "medium"  # 5 kWh a day
    assert rules.history_class(5 * 10**6, "gas") == "high"  # 5 m³ a day


def test_high_low_ignores_short_periods_and_unknown_groups() -> None:
    extra = "history: {average_daily_use: {commercial: 1.0}}"
    r = run("[high_low]", [reading(0, "0"), reading(24, "30")], extra=extra)
    assert r.at(24).flags == ()  # residential meter, no average for its group
    short = run("[high_low]", [reading(0, "0"), reading(1, "30")],
                extra="history: {average_daily_use: {residential: 1.0}}")
    assert short.at(1).flags == ()


def test_consecutive_jump() -> None:
    r = run("[{rule: consecutive_jump, pct: 300}]",
            [reading(0, "0"), reading(1, "1"), reading(2, "2.5"), reading(3, "9.5")])
    assert r.at(2).flags == ()  # 1 -> 1.5 m³/h: +50 %
    assert r.at(3).flags == ("consecutive_jump",)  # 1.5 -> 7 m³/h: +367 %


def test_spike_worked_example_max_vs_third_highest() -> None:
    # reference: day max 5.0, third-highest 1.0, tolerance 200 % -> 400 % -> spike
    values = ["1.0", "0.8", "5.0", "0.9", "1.0", "0.7"]
    readings, total = [reading(0, "100")], Decimal("100")
    for h, v in enumerate(values, start=1):
        total += Decimal(v)
        readings.append(reading(h, str(total)))
    # the readings are all of the day there is: close it (a day is judged once it is over)
    r = run("[{rule: spike, tolerance_pct: 200}]", readings).close()
    flagged = [o.ts.hour for o in r.latest().values() if "spike" in o.flags]
    assert flagged == [3]
    assert r.at(3).quality == "questionable"  # estimate action, no method configured
    calm = run("[{rule: spike, tolerance_pct: 500}]", readings).close()
    assert not any("spike" in o.flags for o in calm.latest().values())


def test_spike_on_interval_data_is_estimated_and_a_later_value_can_release_it() -> None:
    values = ["1.0", "1.1", "4.0", "0.9"]
    readings = [reading(h, v, kind="interval", interval_s=3600, register="vi")
                for h, v in enumerate(values, start=1)]
    r = run("[{rule: spike, tolerance_pct: 200}]", readings,
            estimation="[{method: linear, max_gap: 2h}]").close()
    spike = r.at(3, "vi")
    assert spike.quality == "estimated"
    assert spike.original_value == Decimal("4.000")
    assert spike.value == Decimal("1.000")  # between 1.1 and 0.9
    # a high third value makes 4.0 ordinary: the spike is released in a new version
    r.feed([reading(5, "3.9", kind="interval", interval_s=3600, register="vi"),
            reading(6, "3.5", kind="interval", interval_s=3600, register="vi")]).close()
    released = r.at(3, "vi")
    assert released.quality == "validated"
    assert released.value == Decimal("4.000")
    assert released.version > spike.version


def test_sum_check_intervals_against_register() -> None:
    meter = gas_meter()
    good = [reading(0, "100"), reading(3, "103")] + [
        reading(h, "1", kind="interval", interval_s=3600, register="vi") for h in (1, 2, 3)]
    r = run("[sum_check]", [good[2], good[3], good[4], good[0], good[1]], meter=meter)
    assert r.at(3, "volume").flags == ()
    bad = [reading(h, "1", kind="interval", interval_s=3600, register="vi") for h in (1, 2, 3)]
    r2 = run("[{rule: sum_check, tolerance_pct: 2}]",
             [*bad, reading(0, "100"), reading(3, "103.5")], meter=meter)
    assert r2.at(3, "volume").flags == ("sum_check",)


def test_zero_consumption_on_an_active_account_is_valve_aware() -> None:
    seq = [reading(0, "10"), reading(24, "12"), reading(48, "12"), reading(72, "12"),
           reading(96, "12")]
    r = run("[{rule: zero_consumption, days: 3}]", seq)
    assert r.at(72).flags == ()  # two days without use
    assert r.at(96).flags == ("zero_consumption",)  # three days
    closed = [reading(0, "10"), reading(24, "12"),
              *(reading(h, "12", status=("valve_state:closed",)) for h in (48, 72, 96))]
    assert "zero_consumption" not in run("[zero_consumption]", closed).at(96).flags
    no_account = run("[zero_consumption]", seq, meter=gas_meter(account_id=None))
    assert no_account.at(96).flags == ()


def test_stuck_register_is_an_alias_of_zero_consumption() -> None:
    seq = [reading(0, "10"), reading(24, "12"), *(reading(h, "12") for h in (48, 72, 96))]
    assert run("[stuck_register]", seq).at(96).flags == ("zero_consumption",)
