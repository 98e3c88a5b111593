"""Dispatch, FEP results, read-back confirmation, retries and expiry (real PostgreSQL)."""

from __future__ import annotations

import pytest

from devices import audit
from devices.commands.lifecycle import CommandState
from tests.devices.commands.helpers import (
    Clock,
    dispatches,
    engine,
    make_service,
    result,
    send,
)
from tests.plugins.fleet import Fleet

pytestmark = pytest.mark.integration

S = CommandState


def test_dispatch_carries_what_the_fep_needs(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock)
    record = send(service, "GAS-C1-03", "set_price", params={
        "tariff_id": "BJ-GAS", "tariff_version": 3,
        "tiers": [{"upper": "350", "price": "2.61"}, {"upper": "500", "price": "2.83"},
                  {"price": "4.23"}]})
    assert engine(service).dispatch_due() == 1
    [dispatch] = dispatches(service)
    assert dispatch.command_id == record.command_id
    assert dispatch.protocol == "cjt188-2004"
    assert dispatch.address == "90000000000002"
    assert dispatch.device_type == "gas_wired_g2_5"
    assert dispatch.handler == "cjt188-2004"
    assert dispatch.link_id == "LINK-CONC-1"
    assert dispatch.attempt == 1
    # What the CJ/T 188 encoder takes, ready for `encode_command`.
    assert dispatch.command == "set_price"
    assert dispatch.params == {"meter_type": "gas", "prices": ["2.61", "2.83", "4.23"],
                               "step_limits": ["350", "500"]}
    assert record.preview_hex.startswith("fe fe fe fe 68 30")
    assert dispatch.expires_at == record.expires_at
    stored = service.get(record.command_id)
    assert stored.state is S.QUEUED
    assert stored.attempt == 1
    assert engine(service).dispatch_due() == 0  # nothing twice


