"""The ledger changes of service operations, each with the data to undo it.

Strategy: an action reads what it is about to change, changes it through the ledger's own
tables (so the ledger's triggers check lifecycle transitions and the collection network,
write ``ledger.history`` under the operation's actor and reason, and publish to the outbox),
and returns an *undo* record. The engine stores the undo record with the step; compensation
passes it to :func:`undo`, which puts every field back — walking the lifecycle graph
(``ledger.device_transitions``) when a status cannot jump back directly (a removed meter goes
removed → in_stock → installed → active).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from devices.commands.errors import CommandError

__all__ = ["ACTIONS", "LedgerActionError", "run_action", "undo"]


class LedgerActionError(CommandError):
    """A ledger change of a service operation was refused (unknown meter, wrong state …)."""

    http_status = 409
    code = "ledger_action"


def _one(conn: psycopg.Connection[Any], query: str, args: tuple[Any, ...], what: str
         ) -> tuple[Any, ...]:
    row = conn.execute(query, args).fetchone()
    if row is None:
        raise LedgerActionError(f"{what} is not in the ledger", where=what,
                                hint="import or create it first")
    return tuple(row)


def _meter(conn: psycopg.Connection[Any], meter_id: str) -> dict[str, Any]:
    row = _one(conn, "SELECT d.status, d.location_id, d.parent_device_id, m.account_id "
                     "FROM ledger.devices d JOIN ledger.meters m ON m.meter_id = d.device_id "
                     "WHERE d.device_id = %s FOR UPDATE OF d, m", (meter_id,), f"meter {meter_id}")
    return {"status": row[0], "location_id": row[1], "parent_device_id": row[2],
            "account_id": row[3]}


def _account(conn: psycopg.Connection[Any], account_id: str) -> dict[str, Any]:
    row = _one(conn, "SELECT status, opened_at, closed_at FROM ledger.accounts "
                     "WHERE account_id = %s FOR UPDATE", (account_id,), f"account {account_id}")
    return {"account_id": account_id, "status": row[0],
            "opened_at": row[1].isoformat() if row[1] else None,
            "closed_at": row[2].isoformat() if row[2] else None}


def _set_account(conn: psycopg.Connection[Any], saved: Mapping[str, Any]) -> None:
    conn.execute("UPDATE ledger.accounts SET status = %s, opened_at = %s, closed_at = %s "
                 "WHERE account_id = %s",
                 (saved["status"], saved["opened_at"], saved["closed_at"], saved["account_id"]))


def _open_account(conn: psycopg.Connection[Any], account_id: str) -> dict[str, Any]:
    before = _account(conn, account_id)
    if before["status"] == "closed":
        raise LedgerActionError(f"account {account_id} is closed", where=f"account {account_id}",
                                hint="open a new account for the customer")
    conn.execute("UPDATE ledger.accounts SET status = 'active', "
                 "opened_at = COALESCE(opened_at, now()) WHERE account_id = %s", (account_id,))
    return before


def _close_account(conn: psycopg.Connection[Any], account_id: str) -> dict[str, Any]:
    before = _account(conn, account_id)
    conn.execute("UPDATE ledger.accounts SET status = 'closed', "
                 "closed_at = COALESCE(closed_at, now()) WHERE account_id = %s", (account_id,))
    return before


def _status_path(conn: psycopg.Connection[Any], start: str, goal: str) -> list[str]:
    edges: dict[str, list[str]] = {}
    for a, b in conn.execute("SELECT status_from, status_to FROM ledger.device_transitions"):
        edges.setdefault(a, []).append(b)
    seen, queue = {start: [start]}, deque([start])
    while queue:
        at = queue.popleft()
        if at == goal:
            return seen[at][1:]
        for nxt in edges.get(at, []):
            if nxt not in seen:
                seen[nxt] = [*seen[at], nxt]
                queue.append(nxt)
    raise LedgerActionError(f"no lifecycle path from {start} to {goal}",
                            hint="see ledger.device_transitions")


def _move_status(conn: psycopg.Connection[Any], device_id: str, goal: str) -> None:
    row = _one(conn, "SELECT status FROM ledger.devices WHERE device_id = %s", (device_id,),
               f"device {device_id}")
    for status in _status_path(conn, row[0], goal):
        conn.execute("UPDATE ledger.devices SET status = %s WHERE device_id = %s",
                     (status, device_id))


# --------------------------------------------------------------------------- actions


def bind_account(conn: psycopg.Connection[Any], p: Mapping[str, Any]) -> dict[str, Any]:
    """Bill ``meter_id`` to ``account_id`` and open the account (register)."""
    meter = _meter(conn, p["meter_id"])
    account = _open_account(conn, p["account_id"])
    conn.execute("UPDATE ledger.meters SET account_id = %s WHERE meter_id = %s",
                 (p["account_id"], p["meter_id"]))
    return {"meter_id": p["meter_id"], "account_id": meter["account_id"], "accounts": [account]}


def transfer_account(conn: psycopg.Connection[Any], p: Mapping[str, Any]) -> dict[str, Any]:
    """Close the meter's current account and bill it to ``new_account_id`` (transfer)."""
    meter = _meter(conn, p["meter_id"])
    saved = []
    if meter["account_id"] and meter["account_id"] != p["new_account_id"]:
        saved.append(_close_account(conn, meter["account_id"]))
    saved.append(_open_account(conn, p["new_account_id"]))
    conn.execute("UPDATE ledger.meters SET account_id = %s WHERE meter_id = %s",
                 (p["new_account_id"], p["meter_id"]))
    return {"meter_id": p["meter_id"], "account_id": meter["account_id"], "accounts": saved}


