"""The safety policy of remote commands: what may run, who must approve, what is refused.

Strategy: pure functions over plain facts, so every rule is tested without a database and
the service that persists commands (:mod:`devices.commands.service`) only gathers facts and
applies the :class:`Decision`. The rules (DESIGN.md §5, issue 5 item 5):

* **Arm instead of open.** A remote ``valve_open`` becomes ``valve_arm_open`` where the device
  type can arm its valve for a local opening (the customer opens it at the meter, so nobody
  is exposed to gas released into an open pipe); where it cannot, a direct open needs a
  second approver — a person other than the requester.
* **Mass commands.** A request for more than ``mass_threshold`` devices, or for a group, needs
  two distinct approvers (neither the requester) who approve the exact preview they saw, and
  runs in throttled waves that pause when failures pass a threshold (:func:`plan_wave`).
* **Operator anomaly.** A person whose state-changing commands in the sliding window pass the
  threshold is quarantined: that command and their later ones are held until an approver
  releases them (:func:`exceeds_anomaly_threshold`).
* **Protected customers** (medical equipment, elderly living alone, hospitals …) block
  debt-related supply cuts; other causes still apply.
* **Safety closes stay closed.** After a close for a safety cause (tamper, leak, overload,
  earthquake, battery) no automatic origin (billing, rules, service operations) may restore
  the supply; a person may, acknowledging the lock, with a second approver.

Refusals raise :class:`~devices.commands.errors.SafetyPolicyError` naming the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devices.commands.capabilities import DeviceTypeCommands
from devices.commands.catalog import CommandSpec, SafetyClass, command_spec
from devices.commands.errors import SafetyPolicyError
from devices.commands.params import CommandParams

__all__ = [
    "HUMAN_ORIGINS",
    "Decision",
    "DeviceFacts",
    "PolicyLimits",
    "SafetyLock",
    "WaveDecision",
    "WaveProgress",
    "decide",
    "exceeds_anomaly_threshold",
    "plan_wave",
]

#: Origins where a person asked for the command; every other origin is automation.
HUMAN_ORIGINS = frozenset({"api", "cli", "console"})


@dataclass(frozen=True)
class PolicyLimits:
    """The configurable numbers of the policy (see :class:`devices.commands.settings`)."""

    #: A request for more devices than this is a mass command.
    mass_threshold: int = 10
    #: Distinct approvers a mass or group command needs (never the requester).
    mass_approvers: int = 2
    #: Approvers besides the requester for a direct valve open or a safety-lock reopen.
    direct_open_approvers: int = 1
    #: State-changing commands one person may request within ``anomaly_window``.
    anomaly_max_commands: int = 50
    anomaly_window: timedelta = timedelta(minutes=10)
    #: Waves of a mass command: at most ``wave_size`` in flight, waves ``wave_interval`` apart.
    wave_size: int = 50
    wave_interval: timedelta = timedelta(seconds=30)
    #: Pause a mass command after this many failures …
    max_failures: int = 5
    #: … or when this share of finished commands failed (once ``min_finished`` finished).
    max_failure_ratio: float = 0.2
    min_finished: int = 10


@dataclass(frozen=True)
class SafetyLock:
    """An active safety close of a device's supply."""

    cause: str
    since: datetime
    command_id: str | None = None


@dataclass(frozen=True)
class DeviceFacts:
    """What the policy needs to know about one target device (gathered from the ledger)."""

    device_id: str
    profile: DeviceTypeCommands
    region: str | None = None
    account_id: str | None = None
    protected_customer: bool = False
    safety_lock: SafetyLock | None = None


@dataclass(frozen=True)
class Decision:
    """What the policy allows: the command to run, its parameters, who must approve, and why."""

    command: str
    params: Mapping[str, Any]
    approvals_required: int
    reasons: tuple[str, ...] = ()
    requested_command: str | None = None
    readback: bool = False
    #: Closing for a safety cause: the device gets a safety lock when it is confirmed.
    sets_safety_lock: bool = False
    preview_required: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def rewritten(self) -> bool:
        return self.requested_command is not None and self.requested_command != self.command


def _is_debt_cut(spec: CommandSpec, params: Mapping[str, Any]) -> bool:
    return spec.is_supply_cut() and params.get("cause") == "debt"


