"""Stored commands as typed records, and the one function that moves a command's state.

Strategy: :func:`transition` is the only writer of ``ops.commands.state``. It asks the state
machine (:func:`~devices.commands.lifecycle.next_state`) whether the step is allowed, updates
the row, and appends the audit record in the caller's transaction — so no state change can
happen without its audit record, and none is audited that did not happen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from devices import audit
from devices.commands.errors import CommandNotFoundError
from devices.commands.lifecycle import CommandEvent, CommandState, next_state

__all__ = [
    "CommandRecord",
    "fingerprint",
    "get_command",
    "get_commands",
    "lock_command",
    "transition",
]

_JSON_COLUMNS = {"params", "policy_reasons", "reply", "wire_params"}


def fingerprint(*parts: Any) -> str:
    """A stable digest of a request's content, to tell a retry from a different request."""
    data = json.dumps(audit.canonical_details(list(parts)), sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


@dataclass(frozen=True)
class CommandRecord:
    """One command as stored, with its approvals."""

    command_id: str
    client_command_id: str | None
    requested_by: str
    origin: str
    device_id: str
    device_type: str
    protocol: str
    address: str
    region: str | None
    requested_command: str
    command: str
    params: Mapping[str, Any]
    safety_class: str
    state: CommandState
    approvals_required: int
    policy_reasons: list[str]
    readback: bool
    sets_safety_lock: bool
    purpose: str
    parent_command_id: str | None
    group_id: str | None
    operation_id: str | None
    reason: str
    priority: int
    fingerprint: str
    requested_at: datetime
    expires_at: datetime
    attempt: int
    max_attempts: int
    delivery: str
    reply_timeout_s: float
    fep: str | None
    service_point: str | None
    link_id: str | None
    handler: str
    dispatched_at: datetime | None
    sent_at: datetime | None
    acknowledged_at: datetime | None
    finished_at: datetime | None
    next_check_at: datetime | None
    result_detail: str
    error_code: str | None
    reply: Mapping[str, Any]
    updated_at: datetime
    wire_command: str
    wire_params: Mapping[str, Any]
    preview_hex: str
    approvals: tuple[str, ...] = field(default=())

    @classmethod
    def from_row(cls, row: Mapping[str, Any], approvals: tuple[str, ...] = ()) -> CommandRecord:
        data = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        data["state"] = CommandState(row["state"])
        data["approvals"] = approvals
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        out["approvals"] = list(self.approvals)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


_SELECT = ("SELECT c.*, ARRAY(SELECT a.approver FROM ops.command_approvals a "
           "WHERE a.command_id = c.command_id ORDER BY a.approved_at, a.approver) AS approvals "
           "FROM ops.commands c")


def get_command(conn: psycopg.Connection[Any], command_id: str, *,
                for_update: bool = False) -> CommandRecord:
    """The stored command with its approvals (one round trip), or
    :class:`CommandNotFoundError`."""
    lock = " FOR UPDATE OF c" if for_update else ""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"{_SELECT} WHERE c.command_id = %s{lock}", (command_id,)).fetchone()
    if row is None:
        raise CommandNotFoundError(f"no command '{command_id}'", where=f"command {command_id}",
                                   hint="list commands with `unimeter command status`")
    return CommandRecord.from_row(row, tuple(row["approvals"] or ()))


def get_commands(conn: psycopg.Connection[Any], command_ids: list[str]) -> list[CommandRecord]:
    """Several stored commands in one round trip, in the order asked."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"{_SELECT} WHERE c.command_id = ANY (%s)",
                           (command_ids,)).fetchall()
    by_id = {r["command_id"]: CommandRecord.from_row(r, tuple(r["approvals"] or ()))
             for r in rows}
    return [by_id[i] for i in command_ids if i in by_id]


def lock_command(conn: psycopg.Connection[Any], command_id: str) -> CommandRecord:
    return get_command(conn, command_id, for_update=True)


def transition(conn: psycopg.Connection[Any], record: CommandRecord, event: CommandEvent, *,
               actor: str, details: Mapping[str, Any] | None = None,
               audit_key: bytes | None = None, now: datetime,
               audit_entries: list[audit.Entry] | None = None,
               **updates: Any) -> CommandRecord:
    """Apply ``event`` to ``record`` (locked by the caller), update columns, audit the step.

    With ``audit_entries`` the audit record is added to that list instead, for the caller to
    append with the others of a batch (:func:`devices.audit.append_many`) in the same
    transaction.
    """
    new_state = next_state(record.state, event, command_id=record.command_id)
    values: dict[str, Any] = {"state": new_state.value, "updated_at": now, **updates}
    if new_state.value in ("confirmed", "failed", "expired", "cancelled", "rejected"):
        values.setdefault("finished_at", now)
        values.setdefault("next_check_at", None)
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in values)
    args = [Jsonb(v) if k in _JSON_COLUMNS else v for k, v in values.items()]
    conn.execute(sql.SQL("UPDATE ops.commands SET {} WHERE command_id = {}").format(
        assignments, sql.Placeholder()), [*args, record.command_id])
    entry = audit.Entry(actor, f"command.{_ACTIONS[event]}", "command", record.command_id,
                        {"from": record.state.value, "to": new_state.value,
                         "device_id": record.device_id, "command": record.command,
                         **(details or {})})
    if audit_entries is not None:
        audit_entries.append(entry)
    else:
        audit.append_many(conn, [entry], key=audit_key, ts=now)
    merged = {**asdict(record), **values, "state": new_state}
    merged["approvals"] = record.approvals
    return CommandRecord(**{k: merged[k] for k in CommandRecord.__dataclass_fields__})


_ACTIONS = {
    CommandEvent.APPROVE: "approved",
    CommandEvent.QUARANTINE: "quarantined",
    CommandEvent.RELEASE: "released",
    CommandEvent.REJECT: "rejected",
    CommandEvent.DISPATCH: "dispatched",
    CommandEvent.SENT: "sent",
    CommandEvent.RETRY: "retry",
    CommandEvent.CONFIRM: "confirmed",
    CommandEvent.FAIL: "failed",
    CommandEvent.EXPIRE: "expired",
    CommandEvent.CANCEL: "cancelled",
}
