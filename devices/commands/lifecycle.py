"""The command lifecycle as a state machine: which step is allowed from which state.

Strategy: states and events are enums and the whole machine is one table,
:data:`TRANSITIONS` — ``(state, event) -> next state``. Everything that changes a command's
state (the service, the result consumer, the expiry sweep, the API) goes through
:func:`next_state`, so an illegal step (approving a cancelled command, confirming an expired
one) is refused in one place with the allowed events listed. The main paths::

    requested --approve--> approved --dispatch--> queued --sent--> sent --confirm--> confirmed
    requested --quarantine--> quarantined --release--> requested
    requested --reject--> rejected           (the safety policy refuses it)
    queued|sent --fail--> failed             sent --retry--> queued --dispatch--> queued
    requested|quarantined|approved --cancel--> cancelled
    every live state --expire--> expired

A ``queued`` command is dispatched again (the next attempt) when its FEP reported a retryable
failure or no result came within the reply timeout plus a grace period.
``quarantined`` holds the commands of an operator who passed the anomaly threshold until an
approver releases them; ``rejected`` is the safety policy's refusal. A result for a command
already in a terminal state is kept in its history but changes nothing (:func:`is_terminal`).
"""

from __future__ import annotations

from enum import StrEnum

from devices.commands.errors import InvalidTransitionError

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "CommandEvent",
    "CommandState",
    "allowed_events",
    "is_terminal",
    "next_state",
]


class CommandState(StrEnum):
    REQUESTED = "requested"
    QUARANTINED = "quarantined"
    APPROVED = "approved"
    QUEUED = "queued"
    SENT = "sent"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class CommandEvent(StrEnum):
    APPROVE = "approve"        # the approvals the policy asks for are complete
    QUARANTINE = "quarantine"  # the requester passed the anomaly threshold
    RELEASE = "release"        # an approver released the requester's quarantine
    REJECT = "reject"          # the safety policy refuses it
    DISPATCH = "dispatch"      # published to commands.dispatch for the FEP
    SENT = "sent"              # the FEP put it on the device's link
    RETRY = "retry"            # a retryable failure or a lost FEP: dispatch again
    CONFIRM = "confirm"        # the device acknowledged, or the read-back agrees
    FAIL = "fail"              # the device refused, attempts ran out, or the read-back disagrees
    EXPIRE = "expire"          # the time to live passed before confirmation
    CANCEL = "cancel"          # a person withdrew it before dispatch


S, E = CommandState, CommandEvent

TRANSITIONS: dict[tuple[CommandState, CommandEvent], CommandState] = {
    (S.REQUESTED, E.APPROVE): S.APPROVED,
    (S.REQUESTED, E.QUARANTINE): S.QUARANTINED,
    (S.REQUESTED, E.REJECT): S.REJECTED,
    (S.REQUESTED, E.CANCEL): S.CANCELLED,
    (S.REQUESTED, E.EXPIRE): S.EXPIRED,
    (S.QUARANTINED, E.RELEASE): S.REQUESTED,
    (S.QUARANTINED, E.CANCEL): S.CANCELLED,
    (S.QUARANTINED, E.EXPIRE): S.EXPIRED,
    (S.APPROVED, E.DISPATCH): S.QUEUED,
    (S.APPROVED, E.QUARANTINE): S.QUARANTINED,
    (S.APPROVED, E.REJECT): S.REJECTED,
    (S.APPROVED, E.FAIL): S.FAILED,
    (S.APPROVED, E.CANCEL): S.CANCELLED,
    (S.APPROVED, E.EXPIRE): S.EXPIRED,
    (S.QUEUED, E.DISPATCH): S.QUEUED,
    (S.QUEUED, E.SENT): S.SENT,
    (S.QUEUED, E.RETRY): S.QUEUED,
    (S.QUEUED, E.CONFIRM): S.CONFIRMED,
    (S.QUEUED, E.FAIL): S.FAILED,
    (S.QUEUED, E.EXPIRE): S.EXPIRED,
    (S.SENT, E.SENT): S.SENT,
    (S.SENT, E.RETRY): S.QUEUED,
    (S.SENT, E.CONFIRM): S.CONFIRMED,
    (S.SENT, E.FAIL): S.FAILED,
    (S.SENT, E.EXPIRE): S.EXPIRED,
}

TERMINAL_STATES = frozenset({S.CONFIRMED, S.FAILED, S.EXPIRED, S.CANCELLED, S.REJECTED})
LIVE_STATES = frozenset(set(S) - TERMINAL_STATES)


def is_terminal(state: CommandState | str) -> bool:
    return CommandState(state) in TERMINAL_STATES


def allowed_events(state: CommandState | str) -> list[CommandEvent]:
    """The events the machine accepts in ``state``, in declaration order."""
    state = CommandState(state)
    return [event for (s, event) in TRANSITIONS if s is state]


def next_state(state: CommandState | str, event: CommandEvent | str, *,
               command_id: str = "") -> CommandState:
    """The state after ``event``; :class:`InvalidTransitionError` when it is not allowed."""
    state, event = CommandState(state), CommandEvent(event)
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        allowed = ", ".join(allowed_events(state)) or "none (the command is finished)"
        raise InvalidTransitionError(
            f"cannot {event.value} a command that is {state.value}",
            where=f"command {command_id}" if command_id else None,
            hint=f"allowed in state '{state.value}': {allowed}",
            state=state.value, event=event.value,
        ) from None
