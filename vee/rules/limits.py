"""Consumption limits: absolute limits, maximum flow by meter size, high/low against history,
consecutive jumps, spikes, the sum check of intervals against the register, and zero
consumption on an active account.

Rates are consumption per hour (micro-units), so values over unequal intervals — a daily
NB-IoT report after a missed day — compare fairly.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vee.context import PointContext
from vee.model import Point
from vee.registry import Action, Duration, RuleParams, ValidationRule, register

__all__ = ["AbsoluteLimits", "ConsecutiveJump", "HighLow", "MaxFlow", "Spike", "SumCheck",
           "ZeroConsumption"]

_MICRO = 1_000_000


class AbsoluteParams(RuleParams):
    #: Lowest accepted consumption per value (units); None = no lower limit.
    lower: float | None = None
    #: Highest accepted consumption per value (units); None = no upper limit.
    upper: float | None = None
    #: Limits on the register reading itself (cumulative channels).
    register_lower: float | None = None
    register_upper: float | None = None


@register
class AbsoluteLimits(ValidationRule):
    """A value (interval consumption, or a register reading) outside configured limits."""

    id = "absolute_limits"
    Params = AbsoluteParams
    default_action: ClassVar[Action] = "questionable"
    params: AbsoluteParams

    def check(self, ctx: PointContext) -> bool:
        p = self.params
        c = ctx.consumption
        if c is not None:
            if p.lower is not None and c < p.lower * _MICRO:
                return True
            if p.upper is not None and c > p.upper * _MICRO:
                return True
        if ctx.channel.kind == "cumulative" and ctx.point is not None:
            raw = ctx.point.raw
            if raw is not None:
                if p.register_lower is not None and raw < p.register_lower * _MICRO:
                    return True
                if p.register_upper is not None and raw > p.register_upper * _MICRO:
                    return True
        return False


class MaxFlowParams(RuleParams):
    #: Accept up to Qmax × (1 + this) per hour on average over the value's interval.
    tolerance_pct: float = Field(default=10, ge=0, le=1000)
    #: Qmax (units/h) to use when the ledger has none for the meter (0 = skip such meters).
    default_qmax: float = Field(default=0, ge=0)
    #: Registers a Qmax does not bound: the volume converted to base conditions of a gas
    #: flow computer is several times the line volume the meter's Qmax limits.
    skip_registers: list[str] = Field(default_factory=lambda: ["volume_standard"])


@register
class MaxFlow(ValidationRule):
    """Average flow above the meter's maximum (Qmax from the ledger, or from its G-size:
    G1.6 → 2.5 m³/h, G2.5 → 4, G4 → 6, G6 → 10, G10 → 16, G16 → 25, G25 → 40)."""

    id = "max_flow"
    needs_consumption = True
    Params = MaxFlowParams
    default_action: ClassVar[Action] = "estimate"
    params: MaxFlowParams

    def check(self, ctx: PointContext) -> bool:
        rate = ctx.rate_per_hour()
        if rate is None or ctx.channel.register in self.params.skip_registers:
            return False
        qmax = ctx.meter.qmax_micro()
        if qmax is None:
            if not self.params.default_qmax:
                return False
            qmax = int(self.params.default_qmax * _MICRO)
        return rate > qmax * (1 + self.params.tolerance_pct / 100)


class HighLowParams(RuleParams):
    #: Fire when consumption exceeds the expected by more than this percentage.
    high_pct: float = Field(default=200, ge=0)
    #: Fire when consumption is below this percentage of the expected (0 = never).
    low_pct: float = Field(default=0, ge=0, le=100)
    #: Where the expected daily use comes from.
    source: Literal["own_then_group", "own", "group"] = "own_then_group"
    #: Closed days of the meter's own history needed before its own average is used.
    min_days: int = Field(default=7, ge=1, le=400)
    #: Shortest period checked (shorter ones are too noisy for a daily average).
    min_period: Duration = 86400 // 2


@register
class HighLow(ValidationRule):
    """Consumption over the period against average daily use × days — the meter's own
    history, or the average of its customer group (``history.average_daily_use``)."""

    id = "high_low"
    needs_consumption = True
    Params = HighLowParams
    default_action: ClassVar[Action] = "questionable"
    params: HighLowParams

    def check(self, ctx: PointContext) -> bool | str:
        c = ctx.consumption
        p = self.params
        if c is None or ctx.elapsed < p.min_period:
            return False
        adu = None
        if p.source in ("own_then_group", "own"):
            adu = ctx.own_average_daily_use(p.min_days)
        if adu is None and p.source in ("own_then_group", "group"):
            adu = ctx.group_average_daily_use()
        if not adu:
            return False
        expected = adu * ctx.elapsed / 86400
        if c > expected * (1 + p.high_pct / 100):
            return True
        return bool(p.low_pct) and c < expected * p.low_pct / 100


class JumpParams(RuleParams):
    #: Fire when the rate changes by more than this percentage of the previous rate.
    pct: float = Field(default=500, gt=0)
    #: Ignore jumps where both rates are below this (units per hour).
    min_rate: float = Field(default=0.01, ge=0)


@register
class ConsecutiveJump(ValidationRule):
    """The rate changed by more than ``pct`` against the last valid interval."""

    id = "consecutive_jump"
    needs_consumption = True
    Params = JumpParams
    default_action: ClassVar[Action] = "questionable"
    params: JumpParams

    def check(self, ctx: PointContext) -> bool:
        rate, prev = ctx.rate_per_hour(), ctx.previous_rate()
        if rate is None or prev is None:
            return False
        if max(rate, prev) < self.params.min_rate * _MICRO:
            return False
        if prev <= 0:
            return rate > self.params.min_rate * _MICRO
        return abs(rate - prev) * 100 / prev > self.params.pct


class SpikeParams(RuleParams):
    #: Fire when (value − third highest) / third highest exceeds this percentage.
    tolerance_pct: float = Field(default=200, gt=0)
    #: Judge the values of one local day once the day is over, or each value against the
    #: values before it in the window (the last 16); ``auto``: the day for values more
    #: frequent than every 6 hours, else the window (daily reads).
    scope: Literal["auto", "day", "window"] = "auto"
    #: Window scope: judge only once the window covers this many days — a whole week, so
    #: the reference has seen the meter's weekly cycle (0 = from three values on).
    min_window_days: float = Field(default=7, ge=0, le=60)
    #: Ignore spikes whose rate is below this (units per hour).
    min_rate: float = Field(default=0, ge=0)


@register
class Spike(ValidationRule):
    """The highest value of a day (or of a value's window) is far above the third highest —
    a stray value, not a change of use. The third highest is the reference so that a second
    stray value cannot hide the first: each of the two highest values that is more than the
    tolerance above it is a spike.

    The engine judges a day once it is over (a value at or after its end has arrived), on
    the rates of what the meter sent (``rates``), never on the estimates the verdict causes:
    the verdict is a function of the day's evidence, so it changes only when the evidence
    does (a late value, an edit) — see :mod:`vee._day_rules`.
    """

    id = "spike"
    Params = SpikeParams
    default_action: ClassVar[Action] = "estimate"
    scope = "day"
    params: SpikeParams

    def check(self, ctx: PointContext) -> bool:
        return False  # evaluated per day by check_day

    def _window_scope(self, ctx: PointContext) -> bool:
        scope = self.params.scope
        return scope == "window" or (scope == "auto" and ctx.channel.interval_s >= 6 * 3600)

    def check_day(self, ctx: PointContext, points: list[Point],
                  rates: list[tuple[float, int]]) -> list[Point]:
        """The spikes among ``points``; ``rates`` are ``(rate, index into points)`` of the
        values that count (per hour for a register, per value for an interval channel)."""
        if len(rates) < 3:
            return []
        if self.params.min_window_days and self._window_scope(ctx):
            # A window that has not seen a whole week takes a change of use for a stray
            # value: a shop's first Monday after the weekend, a new meter's first busy day.
            first, last = points[min(n for _r, n in rates)], points[max(n for _r, n in rates)]
            covered = last.ts - first.ts + ctx.channel.interval_s
            if covered < self.params.min_window_days * 86400:
                return []
        ordered = sorted(rates, reverse=True)
        third = ordered[2][0]
        if third <= 0:
            return []
        floor = self.params.min_rate * _MICRO
        tolerance = self.params.tolerance_pct
        return [points[n] for rate, n in ordered[:2]
                if rate >= floor and (rate - third) * 100 / third > tolerance]


class SumCheckParams(RuleParams):
    #: The interval channel to compare with (empty = the meter's first interval channel).
    interval_register: str = ""
    #: Accepted difference between Σ intervals and the register advance.
    tolerance_pct: float = Field(default=2, ge=0, le=100)
    #: Ignore differences below this (units), for tiny advances.
    min_difference: float = Field(default=0.001, ge=0)


@register
class SumCheck(ValidationRule):
    """The interval values over a register period do not add up to the register advance."""

    id = "sum_check"
    needs_consumption = True
    Params = SumCheckParams
    default_action: ClassVar[Action] = "questionable"
    kinds = frozenset({"cumulative"})
    params: SumCheckParams

    def check(self, ctx: PointContext) -> bool:
        c, anchor, point = ctx.consumption, ctx.anchor, ctx.point
        if c is None or anchor is None or point is None:
            return False
        channel = None
        name = self.params.interval_register
        for other in ctx.state.channels.values():
            if other.kind == "interval" and (not name or other.register == name):
                channel = other
                break
        if channel is None or not channel.interval_s:
            return False
        total, count = 0, 0
        for q in channel.points:
            if anchor.ts < q.ts <= point.ts and q.value is not None:
                total += q.value
                count += 1
        if count * channel.interval_s < point.ts - anchor.ts:
            return False  # the intervals do not cover the period (yet)
        difference = abs(total - c)
        return (difference > self.params.min_difference * _MICRO
                and difference * 100 > self.params.tolerance_pct * max(abs(c), 1))


class ZeroParams(RuleParams):
    #: Days without consumption before the rule fires.
    days: float = Field(default=3, gt=0)
    #: Fire only for meters with a billing account.
    require_account: bool = True


@register
class ZeroConsumption(ValidationRule):
    """No consumption for ``days`` on an active account while the valve is open — a stuck
    register, a bypass, or a vacant home. Never fires while the valve is closed."""

    id = "zero_consumption"
    needs_consumption = True
    aliases = ("stuck_register",)
    Params = ZeroParams
    default_action: ClassVar[Action] = "flag"
    params: ZeroParams

    def check(self, ctx: PointContext) -> bool:
        point, c = ctx.point, ctx.consumption
        if point is None or c is None or c != 0:
            return False
        meter = ctx.meter
        if meter.status != "active" or (self.params.require_account and not meter.account_id):
            return False
        if ctx.valve_closed or "valve_closed" in point.events:
            return False
        last_use = None
        for k in range(ctx.i - 1, -1, -1):
            q = ctx.points[k]
            if q.consumption is not None and q.consumption > 0:
                last_use = q.ts
                break
        if last_use is None:
            ch = ctx.channel
            for offset in range(len(ch.days) - 1, -1, -1):
                if ch.days[offset] > 0:
                    day = ch.last_day - (len(ch.days) - 1 - offset)
                    last_use = ctx.calendar.day_start(day + 1)
                    break
        if last_use is None:
            return False  # never consumed: a new or vacant meter, not a stuck one
        return point.ts - last_use >= self.params.days * 86400
