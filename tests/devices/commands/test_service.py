"""Submission, approval and the safety rules, against the real ledger and command tables."""

from __future__ import annotations

import psycopg
import pytest

from devices import audit
from devices.commands.errors import (
    ApprovalError,
    CommandConflictError,
    InvalidParametersError,
    InvalidTransitionError,
    SafetyPolicyError,
    UnsupportedCommandError,
)
from devices.commands.lifecycle import CommandState
from devices.commands.service import DeviceUnavailableError
from schemas.messages import Alert
from tests.devices.commands.helpers import Clock, drain_outbox, make_service, send
from tests.plugins.fleet import Fleet

pytestmark = pytest.mark.integration

S = CommandState


def test_a_read_is_approved_at_once_and_submission_is_idempotent(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    first = send(service, "GAS-ARM-1", "read_now", client_command_id="cli-1")
    assert first.state is S.APPROVED
    assert first.region == "R1"
    assert first.delivery == "on_wake"
    again = send(service, "GAS-ARM-1", "read_now", client_command_id="cli-1")
    assert again.command_id == first.command_id
    with pytest.raises(CommandConflictError):
        send(service, "GAS-ARM-1", "read_now", client_command_id="cli-1",
             params={"what": "status"})
    # The same client id of another person is their own request.
    other = send(service, "GAS-ARM-1", "read_now", client_command_id="cli-1", by="op-2")
    assert other.command_id != first.command_id


def test_bad_requests_are_refused_before_anything_is_stored(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    with pytest.raises(InvalidParametersError):
        send(service, "GAS-ARM-1", "top_up", params={"amount": "-5", "topup_id": "t"})
    with pytest.raises(UnsupportedCommandError):
        send(service, "WATER-1", "valve_close")
    with fleet.connect() as conn:
        conn.execute("UPDATE ledger.devices SET status = 'removed' WHERE device_id = 'GAS-ARM-2'")
    with pytest.raises(DeviceUnavailableError):
        send(service, "GAS-ARM-2", "read_now")
    assert service.list().items == []


def test_remote_open_arms_the_valve_where_supported(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    record = send(service, "GAS-ARM-1", "valve_open")
    assert record.requested_command == "valve_open"
    assert record.command == "valve_arm_open"
    assert record.state is S.APPROVED
    assert record.readback


def test_direct_open_needs_a_second_approver_not_the_requester(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    record = send(service, "GAS-DIRECT-1", "valve_open", by="op-1")
    assert record.command == "valve_open"
    assert record.state is S.REQUESTED
    assert record.approvals_required == 1
    with pytest.raises(ApprovalError, match="cannot approve"):
        service.approve(record.command_id, "op-1")
    assert service.get(record.command_id).state is S.REQUESTED
    approved = service.approve(record.command_id, "approver-1", comment="site checked")
    assert approved.state is S.APPROVED
    assert approved.approvals == ("approver-1",)
    with pytest.raises(InvalidTransitionError):
        service.approve(record.command_id, "approver-2")


def test_protected_customer_blocks_a_debt_close_and_the_refusal_is_kept(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    with pytest.raises(SafetyPolicyError) as err:
        send(service, "GAS-PROT-1", "valve_close", by="billing", origin="billing",
             params={"cause": "debt"})
    command_id = err.value.context["command_id"]
    stored = service.get(command_id)
    assert stored.state is S.REJECTED
    assert stored.error_code == "safety_policy"
    actions = [r.action for r in service.history(command_id)]
    assert actions == ["command.requested", "command.rejected"]
    # A leak is still closed.
    assert send(service, "GAS-PROT-1", "valve_close",
                params={"cause": "safety", "safety_cause": "leak"}).state is S.APPROVED


def test_operator_over_the_anomaly_threshold_is_quarantined_until_released(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock, anomaly_max_commands=3)
    closes = []
    for device in ("GAS-ARM-1", "GAS-ARM-2", "GAS-R2-1"):
        closes.append(send(service, device, "valve_close", by="op-x"))
        clock.advance(seconds=1)
    assert [c.state for c in closes] == [S.APPROVED] * 3
    fourth = send(service, "GAS-DIRECT-1", "valve_close", by="op-x")
    assert fourth.state is S.QUARANTINED
    quarantine = service.quarantine_of("op-x")
    assert quarantine is not None
    assert quarantine.state == "quarantined"
    # The approved-but-not-dispatched ones are held too; reads still pass.
    assert {service.get(c.command_id).state for c in closes} == {S.QUARANTINED}
    assert send(service, "GAS-ARM-1", "read_now", by="op-x").state is S.APPROVED
    fifth = send(service, "ELEC-1", "relay_trip", by="op-x")
    assert fifth.state is S.QUARANTINED
    alerts = [m for m in drain_outbox(service) if isinstance(m, Alert)]
    assert [a.code for a in alerts] == ["operator_quarantined"]
    assert alerts[0].object_id == "op-x"
    # Nobody approves a held command, and nobody releases themselves.
    with pytest.raises(ApprovalError, match="quarantined"):
        service.approve(fourth.command_id, "approver-1")
    with pytest.raises(ApprovalError):
        service.release_operator("op-x", "op-x")
    released = service.release_operator("op-x", "approver-1", comment="storm response")
    assert {r.state for r in released} == {S.APPROVED}
    assert len(released) == 5
    assert service.quarantine_of("op-x").state == "released"  # type: ignore[union-attr]
    # The count starts again after the release.
    assert send(service, "GAS-ARM-1", "valve_close", by="op-x").state is S.APPROVED


def test_release_can_cancel_the_held_commands(fleet: Fleet) -> None:
    service = make_service(fleet, Clock(), anomaly_max_commands=1)
    send(service, "GAS-ARM-1", "valve_close", by="op-y")
    held = send(service, "GAS-ARM-2", "valve_close", by="op-y")
    assert held.state is S.QUARANTINED
    out = service.release_operator("op-y", "approver-1", cancel_held=True)
    assert {r.state for r in out} == {S.CANCELLED}


def test_safety_close_is_never_reopened_automatically(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    close = send(service, "GAS-ARM-1", "valve_close", params={"cause": "safety",
                                                              "safety_cause": "leak"})
    assert close.sets_safety_lock
    for origin in ("billing", "operation"):
        with pytest.raises(SafetyPolicyError, match="never reopened automatically"):
            send(service, "GAS-ARM-1", "valve_arm_open", by="billing", origin=origin)
    with pytest.raises(SafetyPolicyError, match="acknowledge_safety_lock"):
        send(service, "GAS-ARM-1", "valve_open", by="op-1")
    reopen = send(service, "GAS-ARM-1", "valve_open", by="op-1",
                  params={"acknowledge_safety_lock": True})
    assert reopen.command == "valve_arm_open"
    assert reopen.state is S.REQUESTED
    assert reopen.approvals_required == 1


def test_cancel_before_dispatch_only(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    record = send(service, "GAS-DIRECT-1", "valve_open")
    cancelled = service.cancel(record.command_id, "op-1", reason="customer at home")
    assert cancelled.state is S.CANCELLED
    with pytest.raises(InvalidTransitionError):
        service.cancel(record.command_id, "op-1")


def test_list_pages_and_filters_by_region(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock)
    for device in ("GAS-ARM-1", "GAS-ARM-2", "GAS-R2-1", "ELEC-1", "GAS-DIRECT-1"):
        send(service, device, "read_now")
        clock.advance(seconds=1)
    page = service.list(limit=2)
    seen = [c.device_id for c in page.items]
    while page.next_cursor:
        page = service.list(limit=2, cursor=page.next_cursor)
        seen += [c.device_id for c in page.items]
    assert seen == ["GAS-DIRECT-1", "ELEC-1", "GAS-R2-1", "GAS-ARM-2", "GAS-ARM-1"]
    assert [c.device_id for c in service.list(regions=["R2"]).items] == ["GAS-R2-1"]


def test_every_step_is_in_a_verifiable_chain(fleet: Fleet) -> None:
    service = make_service(fleet, Clock(), audit_key="k-123")
    record = send(service, "GAS-DIRECT-1", "valve_open")
    service.approve(record.command_id, "approver-1")
    with fleet.connect("api", autocommit=True) as conn:
        assert audit.verify_chain(conn, key=b"k-123").ok
        assert not audit.verify_chain(conn).ok  # written with the key
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM ops.audit_log")
    actions = [r.action for r in service.history(record.command_id)]
    assert actions == ["command.requested", "command.approval", "command.approved"]
