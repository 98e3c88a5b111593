"""The command console (``unimeter command | device | audit``) on the real test ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.plugins.fleet import Fleet

pytestmark = pytest.mark.integration


def cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMETER_")}
    env.update({"UNIMETER_DATABASE_URL": fleet.db.settings.url,
                "UNIMETER_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    return subprocess.run([sys.executable, "-m", "unimeter", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def js(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_send_approve_status_from_the_console(fleet: Fleet) -> None:
    sent = js(cli(fleet, "command", "send", "GAS-DIRECT-1", "valve_open", "--as", "op-1",
                  "--reason", "customer request", "--json"))
    assert sent["state"] == "requested"
    assert sent["origin"] == "cli"
    own = cli(fleet, "command", "approve", sent["command_id"], "--as", "op-1")
    assert own.returncode == 1
    assert "cannot approve" in own.stderr
    approved = js(cli(fleet, "command", "approve", sent["command_id"], "--as", "approver-1",
                      "--json"))
    assert approved["state"] == "approved"
    history = js(cli(fleet, "command", "status", sent["command_id"], "--history", "--json"))
    assert [s["action"] for s in history["history"]] == [
        "command.requested", "command.approval", "command.approved"]
    table = cli(fleet, "command", "status", "--device", "GAS-DIRECT-1")
    assert sent["command_id"] in table.stdout


def test_money_parameters_stay_exact_and_bad_ones_are_explained(fleet: Fleet) -> None:
    topped = js(cli(fleet, "command", "send", "GAS-ARM-1", "top_up", "-p", "amount=100.50",
                    "-p", "topup_id=T-77", "--as", "op-1", "--json"))
    assert topped["params"] == {"amount": "100.50", "topup_id": "T-77"}
    bad = cli(fleet, "command", "send", "GAS-ARM-1", "top_up", "-p", "amount=-1",
              "-p", "topup_id=T-78", "--as", "op-1")
    assert bad.returncode == 1
    assert "amount" in bad.stderr
    assert "unimeter command catalog" in bad.stderr


def test_device_list_and_show(fleet: Fleet) -> None:
    listed = js(cli(fleet, "device", "list", "--region", "R2", "--json"))
    assert [d["device_id"] for d in listed["items"]] == ["GAS-R2-1"]
    under = js(cli(fleet, "device", "list", "--under", "CONC-1", "--limit", "5", "--json"))
    assert len(under["items"]) == 5
    assert under["next_cursor"] == "GAS-C1-05"
    shown = js(cli(fleet, "device", "show", "GAS-ARM-1", "--json"))
    assert "valve_arm_open" in shown["commands"]
    assert shown["delivery"] == "on_wake"
    missing = cli(fleet, "device", "show", "NOPE")
    assert missing.returncode == 1
    assert "no device" in missing.stderr


def test_audit_verify_detects_tampering(fleet: Fleet) -> None:
    js(cli(fleet, "command", "send", "GAS-ARM-1", "read_now", "--as", "op-1", "--json"))
    ok = cli(fleet, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "intact" in ok.stdout
    head = cli(fleet, "audit", "head").stdout.strip()
    with fleet.db.admin() as admin:
        admin.execute("ALTER TABLE ops.audit_log DISABLE TRIGGER audit_log_no_update_delete")
        admin.execute("UPDATE ops.audit_log SET actor = 'someone-else' WHERE seq = 1")
    bad = cli(fleet, "audit", "verify", "--expect", head)
    assert bad.returncode == 1
    assert "TAMPERED" in bad.stderr
    shown = js(cli(fleet, "audit", "show", "--limit", "3", "--json"))
    assert shown[0]["actor"] == "someone-else"
