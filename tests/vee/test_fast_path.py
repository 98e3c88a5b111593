"""The engine's fast path (an in-order value after a valid one) gives what the general passes
give: the same versions, alerts and state, also for values that carry event flags (status
tags, and input rules' flags such as ``clock_back`` from a drifting meter clock)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.vee.conftest import Run, gas_meter, reading
from vee.engine import VeeEngine
from vee.groups import default_rules_path, load_rule_set
from vee.model import encode_state

_RULES = load_rule_set(default_rules_path())

#: status tags as decoders report them: some map to event flags, some (``:no``, ``:open``)
#: to none
_STATUS = ("valve_state:open", "battery_low:no", "valve_state:closed", "battery_low", "tamper",
           "leak", "power_fail", "reverse_flow", "device_error", "clock_set", "overload",
           "valve_state:abnormal")
#: the meter clock against reception: none sent, in step, days behind (clock_back), ahead
_CLOCK = (None, 0.0, -3 * 86400.0, 7200.0)


class SlowEngine(VeeEngine):
    """The engine with its fast path off: every value goes through the general passes."""

    def _append(self, *args: Any, **kwargs: Any) -> bool:
        return False


class CountingEngine(VeeEngine):
    """The engine, counting the values it took through the general passes."""

    general = 0

    def _revalidate(self, *args: Any, **kwargs: Any) -> None:
        self.general += 1
        super()._revalidate(*args, **kwargs)


@st.composite
def flagged_series(draw: st.DrawFn) -> list[tuple[int, str, tuple[str, ...], float | None]]:
    """Hourly register reads, mostly in order, with status tags (runs of a closed valve) and
    meter clocks; now and then a gap, a stray value, a decrease or a value out of order."""
    first = draw(st.integers(0, 23))
    total = Decimal("1000")
    series = []
    h = first
    closed = False  # the valve: closed for a run of values (valve_consistency needs two)
    for _ in range(draw(st.integers(3, 60))):
        if draw(st.integers(0, 7)) == 0:
            closed = not closed
        h += 1 if draw(st.integers(0, 9)) else draw(st.integers(2, 5))
        use = draw(st.integers(0, 400)) if draw(st.integers(0, 12)) else \
            draw(st.integers(-2000, 90000))
        total = max(Decimal(0), total + Decimal(use) / 1000)
        status = tuple(draw(st.lists(st.sampled_from(_STATUS), max_size=2))) \
            if draw(st.booleans()) else ()
        if closed:
            status = (*status, "valve_state:closed")
        clock = draw(st.sampled_from(_CLOCK))
        series.append((h, f"{total:.3f}", status, clock))
    if len(series) > 3 and draw(st.integers(0, 3)) == 0:
        k = draw(st.integers(0, len(series) - 2))
        series[k], series[k + 1] = series[k + 1], series[k]
    return series


def _feed(engine: VeeEngine, medium: str | None,
          series: list[tuple[int, str, tuple[str, ...], float | None]]) -> Run:
    r = Run(engine, gas_meter(medium=medium))
    for h, v, status, clock in series:
        r.feed([reading(h, v, status=status, meter_clock_offset_s=clock)])
    return r


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flagged_series(), st.sampled_from(["gas", "water", "electricity"]))
def test_the_fast_path_gives_what_the_general_passes_give(series, medium) -> None:  # type: ignore[no-untyped-def]
    fast = _feed(VeeEngine(_RULES), medium, series)
    slow = _feed(SlowEngine(_RULES), medium, series)
    assert fast.outputs == slow.outputs, series
    assert fast.alerts == slow.alerts, series
    assert fast.commands == slow.commands, series
    assert fast.dropped == slow.dropped, series
    assert encode_state(fast.state) == encode_state(slow.state), series


def test_a_value_flagged_clock_back_after_a_valid_one_takes_the_fast_path() -> None:
    # a meter whose clock is days behind flags every value clock_back (a flag only): the
    # values are validated in order like any other, without re-validating the window
    engine = CountingEngine(_RULES)
    r = Run(engine, gas_meter(medium="water"))
    r.feed(reading(h, f"{1000 + h * 0.2:.3f}", status=("valve_state:open", "battery_low:no"),
                   meter_clock_offset_s=-3 * 86400) for h in range(6))
    assert engine.general == 1  # the first value only (nothing before it to follow)
    assert [o.version for o in r.outputs] == [1] * 6
    last = r.at(5)
    assert last.quality == "validated"
    assert "clock_back" in last.flags
    assert last.consumption == Decimal("0.2")


def test_a_tampered_value_is_questionable_and_raises_its_alert_on_the_fast_path() -> None:
    engine = CountingEngine(_RULES)
    r = Run(engine, gas_meter(medium="gas"))
    r.feed(reading(h, f"{1000 + h * 0.2:.3f}", status=("tamper",) if h == 4 else ())
           for h in range(6))
    assert engine.general == 1
    assert r.at(4).quality == "questionable"
    assert "tamper" in r.at(4).flags
    assert [a.code for a in r.alerts] == ["vee.tamper"]
