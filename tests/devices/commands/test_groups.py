"""Mass commands: preview, two distinct approvers, throttled waves, pause on failures."""

from __future__ import annotations

import pytest

from devices.commands import groups
from devices.commands.errors import ApprovalError, CommandError, SafetyPolicyError
from devices.commands.groups import Selector
from devices.commands.lifecycle import CommandState
from schemas.messages import Alert, CommandDispatch
from tests.devices.commands.helpers import (
    Clock,
    dispatches,
    drain_outbox,
    engine,
    make_service,
    result,
)
from tests.plugins.fleet import CONC_METERS, Fleet

pytestmark = pytest.mark.integration

S = CommandState


def _close_building(service, **kw):  # type: ignore[no-untyped-def]
    return groups.create_group(service, command="valve_close", params={"cause": "service"},
                               selector=Selector(location_id="R1-B2"), requested_by="op-1",
                               reason="riser replacement in building B2", **kw)


def test_preview_lists_every_device_and_what_will_run(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    group = _close_building(service)
    assert group.state == "requested"
    assert group.approvals_required == 2
    assert group.device_count == len(CONC_METERS)
    assert [i["device_id"] for i in group.preview] == sorted(CONC_METERS)
    assert {i["command"] for i in group.preview} == {"valve_close"}
    assert len(group.preview_hash) == 64
    assert group.members == {"requested": len(CONC_METERS)}


def test_preview_excludes_protected_customers_from_debt_closes(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    group = groups.create_group(
        service, command="valve_close", params={"cause": "debt"},
        selector=Selector(device_ids=("GAS-ARM-1", "GAS-PROT-1", "WATER-1", "NOPE")),
        requested_by="billing", origin="billing")
    excluded = {i["device_id"]: i["excluded"] for i in group.preview if "excluded" in i}
    assert set(excluded) == {"GAS-PROT-1", "WATER-1", "NOPE"}
    assert "protected" in excluded["GAS-PROT-1"]
    assert group.device_count == 1
    with pytest.raises(SafetyPolicyError, match="no selected device"):
        groups.create_group(service, command="valve_close", params={"cause": "debt"},
                            selector=Selector(device_ids=("GAS-PROT-1",)), requested_by="b")


def test_one_approver_is_not_enough_and_nobody_approves_twice(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    eng = engine(service)
    group = _close_building(service)
    with pytest.raises(ApprovalError, match="cannot approve"):
        groups.approve_group(service, group.group_id, "op-1", group.preview_hash)
    with pytest.raises(ApprovalError, match="another preview"):
        groups.approve_group(service, group.group_id, "approver-1", "0" * 64)
    once = groups.approve_group(service, group.group_id, "approver-1", group.preview_hash)
    assert once.state == "requested"
    assert once.approvals == ("approver-1",)
    # One approval dispatches nothing.
    eng.sweep()
    assert eng.dispatch_due() == 0
    assert once.members == {"requested": len(CONC_METERS)}
    with pytest.raises(ApprovalError, match="already approved"):
        groups.approve_group(service, group.group_id, "approver-1", group.preview_hash)
    # Members cannot be approved one by one around the group.
    member = f"{group.group_id}:{CONC_METERS[0]}"
    with pytest.raises(ApprovalError, match="mass command"):
        service.approve(member, "approver-2")
    both = groups.approve_group(service, group.group_id, "approver-2", group.preview_hash)
    assert both.state == "approved"
    assert both.approvals == ("approver-1", "approver-2")


def test_waves_are_throttled_and_pause_on_failures(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock, wave_size=5, wave_interval_s=30, max_failures=3)
    eng = engine(service)
    group = _close_building(service)
    for approver in ("approver-1", "approver-2"):
        groups.approve_group(service, group.group_id, approver, group.preview_hash)

    report = eng.sweep()
    assert report.groups == {group.group_id: "wave 1: 5"}
    assert eng.dispatch_due() == 5
    wave1 = dispatches(service)
    assert len(wave1) == 5
    # Nothing more while five are in flight, even after the interval.
    clock.advance(seconds=31)
    eng.sweep()
    assert eng.dispatch_due() == 0
    # Two confirm, three fail (device refusals): the group pauses with an alert.
    for d in wave1[:2]:
        eng.apply_result(result(d, "delivered", clock.advance(seconds=1),
                                reply={"valve": "closed"}))
    for d in wave1[2:]:
        eng.apply_result(result(d, "rejected", clock.advance(seconds=1), error_code="rejected"))
    report = eng.sweep()
    assert report.groups == {group.group_id: "paused"}
    paused = groups.get_group(service, group.group_id)
    assert paused.state == "paused"
    assert "3 failures" in paused.paused_reason
    alerts = [m for m in drain_outbox(service) if isinstance(m, Alert)]
    assert [a.code for a in alerts] == ["mass_command_paused"]
    eng.sweep()
    assert eng.dispatch_due() == 0

    groups.resume_group(service, group.group_id, "approver-1", comment="bad batch of valves")
    clock.advance(seconds=31)
    assert eng.sweep().groups == {group.group_id: "wave 2: 5"}
    assert eng.dispatch_due() == 5
    wave2 = [d for d in dispatches(service) if isinstance(d, CommandDispatch)]
    for d in wave2:
        eng.apply_result(result(d, "delivered", clock.advance(seconds=1),
                                reply={"valve": "closed"}))
    clock.advance(seconds=31)
    assert eng.sweep().groups == {group.group_id: "wave 3: 2"}
    eng.dispatch_due()
    for d in dispatches(service):
        eng.apply_result(result(d, "delivered", clock.advance(seconds=1),
                                reply={"valve": "closed"}))
    assert eng.sweep().groups == {group.group_id: "completed"}
    done = groups.get_group(service, group.group_id)
    assert done.members == {"confirmed": 9, "failed": 3}


def test_cancel_stops_what_was_not_dispatched(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock, wave_size=4)
    eng = engine(service)
    group = _close_building(service)
    for approver in ("approver-1", "approver-2"):
        groups.approve_group(service, group.group_id, approver, group.preview_hash)
    eng.sweep()
    eng.dispatch_due()
    cancelled = groups.cancel_group(service, group.group_id, "approver-1", reason="storm")
    assert cancelled.state == "cancelled"
    assert cancelled.members == {"queued": 4, "cancelled": len(CONC_METERS) - 4}


def test_idempotent_group_submission_and_bad_selectors(fleet: Fleet) -> None:
    service = make_service(fleet, Clock())
    first = _close_building(service, client_command_id="mass-1")
    again = _close_building(service, client_command_id="mass-1")
    assert again.group_id == first.group_id
    with pytest.raises(CommandError, match="exactly one target"):
        groups.create_group(service, command="read_now", params={},
                            selector=Selector(location_id="R1", device_type="x"),
                            requested_by="op-1")
    with pytest.raises(CommandError, match="no installed or active"):
        groups.create_group(service, command="read_now", params={},
                            selector=Selector(location_id="NOWHERE"), requested_by="op-1")
