"""Service operations as resumable command sequences with compensation (real PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from devices.commands.errors import CommandNotFoundError, InvalidParametersError
from devices.operations import OperationService
from tests.devices.commands.helpers import Clock, engine, make_service, send
from tests.devices.field import Field
from tests.plugins.fleet import Fleet

pytestmark = pytest.mark.integration


def _setup(fleet: Fleet):  # type: ignore[no-untyped-def]
    clock = Clock()
    service = make_service(fleet, clock)
    return clock, service, engine(service), OperationService(service), Field(clock)


def _ledger(fleet: Fleet, meter_id: str) -> dict[str, Any]:
    with fleet.connect() as conn:
        row = conn.execute(
            "SELECT d.status, d.location_id, m.account_id, a.status FROM ledger.devices d "
            "JOIN ledger.meters m ON m.meter_id = d.device_id LEFT JOIN ledger.accounts a "
            "ON a.account_id = m.account_id WHERE d.device_id = %s", (meter_id,)).fetchone()
    assert row is not None
    return {"status": row[0], "location_id": row[1], "account_id": row[2],
            "account_status": row[3]}


def _account_status(fleet: Fleet, account_id: str) -> str:
    with fleet.connect() as conn:
        row = conn.execute("SELECT status FROM ledger.accounts WHERE account_id = %s",
                           (account_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_install_sets_up_a_prepaid_meter_step_by_step(fleet: Fleet) -> None:
    _clock, _service, eng, ops, field = _setup(fleet)
    op = ops.start("install", {"meter_id": "GAS-STOCK-1", "location_id": "R1-B2-U1",
                               "account_id": "ACC-NEW-1", "opening_balance": "50.00"},
                   requested_by="outworker-7", reason="new connection")
    assert op.state == "running"
    assert _ledger(fleet, "GAS-STOCK-1")["status"] == "installed"
    field.run(eng, ops)
    op = ops.get(op.operation_id)
    assert op.state == "completed", op.error
    # CJ/T 188 meters cannot have a balance set: the opening balance is credited.
    assert [(s.name, s.state) for s in op.steps] == [
        ("install", "done"), ("set clock", "done"), ("initial read", "done"),
        ("set price", "done"), ("set balance", "skipped"), ("credit opening balance", "done"),
        ("arm valve", "done"), ("activate", "done")]
    meter = field.meter("GAS-STOCK-1")
    assert meter.prices == ["2.61", "2.83", "4.23"]
    assert meter.balance == Decimal("50.00")
    assert meter.valve == "armed"
    assert _ledger(fleet, "GAS-STOCK-1") == {"status": "active", "location_id": "R1-B2-U1",
                                             "account_id": "ACC-NEW-1",
                                             "account_status": "active"}
    assert op.context["initial_read"]["volume"] == "1234.567"


def test_replace_carries_the_balance_to_the_new_meter(fleet: Fleet) -> None:
    _clock, _service, eng, ops, field = _setup(fleet)
    field.meter("GAS-ARM-1").balance = Decimal("23.50")
    op = ops.start("replace", {"old_meter_id": "GAS-ARM-1", "new_meter_id": "GAS-STOCK-2"},
                   requested_by="outworker-7")
    field.run(eng, ops)
    op = ops.get(op.operation_id)
    assert op.state == "completed", op.error
    assert field.meter("GAS-ARM-1").valve == "closed"
    assert field.meter("GAS-STOCK-2").balance == Decimal("23.50")
    assert field.meter("GAS-STOCK-2").valve == "armed"
    assert _ledger(fleet, "GAS-ARM-1")["status"] == "removed"
    new = _ledger(fleet, "GAS-STOCK-2")
    assert (new["status"], new["location_id"], new["account_id"]) == (
        "active", "R1-B1-U1", "ACC-1")


def test_a_failed_step_is_compensated(fleet: Fleet) -> None:
    _clock, service, eng, ops, field = _setup(fleet)
    field.refuse.add(("GAS-STOCK-2", "set_price"))
    op = ops.start("replace", {"old_meter_id": "GAS-ARM-1", "new_meter_id": "GAS-STOCK-2",
                               "opening_balance": "10.00"}, requested_by="outworker-7")
    field.run(eng, ops)
    op = ops.get(op.operation_id)
    assert op.state == "compensated"
    assert "set price" in op.error
    states = {s.name: s.state for s in op.steps}
    assert states["set price"] == "failed"
    assert states["swap meters"] == "compensated"
    assert states["close valve"] == "compensated"
    # The old meter is back in service with its account, its valve armed (never opened).
    old = _ledger(fleet, "GAS-ARM-1")
    assert (old["status"], old["account_id"]) == ("active", "ACC-1")
    assert _ledger(fleet, "GAS-STOCK-2")["status"] == "in_stock"
    assert field.meter("GAS-ARM-1").valve == "armed"
    compensations = [c for c in service.list(operation_id=op.operation_id).items
                     if c.client_command_id and c.client_command_id.endswith(":undo")]
    assert [c.command for c in compensations] == ["valve_arm_open"]


def test_transfer_closes_the_old_account_and_opens_the_new(fleet: Fleet) -> None:
    _clock, _service, eng, ops, field = _setup(fleet)
    op = ops.start("transfer", {"meter_id": "GAS-ARM-2", "new_account_id": "ACC-NEW-2",
                                "opening_balance": "0.00"}, requested_by="billing",
                   origin="billing")
    field.run(eng, ops)
    op = ops.get(op.operation_id)
    assert op.state == "completed", op.error
    assert "final_read" in op.context
    assert _account_status(fleet, "ACC-2") == "closed"
    assert _ledger(fleet, "GAS-ARM-2")["account_id"] == "ACC-NEW-2"


def test_deregister_and_remove(fleet: Fleet) -> None:
    _clock, _service, eng, ops, field = _setup(fleet)
    dereg = ops.start("deregister", {"meter_id": "GAS-ARM-2"}, requested_by="billing")
    remove = ops.start("remove", {"meter_id": "ELEC-1"}, requested_by="outworker-7")
    field.run(eng, ops)
    assert ops.get(dereg.operation_id).state == "completed"
    assert _account_status(fleet, "ACC-2") == "closed"
    assert field.meter("GAS-ARM-2").valve == "closed"
    done = ops.get(remove.operation_id)
    assert done.state == "completed"
    # The electricity meter has no valve: the close step is skipped, not failed.
    assert {s.name: s.state for s in done.steps}["close valve"] == "skipped"
    assert _ledger(fleet, "ELEC-1")["status"] == "removed"


def test_a_safety_lock_stops_the_automatic_arming_and_rolls_back(fleet: Fleet) -> None:
    _clock, service, eng, ops, field = _setup(fleet)
    send(service, "GAS-ARM-2", "valve_close", params={"cause": "safety",
                                                      "safety_cause": "leak"})
    op = ops.start("transfer", {"meter_id": "GAS-ARM-2", "new_account_id": "ACC-NEW-2"},
                   requested_by="billing", origin="billing")
    field.run(eng, ops)
    op = ops.get(op.operation_id)
    assert op.state == "compensated"
    assert "never reopened automatically" in op.error
    assert _ledger(fleet, "GAS-ARM-2")["account_id"] == "ACC-2"
    assert _account_status(fleet, "ACC-2") == "active"


def test_operations_resume_after_a_restart_without_duplicating_commands(fleet: Fleet) -> None:
    clock, service, eng, ops, field = _setup(fleet)
    op = ops.start("deregister", {"meter_id": "GAS-ARM-1"}, requested_by="billing")
    # A crash: another process (new objects) advances the same operation, twice.
    again = OperationService(make_service(fleet, clock))
    again.advance(op.operation_id)
    again.advance(op.operation_id)
    commands = service.list(operation_id=op.operation_id).items
    assert [c.command for c in commands] == ["read_now"]
    field.run(eng, again)
    assert again.get(op.operation_id).state == "completed"


def test_bad_operations_are_refused(fleet: Fleet) -> None:
    _clock, _service, _eng, ops, _field = _setup(fleet)
    with pytest.raises(InvalidParametersError, match="opening_balance"):
        ops.start("register", {"meter_id": "GAS-ARM-1", "account_id": "A",
                               "opening_balance": "1.234"}, requested_by="x")
    with pytest.raises(CommandNotFoundError):
        ops.start("remove", {"meter_id": "NOPE"}, requested_by="x")
    with pytest.raises(CommandNotFoundError):
        ops.start("remove", {"meter_id": "GAS-R2-1"}, requested_by="x", regions=["R1"])
