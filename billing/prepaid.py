"""Prepayment rules: alarms, overdraft, cut-off and reconnection, on every balance movement.

The account's *credit* is its money balance (``prepaid_money``) or its m³ left
(``prepaid_volume``); the limits of :class:`~schemas.messages.LedgerAccount` are in that unit.
After each movement from ``before`` to ``after``:

* **Alarms fire on crossing.** An armed alarm level (1, then 2) fires once when the credit
  falls below it, and so does "overdraft in use" when it falls below zero while an overdraft
  is allowed; each is then disarmed. An upward movement (top-up, credit adjustment) that
  lifts the credit back to a level re-arms it and clears its alert.
* **Cut-off** when the credit falls below ``-overdraft_limit``: a ``valve_close`` request
  (cause ``debt``) for each of the account's meters with a valve. A protected customer
  (medical equipment …) is never cut off for debt: billing raises an alert instead, and so
  when no meter with a valve is known.
* **Reconnect** when an upward movement lifts the credit above ``reconnect_limit`` after a
  cut-off: a ``valve_arm_open`` request — the customer opens the valve at the meter, nobody
  opens gas remotely. Unless a **safety lock** holds (a close for tamper, leak, overload,
  earthquake or battery): billing never reopens those; it raises an alert and leaves the
  valve to a person and the control plane.

Strategy: pure functions over :class:`~billing.state.AccountState` that mutate it and return
the alerts and command requests; identifiers come from per-account sequence numbers, so the
same inputs in the same order give byte-identical outputs on a replay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from billing.state import AccountState
from schemas.messages import Alert, CommandRequest, LedgerAccount, Severity

__all__ = [
    "SAFETY_FLAG_CAUSES",
    "CreditEffects",
    "alarm_state",
    "evaluate_credit",
    "may_cross",
    "safety_cause",
]

#: Reading event flags (VEE's vocabulary) that, together with ``valve_closed``, mean the
#: meter closed its valve for a safety cause (the control plane's ``SafetyCause`` values on
#: the right). ``battery_low`` is deliberately absent: a meter closed for debt may also
#: report a low battery, and that must not lock it; battery closes come as device events.
SAFETY_FLAG_CAUSES: dict[str, str] = {
    "tamper": "tamper", "magnetic_tamper": "tamper", "magnetic": "tamper",
    "leak": "leak", "continuous_flow": "leak",
    "overload": "overload", "over_flow": "overload",
    "earthquake": "earthquake", "seismic": "earthquake",
}
VALVE_CLOSED_FLAG = "valve_closed"


def safety_cause(flags: Sequence[str]) -> str | None:
    """The safety cause of a closed valve reported with these flags, if any."""
    if VALVE_CLOSED_FLAG not in flags:
        return None
    for flag in flags:
        cause = SAFETY_FLAG_CAUSES.get(flag)
        if cause is not None:
            return cause
    return None


@dataclass
class CreditEffects:
    """Alerts and command requests caused by one movement."""

    alerts: list[Alert] = field(default_factory=list)
    commands: list[CommandRequest] = field(default_factory=list)


def alarm_state(state: AccountState, account: LedgerAccount, credit: Decimal) -> str:
    """Where the credit stands: ``ok``, ``alarm1``, ``alarm2``, ``overdraft``, ``cut_off``."""
    if state.supply == "cut_off":
        return "cut_off"
    if credit < 0:
        return "overdraft"
    if account.alarm2 is not None and credit < account.alarm2:
        return "alarm2"
    if account.alarm1 is not None and credit < account.alarm1:
        return "alarm1"
    return "ok"


@dataclass(slots=True)
class _Context:
    state: AccountState
    account: LedgerAccount
    now: datetime
    unit: str
    command_ttl: timedelta
    meter_has_valve: Callable[[str], bool]

    @property
    def valve_meters(self) -> list[str]:
        return [m for m in self.state.meters if self.meter_has_valve(m)]

    def alert(self, code: str, severity: Severity, reason: str, credit: Decimal,
              cleared: bool = False, **extra: str) -> Alert:
        self.state.alerts += 1
        return Alert(alert_id=f"billing:{self.state.account_id}:{self.state.alerts}",
                     object_type="account", object_id=self.state.account_id,
                     severity=severity, code=code, reason=reason, ts=self.now,
                     source="billing", state="cleared" if cleared else "raised",
                     attributes={"balance": str(credit), "unit": self.unit, **extra})

    def command(self, command: str, meter_id: str, action: str, sequence: int, reason: str,
                params: dict[str, str]) -> CommandRequest:
        command_id = f"billing:{self.state.account_id}:{action}:{sequence}:{meter_id}"
        return CommandRequest(command_id=command_id, device_id=meter_id, command=command,
                              requested_by="billing", requested_at=self.now, params=params,
                              client_command_id=command_id, origin="billing", reason=reason,
                              expires_at=self.now + self.command_ttl)


def evaluate_credit(state: AccountState, account: LedgerAccount, before: Decimal,
                    after: Decimal, *, now: datetime, unit: str, command_ttl: timedelta,
                    meter_has_valve: Callable[[str], bool]) -> CreditEffects:
    """Apply the prepayment rules to a movement of the credit from ``before`` to ``after``."""
    effects = CreditEffects()
    if not may_cross(state, account, before, after):
        return effects
    ctx = _Context(state, account, now, unit, command_ttl, meter_has_valve)
    if after < before:
        _fall(ctx, effects, before, after)
    else:
        _rise(ctx, effects, after)
    return effects


def may_cross(state: AccountState, account: LedgerAccount, before: Decimal,
              after: Decimal) -> bool:
    """Whether a movement can cross anything :func:`evaluate_credit` acts on — a cheap test,
    as most charges cross nothing."""
    if account.billing_mode == "postpaid" or after == before:
        return False
    a1, a2 = account.alarm1, account.alarm2
    if after < before:
        return bool((state.alarm1_armed and a1 is not None and after < a1)
                    or (state.alarm2_armed and a2 is not None and after < a2)
                    or (state.overdraft_armed and after < 0)
                    or (state.supply == "on" and after < -account.overdraft_limit))
    return bool((not state.alarm1_armed and a1 is not None and after >= a1)
                or (not state.alarm2_armed and a2 is not None and after >= a2)
                or (not state.overdraft_armed and after >= 0)
                or state.supply != "on")


def _fall(ctx: _Context, effects: CreditEffects, before: Decimal, after: Decimal) -> None:
    state, account, unit = ctx.state, ctx.account, ctx.unit
    if account.alarm1 is not None and state.alarm1_armed and after < account.alarm1:
        state.alarm1_armed = False
        effects.alerts.append(ctx.alert(
            "billing.alarm1", "warning",
            f"balance {after} {unit} fell below alarm level 1 ({account.alarm1})", after))
    if account.alarm2 is not None and state.alarm2_armed and after < account.alarm2:
        state.alarm2_armed = False
        effects.alerts.append(ctx.alert(
            "billing.alarm2", "major",
            f"balance {after} {unit} fell below alarm level 2 ({account.alarm2})", after))
    limit = account.overdraft_limit
    if state.overdraft_armed and after < 0 and limit > 0 and after >= -limit:
        state.overdraft_armed = False
        effects.alerts.append(ctx.alert(
            "billing.overdraft", "major",
            f"balance {after} {unit}: overdraft in use (limit {limit}); supply stays on", after))
    if after < -limit and state.supply == "on":
        _cut_off(ctx, effects, after)


def _cut_off(ctx: _Context, effects: CreditEffects, after: Decimal) -> None:
    state, account = ctx.state, ctx.account
    state.overdraft_armed = False
    state.cut_offs += 1
    reason = (f"balance {after} {ctx.unit} below the overdraft limit "
              f"-{account.overdraft_limit}")
    if account.protected:
        state.supply = "cut_off_blocked"
        effects.alerts.append(ctx.alert(
            "billing.cut_off_blocked", "major",
            f"{reason}; protected customer, no debt cut-off — contact the customer", after))
        return
    valve_meters = ctx.valve_meters
    if not valve_meters:
        state.supply = "cut_off_blocked"
        effects.alerts.append(ctx.alert(
            "billing.cut_off_blocked", "major",
            f"{reason}; no meter with a valve is known for the account — collect the debt "
            "in person", after))
        return
    state.supply = "cut_off"
    effects.alerts.append(ctx.alert("billing.cut_off", "critical",
                                    f"{reason}: valve close requested", after,
                                    meters=",".join(valve_meters)))
    for meter_id in valve_meters:
        effects.commands.append(ctx.command("valve_close", meter_id, "cut_off", state.cut_offs,
                                            reason, {"cause": "debt"}))


def _rise(ctx: _Context, effects: CreditEffects, after: Decimal) -> None:
    state, account, unit = ctx.state, ctx.account, ctx.unit
    if account.alarm1 is not None and not state.alarm1_armed and after >= account.alarm1:
        state.alarm1_armed = True
        effects.alerts.append(ctx.alert("billing.alarm1", "info",
                                        f"balance {after} {unit} back above alarm level 1",
                                        after, cleared=True))
    if account.alarm2 is not None and not state.alarm2_armed and after >= account.alarm2:
        state.alarm2_armed = True
        effects.alerts.append(ctx.alert("billing.alarm2", "info",
                                        f"balance {after} {unit} back above alarm level 2",
                                        after, cleared=True))
    if not state.overdraft_armed and after >= 0:
        state.overdraft_armed = True
        effects.alerts.append(ctx.alert("billing.overdraft", "info",
                                        f"balance {after} {unit}: overdraft repaid", after,
                                        cleared=True))
    if state.supply != "on" and after > account.reconnect_limit:
        _reconnect(ctx, effects, after)


def _reconnect(ctx: _Context, effects: CreditEffects, after: Decimal) -> None:
    state, account = ctx.state, ctx.account
    was = state.supply
    state.supply = "on"
    state.reconnects += 1
    reason = f"balance {after} {ctx.unit} above the reconnect limit {account.reconnect_limit}"
    if was == "cut_off_blocked":
        effects.alerts.append(ctx.alert("billing.cut_off_blocked", "info",
                                        f"{reason}; debt cleared", after, cleared=True))
        return
    if state.safety_lock is not None:
        effects.alerts.append(ctx.alert(
            "billing.reconnect_blocked", "major",
            f"{reason}, but meter {state.safety_meter} closed its valve for safety "
            f"({state.safety_lock}); billing does not reopen it — a person must check the "
            "installation and reopen through the control plane", after,
            safety_cause=state.safety_lock))
        return
    effects.alerts.append(ctx.alert("billing.reconnect", "info",
                                    f"{reason}: valve armed for opening at the meter", after))
    for meter_id in ctx.valve_meters:
        effects.commands.append(ctx.command("valve_arm_open", meter_id, "reconnect",
                                            state.reconnects, reason, {}))
