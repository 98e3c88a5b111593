"""The lifecycle state machine."""

from __future__ import annotations

import pytest

from devices.commands.errors import InvalidTransitionError
from devices.commands.lifecycle import (
    TERMINAL_STATES,
    TRANSITIONS,
    CommandEvent,
    CommandState,
    allowed_events,
    is_terminal,
    next_state,
)

S, E = CommandState, CommandEvent


def run(*events: CommandEvent, start: CommandState = S.REQUESTED) -> CommandState:
    state = start
    for event in events:
        state = next_state(state, event)
    return state


def test_happy_path() -> None:
    assert run(E.APPROVE, E.DISPATCH, E.SENT, E.CONFIRM) is S.CONFIRMED


def test_retry_goes_back_to_queued_and_can_then_confirm() -> None:
    assert run(E.APPROVE, E.DISPATCH, E.SENT, E.RETRY, E.SENT, E.CONFIRM) is S.CONFIRMED


def test_quarantine_holds_until_release() -> None:
    assert run(E.QUARANTINE) is S.QUARANTINED
    with pytest.raises(InvalidTransitionError):
        run(E.QUARANTINE, E.DISPATCH)
    assert run(E.QUARANTINE, E.RELEASE, E.APPROVE) is S.APPROVED


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_states_accept_nothing(terminal: CommandState) -> None:
    assert is_terminal(terminal)
    assert allowed_events(terminal) == []
    for event in E:
        with pytest.raises(InvalidTransitionError) as err:
            next_state(terminal, event, command_id="c-1")
        assert "finished" in str(err.value.hint)
        assert err.value.where == "command c-1"


def test_cancel_only_before_dispatch() -> None:
    for state in (S.REQUESTED, S.QUARANTINED, S.APPROVED):
        assert next_state(state, E.CANCEL) is S.CANCELLED
    for state in (S.QUEUED, S.SENT):
        with pytest.raises(InvalidTransitionError, match="cannot cancel"):
            next_state(state, E.CANCEL)


def test_every_live_state_can_expire() -> None:
    for state in S:
        if not is_terminal(state):
            assert next_state(state, E.EXPIRE) is S.EXPIRED


def test_every_state_is_reachable_from_requested() -> None:
    reachable, frontier = {S.REQUESTED}, [S.REQUESTED]
    while frontier:
        state = frontier.pop()
        for (source, _event), target in TRANSITIONS.items():
            if source is state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(S)
