"""Rules about the data stream itself: gaps, duplicates, channel shape, device lifecycle,
and too many estimates in a row."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from vee.context import Q_ESTIMATED, PointContext
from vee.registry import Action, Duration, RuleParams, ValidationRule, register

__all__ = ["Duplicate", "InactiveDevice", "IntervalUnit", "Missing", "ProlongedEstimation"]


class MissingParams(RuleParams):
    #: Expected time between values; 0 = the reading's interval_s, else learned from the data.
    interval: Duration = 0
    #: A gap counts when the time since the previous value exceeds interval × (1 + this).
    tolerance_pct: float = Field(default=50, ge=0, le=1000)
    #: Create markers (estimated or missing values) for the expected values in a gap, up to
    #: this many; a longer gap is only flagged on the value after it.
    max_markers: int = Field(default=48, ge=0, le=10000)
    #: Ask the meter for its stored history over a gap (a ``read_history`` command request).
    read_history: bool = False
    #: Shortest gap for which stored history is requested.
    read_history_min_gap: Duration = 86400


@register
class Missing(ValidationRule):
    """Expected values that never arrived. The engine inserts a *marker* for each expected
    value in a gap (at the previous value's time + k × interval); markers are estimated by
    the estimation group or stay ``missing``. This rule flags them."""

    id = "missing"
    aliases = ("gap",)
    Params = MissingParams
    default_action: ClassVar[Action] = "estimate"
    on_markers = True
    params: MissingParams

    quiet_in_order = frozenset({"cumulative", "interval"})  # fires on markers only

    def check(self, ctx: PointContext) -> bool:
        return ctx.point is not None and ctx.point.raw is None


class DuplicateParams(RuleParams):
    #: Two values of the same channel and time within this (units) are the same reading.
    value_tolerance: float = Field(default=0, ge=0)
    #: Which value stays when the second one differs: the first (default) or the last.
    keep: str = Field(default="first", pattern="^(first|last)$")


@register
class Duplicate(ValidationRule):
    """The same channel and time received twice. An identical value is dropped (no new
    version); a different value is kept as ``keep`` says, the point is flagged and an
    alert raised — the conflicting raw value stays in the raw store."""

    id = "duplicate"
    needs_events = True
    Params = DuplicateParams
    default_action: ClassVar[Action] = "flag"
    params: DuplicateParams

    def check(self, ctx: PointContext) -> bool:
        return ctx.point is not None and "duplicate" in ctx.point.events


class IntervalUnitParams(RuleParams):
    #: Expected unit of the channel; empty = the unit of its first value.
    unit: str = ""
    #: Expected interval of interval data; 0 = the channel's learned interval.
    interval: Duration = 0


@register
class IntervalUnit(ValidationRule):
    """The value's unit (and, for interval data, its interval length) match the channel."""

    id = "interval_unit"
    aliases = ("interval_size", "unit")
    Params = IntervalUnitParams
    default_action: ClassVar[Action] = "questionable"
    input_only = True
    params: IntervalUnitParams

    def check(self, ctx: PointContext) -> bool:
        reading = ctx.reading
        if reading is None:
            return False
        expected_unit = self.params.unit or ctx.channel.unit
        if expected_unit and reading.unit != expected_unit:
            return True
        if reading.kind == "interval" and reading.interval_s:
            expected = self.params.interval or ctx.channel.interval_s
            return bool(expected) and reading.interval_s != expected
        return False


class InactiveParams(RuleParams):
    #: Also fire for meters the ledger does not know.
    unknown_meters: bool = True


@register
class InactiveDevice(ValidationRule):
    """Data for a meter that is removed or still in stock, outside its installation period,
    or (optionally) unknown to the ledger."""

    id = "inactive_device"
    Params = InactiveParams
    default_action: ClassVar[Action] = "questionable"
    input_only = True
    params: InactiveParams

    def check(self, ctx: PointContext) -> bool:
        meter = ctx.meter
        if not meter.known:
            return self.params.unknown_meters
        if meter.status in ("removed", "in_stock"):
            return True
        ts = ctx.point.ts if ctx.point is not None else 0
        if meter.installed_at is not None and ts < meter.installed_at:
            return True
        return meter.removed_at is not None and ts >= meter.removed_at


class ProlongedParams(RuleParams):
    #: Most estimated values in a row before the run is flagged (and an alert raised).
    max_count: int = Field(default=3, ge=1, le=100000)


@register
class ProlongedEstimation(ValidationRule):
    """Too many estimated values in a row: the meter needs a visit or a history read. Put
    it last in a group — it counts the value under test when earlier rules rejected it."""

    id = "prolonged_estimation"
    Params = ProlongedParams
    default_action: ClassVar[Action] = "flag"
    on_markers = True
    params: ProlongedParams

    # fires on markers and rejected values only
    quiet_in_order = frozenset({"cumulative", "interval"})

    def check(self, ctx: PointContext) -> bool:
        point = ctx.point
        if point is None or (point.raw is not None and ctx.pending_rank < 2):
            return False
        run = 1
        points = ctx.points
        k = ctx.i - 1
        while k >= 0:
            p = points[k]
            if p.quality != Q_ESTIMATED and p.raw is not None:
                break
            run += 1
            k -= 1
        else:
            run += ctx.channel.estimated_run
        return run > self.params.max_count
