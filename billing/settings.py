"""Settings of the billing engine and agent (section ``billing``, ``UNIMETER_BILLING_*``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.settings import ComponentSettings

__all__ = ["BillingSettings"]


class BillingSettings(ComponentSettings):
    """What billing prices, and how it talks to the valves and the settlement tables."""

    section: ClassVar[str] = "billing"

    billed_registers: tuple[str, ...] = Field(
        default=("volume", "energy_import", "heat_energy"),
        description="Canonical registers whose consumption is billed; a meter's other "
                    "registers (settlement copies, flow, remaining money …) are not, so "
                    "nothing is charged twice.")
    unbillable_qualities: tuple[str, ...] = Field(
        default=("missing", "questionable"),
        description="Reading qualities billing waits on: no charge until VEE sends a "
                    "billable version (estimated, edited, validated …).")
    currency: str = Field(default="CNY", description="Currency of balances and alerts.")
    store_outcomes: bool = Field(
        default=False,
        description="Keep the messages each input produced with its record and re-send them "
                    "when the input is delivered again. Only needed where state may be "
                    "written before the outputs are acknowledged; the pipeline agent writes "
                    "state after the acknowledgement, so records stay small without it.")
    command_ttl_hours: float = Field(
        default=72.0, gt=0,
        description="Valve requests expire after this long (offline meters wake daily).")
    settle_grace_minutes: int = Field(
        default=180, ge=0,
        description="A local day is settled this long after its end if no later reading "
                    "closed it first (late daily reads arrive in the early morning).")
    settle_check_minutes: float = Field(
        default=60.0, gt=0,
        description="How often the billing agent looks for quiet accounts whose days are "
                    "due for settlement.")
