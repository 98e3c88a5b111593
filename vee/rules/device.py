"""Device status rules: tamper, battery, valve, reverse flow, leak, overload, power failure.

The meter reports its status with each reading (``Reading.status`` tags, e.g.
``valve_state:closed`` or ``battery_low``); :func:`vee.quality.event_flags_from_status` turns
them into event flags. Each rule here fires on one flag, with the action that fits it: a
tampered meter's value is questionable, a low battery is only flagged. ``device_status``
flags every status at once (flag only). ``valve_consistency`` catches consumption while the
valve reports closed — bypass, leak-by or tamper.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from vee.context import PointContext
from vee.registry import Action, RuleParams, ValidationRule, register

__all__ = ["BatteryLow", "DeviceError", "DeviceStatus", "Leak", "Overload", "PowerFail",
           "ReverseFlow", "Tamper", "ValveConsistency"]


class _StatusFlagRule(ValidationRule):
    flag: ClassVar[str] = ""
    input_only = True
    needs_events = True

    def check(self, ctx: PointContext) -> bool:
        return ctx.point is not None and self.flag in ctx.point.events


@register
class Tamper(_StatusFlagRule):
    """Tamper or magnetic-field alarm: the value may be manipulated."""

    id = "tamper"
    flag = "tamper"
    default_action: ClassVar[Action] = "questionable"


@register
class BatteryLow(_StatusFlagRule):
    """Battery low: the value is fine, the meter needs a visit soon."""

    id = "battery_low"
    flag = "battery_low"
    default_action: ClassVar[Action] = "flag"


@register
class ReverseFlow(_StatusFlagRule):
    """Reverse flow: a wrongly fitted meter or a manipulation."""

    id = "reverse_flow"
    flag = "reverse_flow"
    default_action: ClassVar[Action] = "questionable"


@register
class Leak(_StatusFlagRule):
    """Leak / continuous flow reported by the meter."""

    id = "leak"
    aliases = ("continuous_flow",)
    flag = "leak"
    default_action: ClassVar[Action] = "flag"


@register
class Overload(_StatusFlagRule):
    """Overload / over-flow reported by the meter."""

    id = "overload"
    flag = "overload"
    default_action: ClassVar[Action] = "flag"


@register
class PowerFail(_StatusFlagRule):
    """Power failure during the interval (never a reference day for like-day)."""

    id = "power_fail"
    aliases = ("power_outage",)
    flag = "power_fail"
    default_action: ClassVar[Action] = "flag"


@register
class DeviceError(_StatusFlagRule):
    """Device diagnostics: CRC/parity or internal errors."""

    id = "device_error"
    flag = "device_error"
    default_action: ClassVar[Action] = "questionable"


class DeviceStatusParams(RuleParams):
    #: Which event flags count; empty = every device flag.
    flags: tuple[str, ...] = ()


@register
class DeviceStatus(ValidationRule):
    """Any device status flag at all (tamper, battery, valve fault, reverse flow, leak …)."""

    id = "device_status"
    needs_events = True
    Params = DeviceStatusParams
    default_action: ClassVar[Action] = "flag"
    input_only = True
    params: DeviceStatusParams

    def check(self, ctx: PointContext) -> bool:
        events = ctx.point.events if ctx.point is not None else ()
        if not events:
            return False
        wanted = self.params.flags
        return any((not wanted or e in wanted) and e != "duplicate" for e in events)


class ValveParams(RuleParams):
    #: Consumption (units) tolerated while the valve is closed (residual flow, resolution).
    tolerance: float = Field(default=0.001, ge=0)


@register
class ValveConsistency(ValidationRule):
    """Consumption while the valve reports closed: bypass, leak-by or tamper."""

    id = "valve_consistency"
    needs_consumption = True
    needs_events = True
    aliases = ("valve",)
    Params = ValveParams
    default_action: ClassVar[Action] = "questionable"
    params: ValveParams

    def check(self, ctx: PointContext) -> bool:
        point, c = ctx.point, ctx.consumption
        if point is None or c is None:
            return False
        # closed at both ends of the interval (it may have been closed half-way otherwise)
        anchor = ctx.anchor
        closed = "valve_closed" in point.events and (
            anchor is None or "valve_closed" in anchor.events)
        return closed and c > self.params.tolerance * 1_000_000