def decide(spec: CommandSpec, params: CommandParams, facts: DeviceFacts, *, requested_by: str,
           origin: str, mass: bool, limits: PolicyLimits) -> Decision:
    """Apply the policy to one command for one device; raise on a refusal.

    ``mass`` is True for a command of a group or of a request over ``mass_threshold`` devices.
    """
    values = params.canonical()
    human = origin in HUMAN_ORIGINS
    approvals = 0
    reasons: list[str] = []
    requested_command: str | None = None
    profile = facts.profile

    if _is_debt_cut(spec, values) and facts.protected_customer:
        raise SafetyPolicyError(
            f"'{spec.name}' for debt refused: the customer of device {facts.device_id} is "
            "protected",
            where=f"device {facts.device_id}",
            hint="protected customers are never cut off for debt; contact the customer or "
                 "lift the protection in the ledger if it no longer applies",
            rule="protected_customer", account_id=facts.account_id or "",
        )

    if spec.name == "valve_open" and profile.valve_arming and profile.supports("valve_arm_open"):
        requested_command = spec.name
        spec = command_spec("valve_arm_open")
        values = {"acknowledge_safety_lock": bool(values.get("acknowledge_safety_lock"))}
        reasons.append("valve_open arms the valve for opening at the meter (device supports "
                       "arming)")
    elif spec.name == "valve_open":
        approvals = max(approvals, limits.direct_open_approvers)
        reasons.append("direct valve open (the device cannot be armed) needs a second "
                       "approver")

    profile.binding(spec.name)  # unsupported → UnsupportedCommandError

    if spec.is_supply_restore() and facts.safety_lock is not None:
        lock = facts.safety_lock
        if not human:
            raise SafetyPolicyError(
                f"'{spec.name}' from {origin} refused: device {facts.device_id} was closed for "
                f"safety ({lock.cause}) and is never reopened automatically",
                where=f"device {facts.device_id}",
                hint="a person must check the site and request the opening with "
                     "acknowledge_safety_lock=true; a second approver confirms it",
                rule="safety_lock", cause=lock.cause,
            )
        if not values.get("acknowledge_safety_lock"):
            raise SafetyPolicyError(
                f"device {facts.device_id} is under a safety lock ({lock.cause}); opening it "
                "needs acknowledge_safety_lock=true",
                where=f"device {facts.device_id}",
                hint="confirm that the cause was checked on site, then resend with "
                     "acknowledge_safety_lock=true",
                rule="safety_lock", cause=lock.cause,
            )
        approvals = max(approvals, limits.direct_open_approvers)
        reasons.append(f"reopening after a safety close ({lock.cause}) needs a second approver")

    if mass:
        approvals = max(approvals, limits.mass_approvers)
        reasons.append(f"mass command: {limits.mass_approvers} distinct approvers and a preview")

    return Decision(
        command=spec.name,
        params=values,
        approvals_required=approvals,
        reasons=tuple(reasons),
        requested_command=requested_command,
        readback=profile.confirms_by_readback(spec),
        sets_safety_lock=spec.is_supply_cut() and values.get("cause") == "safety",
        preview_required=mass,
    )


def exceeds_anomaly_threshold(recent_commands: int, spec: CommandSpec, origin: str,
                              limits: PolicyLimits) -> bool:
    """True when this command would take its requester past the anomaly threshold.

    ``recent_commands`` counts the requester's state-changing commands in the window before
    this one. Reads never count; automation (billing, rules) is bounded by its own tests and
    by the mass rules, so only people are quarantined.
    """
    if spec.safety_class is SafetyClass.READ or origin not in HUMAN_ORIGINS:
        return False
    return recent_commands + 1 > limits.anomaly_max_commands


@dataclass(frozen=True)
class WaveProgress:
    """Counts of a mass command's members by where they stand."""

    waiting: int        # approved, not yet dispatched
    in_flight: int      # queued or sent
    confirmed: int
    failed: int         # failed, expired or rejected at dispatch
    last_wave_at: datetime | None


@dataclass(frozen=True)
class WaveDecision:
    dispatch: int
    pause: bool = False
    reason: str = ""


def plan_wave(progress: WaveProgress, now: datetime, limits: PolicyLimits) -> WaveDecision:
    """How many members to dispatch now, or whether to pause the group for failures."""
    finished = progress.confirmed + progress.failed
    if progress.failed >= limits.max_failures:
        return WaveDecision(0, pause=True,
                            reason=f"{progress.failed} failures reached the limit of "
                                   f"{limits.max_failures}")
    if finished >= limits.min_finished and finished and \
            progress.failed / finished > limits.max_failure_ratio:
        return WaveDecision(0, pause=True,
                            reason=f"{progress.failed} of {finished} finished commands failed "
                                   f"(over {math.floor(limits.max_failure_ratio * 100)} %)")
    if progress.waiting == 0:
        return WaveDecision(0)
    if progress.last_wave_at is not None and now - progress.last_wave_at < limits.wave_interval:
        return WaveDecision(0)
    room = limits.wave_size - progress.in_flight
    return WaveDecision(max(0, min(room, progress.waiting)))
