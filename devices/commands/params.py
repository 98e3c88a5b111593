"""Typed parameters of the unified commands.

Strategy: each command of the catalog names one frozen pydantic model here. A request's
``params`` (JSON values: money as decimal strings, times as ISO 8601 with a zone) are checked
against it before anything is stored, so a bad request is refused at the door with the field
path, the value and the rule it broke; what is stored and dispatched is the model's canonical
JSON form (``canonical_params``), so the FEP and the audit log see the same values. pydantic
rather than msgspec because money needs decimal constraints (``gt``, ``decimal_places``) and
the HTTP API publishes these schemas in its OpenAPI document.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_HISTORY_SPAN",
    "CommandParams",
    "NoParams",
    "PriceTier",
    "ReadHistoryParams",
    "ReadNowParams",
    "RelayCloseParams",
    "RelayTripParams",
    "SafetyCause",
    "SetBalanceParams",
    "SetPriceParams",
    "SetReportIntervalParams",
    "SupplyCutCause",
    "SyncTimeParams",
    "TopUpParams",
    "ValveArmOpenParams",
    "ValveCloseParams",
    "ValveOpenParams",
]

#: Longest history a single ``read_history`` may ask a meter for (meters keep ~12 months).
MAX_HISTORY_SPAN = timedelta(days=400)

Money = Annotated[Decimal, Field(max_digits=12, decimal_places=2)]

#: Why a supply is cut: ``debt`` (prepayment credit exhausted), ``safety`` (tamper, leak,
#: overload, earthquake, battery — never reopened automatically), ``service`` (a service
#: operation: removal, replacement, deregistration), ``manual`` (an operator's decision).
SupplyCutCause = Literal["debt", "safety", "service", "manual"]
SafetyCause = Literal["tamper", "leak", "overload", "earthquake", "battery", "other"]


class CommandParams(BaseModel):
    """Base of every parameter model: frozen, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def canonical(self) -> dict[str, Any]:
        """The JSON form stored, audited and dispatched (decimals as strings, UTC times)."""
        return self.model_dump(mode="json")


class NoParams(CommandParams):
    """A command without parameters."""


class ReadNowParams(CommandParams):
    """Read the meter now: ``current`` register values, ``status`` bits (valve, battery),
    ``balance`` (prepaid meters), or ``all`` of them."""

    what: Literal["current", "status", "balance", "all"] = "current"


class ReadHistoryParams(CommandParams):
    """Read stored history: the frozen values of ``months_ago`` settlement periods back
    (1 = the last), or those covering ``start`` .. ``end`` (the handler picks the stored
    period that holds ``start``; meters keep about twelve)."""

    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    months_ago: int | None = Field(default=None, ge=1, le=12)
    granularity: Literal["hour", "day", "month"] = "month"

    @model_validator(mode="after")
    def _check_span(self) -> ReadHistoryParams:
        if self.months_ago is not None:
            if self.start is not None or self.end is not None:
                raise ValueError("give months_ago or start/end, not both")
            return self
        if self.start is None or self.end is None:
            raise ValueError("give months_ago (1..12) or both start and end")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > MAX_HISTORY_SPAN:
            raise ValueError(f"span longer than {MAX_HISTORY_SPAN.days} days; split the read")
        return self


class ValveCloseParams(CommandParams):
    """Close the valve. A ``safety`` close names its cause and is never reopened by automation."""

    cause: SupplyCutCause = "manual"
    safety_cause: SafetyCause | None = None

    @model_validator(mode="after")
    def _check_cause(self) -> ValveCloseParams:
        if self.cause == "safety" and self.safety_cause is None:
            raise ValueError("a safety close needs safety_cause (tamper, leak, overload, "
                             "earthquake, battery, other)")
        if self.cause != "safety" and self.safety_cause is not None:
            raise ValueError("safety_cause is only allowed with cause='safety'")
        return self


class ValveOpenParams(CommandParams):
    """Open the valve remotely. The safety policy turns this into ``valve_arm_open`` where the
    device can be armed for a local opening; otherwise it needs a second approver."""

    leak_check: bool = True
    acknowledge_safety_lock: bool = False


class ValveArmOpenParams(CommandParams):
    """Arm the valve so that the customer opens it at the meter (button or card)."""

    acknowledge_safety_lock: bool = False


class RelayTripParams(CommandParams):
    """Open the breaker of an electricity meter (cut the supply)."""

    cause: SupplyCutCause = "manual"
    safety_cause: SafetyCause | None = None

    @model_validator(mode="after")
    def _check_cause(self) -> RelayTripParams:
        if self.cause == "safety" and self.safety_cause is None:
            raise ValueError("a safety trip needs safety_cause")
        if self.cause != "safety" and self.safety_cause is not None:
            raise ValueError("safety_cause is only allowed with cause='safety'")
        return self


class RelayCloseParams(CommandParams):
    """Close the breaker of an electricity meter (restore the supply)."""

    acknowledge_safety_lock: bool = False


class PriceTier(CommandParams):
    """One step: volume up to ``upper`` (None = no limit) at ``price`` per unit."""

    upper: Decimal | None = Field(default=None, gt=0, max_digits=12, decimal_places=3)
    price: Decimal = Field(ge=0, max_digits=10, decimal_places=4)


class SetPriceParams(CommandParams):
    """Write a step price table into a prepaid meter, effective from a given instant."""

    tariff_id: str = Field(min_length=1, max_length=64)
    tariff_version: int = Field(ge=1)
    tiers: tuple[PriceTier, ...] = Field(min_length=1, max_length=8)
    effective_from: AwareDatetime | None = None

    @model_validator(mode="after")
    def _check_tiers(self) -> SetPriceParams:
        uppers = [t.upper for t in self.tiers]
        if uppers[-1] is not None:
            raise ValueError("the last tier must be open-ended (upper = null)")
        bounded = [u for u in uppers[:-1] if u is not None]
        if len(bounded) != len(uppers) - 1:
            raise ValueError("only the last tier may be open-ended")
        if any(b <= a for a, b in pairwise(bounded)):
            raise ValueError("tier upper bounds must increase")
        return self


class TopUpParams(CommandParams):
    """Add credit to a prepaid meter. ``topup_id`` (the billing system's transaction id) makes
    the write idempotent at the meter: a repeated top-up with the same id is not added twice."""

    amount: Money = Field(gt=0)
    topup_id: str = Field(min_length=1, max_length=64)


class SetBalanceParams(CommandParams):
    """Set a prepaid meter's balance (commissioning, replacement, correction)."""

    balance: Money
    reason: str = Field(default="", max_length=200)


class SyncTimeParams(CommandParams):
    """Set the meter clock; ``time`` None means "the FEP's clock at delivery"."""

    time: AwareDatetime | None = None


class SetReportIntervalParams(CommandParams):
    """How often the meter reports on its own (NB-IoT / LoRa meters), in minutes."""

    minutes: int = Field(ge=1, le=7 * 24 * 60)
