"""Time and clock rules: future timestamps, meter clock drift, clock-set events.

They look at what only the arriving reading carries (its meter clock, its status tags, when
the platform received it), so they run once, on arrival; their flags stay with the value.
"Now" is the reading's ``received_at``, never the wall clock: re-processing the same input
gives the same result.
"""

from __future__ import annotations

from typing import ClassVar

from vee._num import epoch
from vee.context import PointContext
from vee.registry import Action, Duration, RuleParams, ValidationRule, register

__all__ = ["ClockDrift", "ClockSet", "FutureTimestamp"]


class FutureParams(RuleParams):
    #: How far after its reception a value's timestamp may lie (clock skew allowance).
    tolerance: Duration = 300


@register
class FutureTimestamp(ValidationRule):
    """A value stamped later than the platform received it (plus ``tolerance``)."""

    id = "future_timestamp"
    Params = FutureParams
    default_action: ClassVar[Action] = "questionable"
    input_only = True
    params: FutureParams

    def check(self, ctx: PointContext) -> bool:
        point = ctx.point
        return point is not None and point.ts > point.received + self.params.tolerance


class DriftParams(RuleParams):
    #: Largest accepted difference between the meter's clock and reception time.
    max_drift: Duration = 600


@register
class ClockDrift(ValidationRule):
    """The meter's clock differs from the platform's by more than ``max_drift``; the flag is
    ``clock_forward`` or ``clock_back`` so operators know which way to sync."""

    id = "clock_drift"
    emits = ("clock_forward", "clock_back")
    Params = DriftParams
    default_action: ClassVar[Action] = "flag"
    input_only = True
    params: DriftParams

    def check(self, ctx: PointContext) -> bool | str:
        reading = ctx.reading
        if reading is None or reading.meter_clock is None:
            return False
        drift = epoch(reading.meter_clock) - epoch(reading.received_at)
        if drift > self.params.max_drift:
            return "clock_forward"
        if drift < -self.params.max_drift:
            return "clock_back"
        return False


@register
class ClockSet(ValidationRule):
    """The meter reports its clock was set, or is invalid: values around it may be
    misplaced in time."""

    id = "clock_set"
    needs_events = True
    aliases = ("clock_invalid",)
    emits = ("clock_invalid",)
    default_action: ClassVar[Action] = "flag"
    input_only = True

    def check(self, ctx: PointContext) -> bool | str:
        events = ctx.point.events if ctx.point is not None else ()
        for flag in ("clock_invalid", "clock_set", "clock_forward", "clock_back"):
            if flag in events:
                return flag if flag == "clock_invalid" else True
        return False