def test_a_reply_that_shows_the_effect_confirms_at_once(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    record = send(service, "GAS-ARM-1", "valve_close", params={"cause": "debt"})
    eng.dispatch_due()
    [dispatch] = dispatches(service)
    assert eng.apply_result(result(dispatch, "sent", clock.advance(seconds=2))).state is S.SENT
    done = eng.apply_result(result(dispatch, "delivered", clock.advance(seconds=3),
                                   reply={"valve": "closed", "battery": "ok"}))
    assert done is not None
    assert done.state is S.CONFIRMED
    assert done.reply["valve"] == "closed"
    # A duplicate of the last result changes nothing but is kept.
    again = eng.apply_result(result(dispatch, "delivered", clock.advance(seconds=1),
                                    reply={"valve": "closed"}))
    assert again is not None
    assert again.state is S.CONFIRMED
    actions = [r.action for r in service.history(record.command_id)]
    assert actions[-1] == "command.late_result"


def test_confirmation_by_read_back(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    record = send(service, "GAS-C1-01", "valve_close", params={"cause": "service"})
    eng.dispatch_due()
    [dispatch] = dispatches(service)
    acked = eng.apply_result(result(dispatch, "delivered", clock.advance(seconds=1)))
    assert acked is not None
    assert acked.state is S.SENT
    assert acked.acknowledged_at is not None
    # The read-back waits for the valve to travel.
    assert eng.dispatch_due() == 0
    clock.advance(seconds=20)
    assert eng.dispatch_due() == 1
    [read] = dispatches(service)
    assert read.command == "read_now"
    assert read.params == {"meter_type": "gas"}  # CJ/T 188 901F carries the status word
    assert service.get(read.command_id).params == {"what": "status"}
    assert read.command_id == f"{record.command_id}.rb1"
    child = eng.apply_result(result(read, "confirmed", clock.advance(seconds=2),
                                    reply={"valve_state": "closed", "current_volume": "123.45"}))
    assert child is not None
    assert child.state is S.CONFIRMED
    parent = service.get(record.command_id)
    assert parent.state is S.CONFIRMED
    assert parent.result_detail == "confirmed by read-back"


def test_a_read_back_that_disagrees_fails_the_command(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    record = send(service, "GAS-C1-02", "valve_close", params={"cause": "service"})
    eng.dispatch_due()
    [dispatch] = dispatches(service)
    eng.apply_result(result(dispatch, "delivered", clock.advance(seconds=1)))
    clock.advance(seconds=20)
    eng.dispatch_due()
    [read] = dispatches(service)
    eng.apply_result(result(read, "confirmed", clock.advance(seconds=1), reply={"valve": "open"}))
    parent = service.get(record.command_id)
    assert parent.state is S.FAILED
    assert parent.error_code == "readback_mismatch"
    assert "valve=open" in parent.result_detail


def test_retryable_failures_are_retried_with_backoff_then_fail(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock, max_attempts=2, retry_backoff_s=30)
    eng = engine(service)
    record = send(service, "ELEC-1", "relay_trip", params={"cause": "manual"})
    eng.dispatch_due()
    [first] = dispatches(service)
    retried = eng.apply_result(result(first, "failed", clock.advance(seconds=5),
                                      error_code="timeout", detail="no reply in 10 s"))
    assert retried is not None
    assert retried.state is S.QUEUED
    assert eng.sweep().redispatched == 0  # back-off not over
    clock.advance(seconds=31)
    assert eng.sweep().redispatched == 1
    [second] = dispatches(service)
    assert second.attempt == 2
    # A late failure of attempt 1 is stale and ignored.
    stale = eng.apply_result(result(first, "failed", clock.advance(seconds=1),
                                    error_code="timeout"))
    assert stale is not None
    assert stale.state is S.QUEUED
    final = eng.apply_result(result(second, "failed", clock.advance(seconds=5),
                                    error_code="timeout"))
    assert final is not None
    assert final.state is S.FAILED
    assert final.error_code == "timeout"
    assert service.get(record.command_id).attempt == 2


def test_a_device_refusal_is_not_retried(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    send(service, "ELEC-1", "relay_trip")
    eng.dispatch_due()
    [dispatch] = dispatches(service)
    done = eng.apply_result(result(dispatch, "rejected", clock.advance(seconds=2),
                                   error_code="password", detail="abnormal reply 0x04"))
    assert done is not None
    assert done.state is S.FAILED


def test_a_lost_fep_is_dispatched_again(fleet: Fleet) -> None:
    clock = Clock()
    # No FEP holds ELEC-1 in the session registry, so it is reached on its next connection.
    service = make_service(fleet, clock, lost_after_s=60, on_wake_lost_after_s=60)
    eng = engine(service)
    send(service, "ELEC-1", "read_now")
    eng.dispatch_due()
    dispatches(service)
    clock.advance(seconds=60 + 10 + 1)
    assert eng.sweep().redispatched == 1
    [again] = dispatches(service)
    assert again.attempt == 2


def test_time_to_live_expires_commands(fleet: Fleet) -> None:
    from datetime import timedelta

    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    waiting = send(service, "GAS-DIRECT-1", "valve_open", ttl=timedelta(minutes=5))
    queued = send(service, "GAS-ARM-1", "read_now", ttl=timedelta(minutes=5))
    eng.dispatch_due()
    clock.advance(minutes=6)
    assert eng.sweep().expired == 2
    assert service.get(waiting.command_id).state is S.EXPIRED
    assert service.get(queued.command_id).state is S.EXPIRED
    with fleet.connect("api", autocommit=True) as conn:
        assert audit.verify_chain(conn).ok


def test_unknown_results_are_reported_not_applied(fleet: Fleet) -> None:
    from schemas.messages import CommandResult
    from tests.devices.commands.helpers import T0

    service = make_service(fleet, Clock())
    missing = CommandResult(command_id="nope", device_id="GAS-ARM-1", status="confirmed", ts=T0)
    assert engine(service).apply_result(missing) is None


def test_confirmed_reopen_clears_the_safety_lock(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    send(service, "GAS-ARM-2", "valve_close", params={"cause": "safety",
                                                      "safety_cause": "tamper"})
    reopen = send(service, "GAS-ARM-2", "valve_open", by="op-1",
                  params={"acknowledge_safety_lock": True})
    service.approve(reopen.command_id, "approver-1")
    eng.dispatch_due()
    [*_, dispatch] = dispatches(service)
    assert dispatch.command == "valve_arm_open"
    eng.apply_result(result(dispatch, "delivered", clock.advance(seconds=1),
                            reply={"valve": "armed"}))
    assert service.get(reopen.command_id).state is S.CONFIRMED
    # No lock any more: billing may arm again after a top-up.
    assert send(service, "GAS-ARM-2", "valve_arm_open", by="billing",
                origin="billing").state is S.APPROVED


def test_billing_hears_of_safety_locks_set_and_cleared(fleet: Fleet) -> None:
    """The lock reaches billing.inbox for the meter's account when the safety close is asked
    for, and its clearing when the checked reopen is confirmed — never before."""
    from schemas.messages import BillingControl
    from tests.devices.commands.helpers import drain_outbox

    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    close = send(service, "GAS-ARM-2", "valve_close", params={"cause": "safety",
                                                              "safety_cause": "leak"})
    [lock] = [m for m in drain_outbox(service) if isinstance(m, BillingControl)]
    assert (lock.action, lock.account_id, lock.meter_id, lock.reason) == (
        "safety_lock", "ACC-2", "GAS-ARM-2", "leak")
    assert lock.control_id == f"safety_lock:{close.command_id}"
    reopen = send(service, "GAS-ARM-2", "valve_open", by="op-1",
                  params={"acknowledge_safety_lock": True})
    service.approve(reopen.command_id, "approver-1")
    eng.dispatch_due()
    [*_, dispatch] = [m for m in drain_outbox(service) if not isinstance(m, BillingControl)]
    assert not [m for m in drain_outbox(service) if isinstance(m, BillingControl)]
    eng.apply_result(result(dispatch, "sent", clock.advance(seconds=1)))
    assert not [m for m in drain_outbox(service) if isinstance(m, BillingControl)]
    eng.apply_result(result(dispatch, "delivered", clock.advance(seconds=1),
                            reply={"valve": "armed"}))
    [clear] = [m for m in drain_outbox(service) if isinstance(m, BillingControl)]
    assert (clear.action, clear.account_id, clear.meter_id, clear.requested_by) == (
        "clear_safety_lock", "ACC-2", "GAS-ARM-2", "op-1")
    assert "approver-1" in clear.reason


def test_a_safety_close_of_a_meter_without_account_tells_billing_nothing(fleet: Fleet) -> None:
    from schemas.messages import BillingControl
    from tests.devices.commands.helpers import drain_outbox

    service = make_service(fleet, Clock())
    send(service, "GAS-C1-05", "valve_close", params={"cause": "safety",
                                                     "safety_cause": "leak"})
    assert not [m for m in drain_outbox(service) if isinstance(m, BillingControl)]


def test_attempts_made_by_the_fep_count(fleet: Fleet) -> None:
    """An FEP retries a dispatch itself and reports its last attempt: no attempts left."""
    from schemas.messages import CommandResult

    clock = Clock()
    service = make_service(fleet, clock, max_attempts=3)
    eng = engine(service)
    record = send(service, "ELEC-1", "relay_trip")
    eng.dispatch_due()
    [dispatch] = dispatches(service)
    final = CommandResult(command_id=dispatch.command_id, device_id=dispatch.device_id,
                          status="failed", ts=clock.advance(seconds=40), fep="fep-1",
                          attempt=3, error_code="timeout",
                          detail="no reply in 10 s after 3 attempts")
    done = eng.apply_result(final)
    assert done is not None
    assert done.state is S.FAILED
    assert service.get(record.command_id).attempt == 3
    assert eng.sweep().redispatched == 0


def test_an_abnormal_reply_is_not_retried(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    send(service, "ELEC-1", "relay_trip")
    eng.dispatch_due()
    [dispatch] = dispatches(service)
    done = eng.apply_result(result(dispatch, "failed", clock.advance(seconds=2),
                                   error_code="device_refused"))
    assert done is not None
    assert done.state is S.FAILED


def test_a_command_held_by_the_fep_is_not_dispatched_again(fleet: Fleet) -> None:
    clock = Clock()
    service = make_service(fleet, clock, lost_after_s=60, on_wake_lost_after_s=3600)
    eng = engine(service)
    send(service, "ELEC-1", "read_now")
    eng.dispatch_due()
    [dispatch] = dispatches(service)
    eng.apply_result(result(dispatch, "queued", clock.advance(seconds=1),
                            detail="link lost before sending"))
    clock.advance(seconds=600)
    assert eng.sweep().redispatched == 0


def test_routes_follow_the_fep_session_registry(fleet: Fleet) -> None:
    """``ops.device_sessions`` (the FEPs' registry) says which FEP holds the device's link."""
    with fleet.connect() as conn:
        present = conn.execute("SELECT to_regclass('ops.device_sessions')").fetchone()
    if present is None or present[0] is None:
        pytest.skip("the FEP session registry (ingest migration 0500) is not installed")
    with fleet.db.admin() as conn:
        conn.execute(
            "INSERT INTO ops.device_sessions (device_id, kind, link_id, address, protocol, "
            "service_point, fep, online, last_heard) VALUES ('ELEC-1', 'link', 'LINK-E1', "
            "'000000000005', 'dlt645-2007', 'SP-645', 'fep-7', true, now())")
    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    send(service, "ELEC-1", "read_now")
    eng.dispatch_due()
    [online] = dispatches(service)
    assert (online.fep, online.service_point, online.link_id, online.delivery) == (
        "fep-7", "SP-645", "LINK-E1", "now")
    with fleet.db.admin() as conn:
        conn.execute("UPDATE ops.device_sessions SET online = false")
    send(service, "ELEC-1", "read_now", params={"what": "balance"})
    eng.dispatch_due()
    [offline] = dispatches(service)
    assert (offline.fep, offline.delivery) == (None, "on_wake")


def test_clock_setting_carries_the_time_when_delivered_at_once(fleet: Fleet) -> None:
    with fleet.db.admin() as conn:
        conn.execute(
            "INSERT INTO ops.device_sessions (device_id, kind, link_id, address, protocol, "
            "service_point, fep, online, last_heard) VALUES ('ELEC-1', 'link', 'LINK-E1', "
            "'000000000005', 'dlt645-2007', 'SP-645', 'fep-7', true, now())")
    clock = Clock()
    service = make_service(fleet, clock)
    eng = engine(service)
    send(service, "ELEC-1", "sync_time")
    send(service, "GAS-ARM-1", "sync_time")  # a sleeping NB-IoT meter: its FEP sets the time
    eng.dispatch_due()
    by_device = {d.device_id: d for d in dispatches(service)}
    assert by_device["ELEC-1"].params["time"] == clock().isoformat()
    assert "time" not in by_device["GAS-ARM-1"].params
