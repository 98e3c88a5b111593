"""Register rules: rollover vs rollback (worked example), negative consumption, delta limits."""

from __future__ import annotations

from decimal import Decimal

from tests.vee.conftest import gas_meter, reading, run


def test_rollover_within_qmax_is_accepted_as_a_wrap() -> None:
    # reference: 5+3 digits, Qmax 4 m³/h: 99998.500 -> 00002.300 in one hour = 3.800 m³
    r = run("[rollover, negative_consumption]", [reading(0, "99998.500"), reading(1, "2.300")])
    second = r.at(1)
    assert second.quality == "validated"
    assert second.consumption == Decimal("3.800")
    assert "rollover" in second.flags
    assert sum(i.volume for i in second.intervals) == second.consumption


def test_decrease_beyond_qmax_is_a_rollback_not_a_wrap() -> None:
    # 99998.500 -> 00010.000 in one hour would be 11.5 m³ > 4 m³/h: rollback / exchange
    r = run("[rollover, negative_consumption]", [reading(0, "99998.500"), reading(1, "10.000")])
    second = r.at(1)
    assert "rollover" not in second.flags
    assert "negative_consumption" in second.flags
    assert second.quality == "questionable"  # no estimation method configured
    assert second.value == 10


def test_without_the_rollover_rule_a_decrease_is_never_a_wrap() -> None:
    r = run("[negative_consumption]", [reading(0, "99998.500"), reading(1, "2.300")])
    assert "negative_consumption" in r.at(1).flags


def test_wrap_without_qmax_uses_the_share_of_the_register_range() -> None:
    meter = gas_meter(qmax=None, size=None)
    ok = run("[rollover, negative_consumption]", [reading(0, "99999.000"), reading(1, "1.000")],
             meter=meter)
    assert "rollover" in ok.at(1).flags  # 2 m³ < 1 % of 100000
    far = run("[rollover, negative_consumption]",
              [reading(0, "99000.000"), reading(1, "2000.000")], meter=meter)
    assert "negative_consumption" in far.at(1).flags


def test_increasing_register_passes_negative_consumption() -> None:
    r = run("[negative_consumption]", [reading(0, "10.000"), reading(1, "10.500")])
    assert r.at(1).flags == ()
    assert r.at(1).quality == "validated"


def test_register_delta_absolute_limit() -> None:
    r = run("[{rule: register_delta, max_advance: 1}]",
            [reading(0, "10.000"), reading(1, "10.900"), reading(2, "12.000")])
    assert r.at(1).flags == ()
    assert r.at(2).flags == ("register_delta",)
    assert r.at(2).quality == "questionable"


def test_register_delta_relative_to_previous_rate() -> None:
    r = run("[{rule: register_delta, max_pct_of_previous: 300}]",
            [reading(0, "10.000"), reading(1, "10.500"), reading(2, "11.000"),
             reading(3, "13.000")])
    assert r.at(2).flags == ()
    assert r.at(3).flags == ("register_delta",)