def close_account(conn: psycopg.Connection[Any], p: Mapping[str, Any]) -> dict[str, Any]:
    """Close the meter's account and unbind it (deregister)."""
    meter = _meter(conn, p["meter_id"])
    saved = [_close_account(conn, meter["account_id"])] if meter["account_id"] else []
    conn.execute("UPDATE ledger.meters SET account_id = NULL WHERE meter_id = %s",
                 (p["meter_id"],))
    return {"meter_id": p["meter_id"], "account_id": meter["account_id"], "accounts": saved}


def install_meter(conn: psycopg.Connection[Any], p: Mapping[str, Any]) -> dict[str, Any]:
    """Put an in-stock meter at its place (location, parent device, account): installed."""
    meter_id = p.get("new_meter_id") or p["meter_id"]
    meter = _meter(conn, meter_id)
    if meter["status"] != "in_stock":
        raise LedgerActionError(f"meter {meter_id} is {meter['status']}, not in stock",
                                where=f"meter {meter_id}",
                                hint="only a meter in stock can be installed")
    saved_accounts = []
    account_id = p.get("account_id")
    if account_id:
        saved_accounts.append(_open_account(conn, account_id))
    conn.execute("UPDATE ledger.devices SET status = 'installed', location_id = %s, "
                 "parent_device_id = %s WHERE device_id = %s",
                 (p.get("location_id"), p.get("parent_device_id"), meter_id))
    conn.execute("UPDATE ledger.meters SET account_id = %s WHERE meter_id = %s",
                 (account_id, meter_id))
    return {"devices": [{"device_id": meter_id, **meter}], "accounts": saved_accounts}


def activate_meter(conn: psycopg.Connection[Any], p: Mapping[str, Any]) -> dict[str, Any]:
    """An installed meter that read and took its settings goes active."""
    meter_id = p.get("new_meter_id") or p["meter_id"]
    meter = _meter(conn, meter_id)
    _move_status(conn, meter_id, "active")
    return {"devices": [{"device_id": meter_id, **meter}], "accounts": []}


def remove_meter(conn: psycopg.Connection[Any], p: Mapping[str, Any]) -> dict[str, Any]:
    """Take a meter out of service: removed, no longer billed to its account."""
    meter_id = p.get("old_meter_id") or p["meter_id"]
    meter = _meter(conn, meter_id)
    _move_status(conn, meter_id, "removed")
    conn.execute("UPDATE ledger.meters SET account_id = NULL WHERE meter_id = %s", (meter_id,))
    return {"devices": [{"device_id": meter_id, **meter}], "accounts": []}


def swap_meters(conn: psycopg.Connection[Any], p: Mapping[str, Any]) -> dict[str, Any]:
    """Replace: the old meter is removed, the new one installed at its place and account."""
    old = _meter(conn, p["old_meter_id"])
    first = remove_meter(conn, {"meter_id": p["old_meter_id"]})
    second = install_meter(conn, {"meter_id": p["new_meter_id"],
                                  "location_id": old["location_id"],
                                  "parent_device_id": old["parent_device_id"],
                                  "account_id": old["account_id"]})
    return {"devices": first["devices"] + second["devices"],
            "accounts": first["accounts"] + second["accounts"]}


ACTIONS: dict[str, Callable[[psycopg.Connection[Any], Mapping[str, Any]], dict[str, Any]]] = {
    "bind_account": bind_account,
    "transfer_account": transfer_account,
    "close_account": close_account,
    "install_meter": install_meter,
    "activate_meter": activate_meter,
    "remove_meter": remove_meter,
    "swap_meters": swap_meters,
}


def run_action(conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any]
               ) -> dict[str, Any]:
    return ACTIONS[name](conn, params)


def undo(conn: psycopg.Connection[Any], saved: Mapping[str, Any]) -> None:
    """Put back what an action changed (devices in reverse order, then accounts)."""
    if "meter_id" in saved and "devices" not in saved:
        conn.execute("UPDATE ledger.meters SET account_id = %s WHERE meter_id = %s",
                     (saved["account_id"], saved["meter_id"]))
    for device in reversed(saved.get("devices", [])):
        device_id = device["device_id"]
        conn.execute("UPDATE ledger.meters SET account_id = %s WHERE meter_id = %s",
                     (device["account_id"], device_id))
        conn.execute("UPDATE ledger.devices SET location_id = %s, parent_device_id = %s "
                     "WHERE device_id = %s",
                     (device["location_id"], device["parent_device_id"], device_id))
        _move_status(conn, device_id, device["status"])
    for account in reversed(saved.get("accounts", [])):
        _set_account(conn, account)
