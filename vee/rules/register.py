"""Register rules: rollover versus rollback, negative consumption, register advance limits.

A gas register wraps at its maximum (99999.999 for five integer and three decimal digits).
A decrease is accepted as a rollover only if the implied volume — to the maximum and on from
zero — is plausible for the meter's Qmax over the elapsed time (the engine computes it with
:func:`vee.context.register_delta` and the ``rollover`` rule's parameters); otherwise it is
a rollback or a meter exchange, and the consumption is negative.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from vee.context import PointContext
from vee.registry import Action, RuleParams, ValidationRule, register

__all__ = ["NegativeConsumption", "RegisterDelta", "Rollover"]


class RolloverParams(RuleParams):
    #: Accept a wrap when the implied volume is within Qmax × hours × (1 + this).
    tolerance_pct: float = Field(default=10, ge=0, le=1000)
    #: Without a known Qmax: accept a wrap when the implied volume is below this share of
    #: the register range.
    max_fraction: float = Field(default=0.01, gt=0, le=1)


@register
class Rollover(ValidationRule):
    """The register wrapped (an event flag, not an error). Without this rule in the group a
    decrease is never read as a rollover."""

    id = "rollover"
    needs_consumption = True
    Params = RolloverParams
    default_action: ClassVar[Action] = "flag"
    kinds = frozenset({"cumulative"})
    params: RolloverParams

    quiet_in_order = frozenset({"cumulative"})  # a register that went back only

    def check(self, ctx: PointContext) -> bool:
        return ctx.rollover


@register
class NegativeConsumption(ValidationRule):
    """Negative consumption: a register that went back (rollback, exchange, bad read) or a
    negative interval value."""

    id = "negative_consumption"
    needs_consumption = True
    aliases = ("rollback",)
    default_action: ClassVar[Action] = "estimate"

    quiet_in_order = frozenset({"cumulative"})  # a register that went back only

    def check(self, ctx: PointContext) -> bool:
        return ctx.consumption is not None and ctx.consumption < 0


class RegisterDeltaParams(RuleParams):
    #: Largest register advance between two values (units); 0 = no limit.
    max_advance: float = Field(default=0, ge=0)
    #: Largest advance as a percentage of the previous advance rate; 0 = no limit.
    max_pct_of_previous: float = Field(default=0, ge=0)


@register
class RegisterDelta(ValidationRule):
    """Register advance outside absolute or relative limits."""

    id = "register_delta"
    needs_consumption = True
    Params = RegisterDeltaParams
    default_action: ClassVar[Action] = "questionable"
    kinds = frozenset({"cumulative"})
    params: RegisterDeltaParams

    def check(self, ctx: PointContext) -> bool:
        consumption = ctx.consumption
        if consumption is None or consumption < 0:
            return False
        p = self.params
        if p.max_advance and consumption > p.max_advance * 1_000_000:
            return True
        if p.max_pct_of_previous:
            rate, prev = ctx.rate_per_hour(), ctx.previous_rate()
            if rate is not None and prev:
                return rate > prev * p.max_pct_of_previous / 100
        return False
