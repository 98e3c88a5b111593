"""Mass commands: one command for many devices, with a preview, two approvers and waves.

Strategy: creating a group resolves its target (a list of devices, a place in the location
tree, everything under a concentrator, a device type) against the ledger and runs the safety
policy for every device, producing a *preview*: per device the command that will really run
(an open may become an arm), or why the device is left out (a protected customer in a debt
close, an unsupported type, a removed meter), with the frame its protocol encoder builds
for it. The preview's SHA-256 is what approvers
approve: an approval names the hash it saw, so nobody approves something other than what was
shown. Included devices become member commands (``requested``, not individually
approvable). When the configured number of distinct approvers (never the requester) have
approved, members are approved but held; :func:`advance_groups`, run by the sweep, releases
them in throttled waves (:func:`devices.safety.plan_wave`) and pauses the group — with an
alert — when failures pass the threshold. A person resumes or cancels a paused group; a
resume acknowledges the failures so far, and the threshold counts anew from there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from devices import audit
from devices.commands import outbox
from devices.commands.catalog import command_spec
from devices.commands.encoding import EncodedCommand
from devices.commands.errors import (
    ApprovalError,
    CommandConflictError,
    CommandError,
    CommandNotFoundError,
    InvalidTransitionError,
    SafetyPolicyError,
)
from devices.commands.facts import load_devices
from devices.commands.lifecycle import CommandEvent, CommandState, next_state
from devices.commands.records import fingerprint, get_command, transition
from devices.commands.service import CommandService, make_request
from devices.safety import Decision, WaveProgress, decide, plan_wave
from schemas.messages import Alert

__all__ = [
    "BulkOutcome",
    "GroupRecord",
    "Selector",
    "advance_groups",
    "approve_group",
    "cancel_group",
    "create_group",
    "get_group",
    "list_groups",
    "resume_group",
    "submit_bulk",
]

#: The largest mass command one request may create.
MAX_GROUP_DEVICES = 100_000


@dataclass(frozen=True)
class Selector:
    """Which devices a mass command targets (exactly one of the fields)."""

    device_ids: tuple[str, ...] = ()
    location_id: str | None = None
    under_device: str | None = None
    device_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selector:
        return cls(device_ids=tuple(data.get("device_ids") or ()),
                   location_id=data.get("location_id"), under_device=data.get("under_device"),
                   device_type=data.get("device_type"))


@dataclass(frozen=True)
class GroupRecord:
    group_id: str
    client_command_id: str | None
    requested_by: str
    origin: str
    command: str
    params: Mapping[str, Any]
    reason: str
    selector: Mapping[str, Any]
    state: str
    approvals_required: int
    preview: list[dict[str, Any]]
    preview_hash: str
    device_count: int
    excluded_count: int
    requested_at: datetime
    expires_at: datetime
    last_wave_at: datetime | None
    waves: int
    paused_reason: str
    failures_acknowledged: int
    finished_at: datetime | None
    approvals: tuple[str, ...] = ()
    members: Mapping[str, int] | None = None

    def to_dict(self, *, with_preview: bool = True) -> dict[str, Any]:
        out = asdict(self)
        out["approvals"] = list(self.approvals)
        if not with_preview:
            out.pop("preview")
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


def _resolve(conn: psycopg.Connection[Any], selector: Selector) -> list[str]:
    given = [bool(selector.device_ids), selector.location_id is not None,
             selector.under_device is not None, selector.device_type is not None]
    if sum(given) != 1:
        raise CommandError("a mass command needs exactly one target: device_ids, location_id, "
                           "under_device or device_type", where="selector",
                           hint="e.g. {\"location_id\": \"BLDG-7\"}")
    if selector.device_ids:
        return sorted(set(selector.device_ids))
    if selector.location_id is not None:
        query = ("SELECT d.device_id FROM ledger.devices d JOIN ledger.locations l "
                 "ON l.location_id = d.location_id WHERE %s = ANY (l.path) AND d.kind = 'meter' "
                 "AND d.status IN ('installed', 'active') ORDER BY d.device_id")
        arg: Any = selector.location_id
    elif selector.under_device is not None:
        query = ("SELECT device_id FROM ledger.devices WHERE %s = ANY (path) AND "
                 "device_id <> path[1] AND kind = 'meter' AND status IN ('installed', 'active') "
                 "ORDER BY device_id")
        arg = selector.under_device
    else:
        query = ("SELECT device_id FROM ledger.devices WHERE device_type = %s AND "
                 "status IN ('installed', 'active') ORDER BY device_id")
        arg = selector.device_type
    return [r[0] for r in conn.execute(query, (arg,)).fetchall()]


def preview_hash(command: str, params: Mapping[str, Any], items: Sequence[Mapping[str, Any]]
                 ) -> str:
    body = json.dumps(audit.canonical_details({"command": command, "params": params,
                                               "items": list(items)}),
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def create_group(service: CommandService, *, command: str, params: Mapping[str, Any] | None,
                 selector: Selector, requested_by: str, origin: str = "api", reason: str = "",
                 client_command_id: str | None = None, ttl: timedelta | None = None,
                 priority: int = 5, regions: Sequence[str] | None = None) -> GroupRecord:
    """Resolve the target, judge every device, store the group and its preview.

    ``regions`` (when given) limits the target to devices of those regions — the caller's
    authorisation; devices elsewhere are excluded with that reason.
    """
    spec = command_spec(command)
    typed = spec.validate(params)
    now = service.clock()
    canonical = typed.canonical()
    digest = fingerprint(command, canonical, selector.to_dict())
    with service.transaction() as conn:
        if client_command_id is not None:
            row = conn.execute("SELECT group_id, fingerprint FROM ops.command_groups WHERE "
                               "requested_by = %s AND client_command_id = %s",
                               (requested_by, client_command_id)).fetchone()
            if row is not None:
                if row[1] != digest:
                    raise CommandConflictError(
                        f"client command id '{client_command_id}' was already used for another "
                        "mass command", where=f"group {row[0]}",
                        hint="use a new client command id for a new request")
                return _get(conn, row[0])
        q = conn.execute("SELECT 1 FROM ops.operator_quarantine WHERE operator = %s AND "
                         "state = 'quarantined'", (requested_by,)).fetchone()
        if q is not None:
            raise SafetyPolicyError(f"{requested_by} is quarantined and cannot start a mass "
                                    "command", where=f"operator {requested_by}",
                                    hint="an approver must release the quarantine first",
                                    rule="quarantine")
        device_ids = _resolve(conn, selector)
        if not device_ids:
            raise CommandError("the target selects no installed or active device",
                               where="selector", hint="check the selector", **selector.to_dict())
        if len(device_ids) > MAX_GROUP_DEVICES:
            raise CommandError(f"the target selects {len(device_ids)} devices, more than "
                               f"{MAX_GROUP_DEVICES}", where="selector",
                               hint="split the mass command by area or device type")
        devices = load_devices(conn, device_ids)
        items: list[dict[str, Any]] = []
        decisions: dict[str, tuple[Decision, EncodedCommand]] = {}
        for device_id in device_ids:
            device = devices.get(device_id)
            item: dict[str, Any] = {"device_id": device_id}
            if device is None:
                item["excluded"] = "not in the ledger"
            elif device.status == "removed":
                item["excluded"] = "removed"
            elif regions is not None and device.region not in regions:
                item["excluded"] = "outside the requester's regions"
            else:
                try:
                    decision = decide(spec, typed, device.facts, requested_by=requested_by,
                                      origin=origin, mass=True, limits=service.limits)
                    encoded = service.encode(device, decision, now)
                except CommandError as exc:
                    item["excluded"] = exc.message
                else:
                    decisions[device_id] = (decision, encoded)
                    item.update(command=decision.command, params=dict(decision.params),
                                device_type=device.device_type, region=device.region,
                                frame=encoded.preview_hex)
                    if decision.rewritten:
                        item["requested_command"] = decision.requested_command
            items.append(item)
        included = [i for i in items if "excluded" not in i]
        if not included:
            reasons = sorted({str(i["excluded"]) for i in items})
            raise SafetyPolicyError("no selected device may run this command: "
                                    + "; ".join(reasons), where="selector",
                                    hint="see the reasons; nothing was stored",
                                    rule="mass_preview")
        group_id = uuid.uuid4().hex
        expires_at = now + (ttl or spec.default_ttl)
        phash = preview_hash(command, canonical, items)
        conn.execute(
            "INSERT INTO ops.command_groups (group_id, client_command_id, requested_by, origin, "
            "command, params, reason, selector, state, approvals_required, preview, "
            "preview_hash, device_count, excluded_count, fingerprint, requested_at, "
            "expires_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'requested', %s, "
            "%s, %s, %s, %s, %s, %s, %s, %s)",
            (group_id, client_command_id, requested_by, origin, command, Jsonb(canonical),
             reason, Jsonb(selector.to_dict()), service.limits.mass_approvers, Jsonb(items),
             phash, len(included), len(items) - len(included), digest, now, expires_at, now))
        audit.append(conn, actor=requested_by, action="group.requested", object_type="group",
                     object_id=group_id,
                     details={"command": command, "params": canonical,
                              "selector": selector.to_dict(), "devices": len(included),
                              "excluded": len(items) - len(included), "preview_hash": phash,
                              "reason": reason},
                     key=service.audit_key, ts=now)
        rows, entries = [], []
        for item in included:
            device = devices[item["device_id"]]
            request = make_request(
                device_id=item["device_id"], command=command, requested_by=requested_by,
                params=canonical, origin=origin, reason=reason, priority=priority,
                group_id=group_id, command_id=f"{group_id}:{item['device_id']}",
                ttl=expires_at - now, now=now)
            decision, encoded = decisions[item["device_id"]]
            values, entry = service._values(request, spec, decision, device, now,
                                            encoded=encoded, operation_id=None,
                                            parent_command_id=None)
            rows.append(values)
            entries.append(entry)
        service._insert_many(conn, rows)
        audit.append_many(conn, entries, key=service.audit_key, ts=now)
        for item in included:
            decision, _ = decisions[item["device_id"]]
            if decision.sets_safety_lock:
                service._set_safety_lock(conn, get_command(
                    conn, f"{group_id}:{item['device_id']}"), now)
        return _get(conn, group_id)


def _get(conn: psycopg.Connection[Any], group_id: str, *, for_update: bool = False
         ) -> GroupRecord:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM ops.command_groups WHERE group_id = %s"
                          + (" FOR UPDATE" if for_update else ""), (group_id,)).fetchone()
        if row is None:
            raise CommandNotFoundError(f"no mass command '{group_id}'", where=f"group {group_id}",
                                       hint="list them with `unimeter command group list`")
        approvals = tuple(r["approver"] for r in cur.execute(
            "SELECT approver FROM ops.command_group_approvals WHERE group_id = %s "
            "ORDER BY approved_at", (group_id,)).fetchall())
        members = {r["state"]: int(r["n"]) for r in cur.execute(
            "SELECT state, count(*) AS n FROM ops.commands WHERE group_id = %s GROUP BY state",
            (group_id,)).fetchall()}
    data = {k: row[k] for k in GroupRecord.__dataclass_fields__ if k in row}
    return GroupRecord(**data, approvals=approvals, members=members)


def get_group(service: CommandService, group_id: str) -> GroupRecord:
    with service.transaction() as conn:
        return _get(conn, group_id)


def list_groups(service: CommandService, *, state: str | None = None, limit: int = 100,
                offset: int = 0) -> list[GroupRecord]:
    with service.transaction() as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT group_id FROM ops.command_groups WHERE (%s::text IS NULL OR state = %s) "
            "ORDER BY requested_at DESC, group_id LIMIT %s OFFSET %s",
            (state, state, limit, offset)).fetchall()]
        return [_get(conn, g) for g in ids]


def approve_group(service: CommandService, group_id: str, approver: str, preview_hash: str, *,
                  comment: str = "") -> GroupRecord:
    """Add one distinct approval of the exact preview; approve the members when complete."""
    now = service.clock()
    with service.transaction() as conn:
        group = _get(conn, group_id, for_update=True)
        if group.state != "requested":
            raise InvalidTransitionError(f"mass command {group_id} is {group.state}",
                                         where=f"group {group_id}")
        if preview_hash != group.preview_hash:
            raise ApprovalError(
                "the approval names another preview than the stored one",
                where=f"group {group_id}",
                hint="fetch the preview again (`unimeter command group show`), review it and "
                     "approve its preview_hash")
        service._check_approver(conn, approver, group.requested_by, group.approvals,
                                f"group {group_id}")
        conn.execute("INSERT INTO ops.command_group_approvals (group_id, approver, approved_at, "
                     "preview_hash, comment) VALUES (%s, %s, %s, %s, %s)",
                     (group_id, approver, now, preview_hash, comment))
        approvals = (*group.approvals, approver)
        audit.append(conn, actor=approver, action="group.approval", object_type="group",
                     object_id=group_id,
                     details={"approval": len(approvals), "required": group.approvals_required,
                              "preview_hash": preview_hash, "comment": comment},
                     key=service.audit_key, ts=now)
        if len(approvals) >= group.approvals_required:
            conn.execute("UPDATE ops.command_groups SET state = 'approved', updated_at = %s "
                         "WHERE group_id = %s", (now, group_id))
            audit.append(conn, actor=approver, action="group.approved", object_type="group",
                         object_id=group_id,
                         details={"approvers": list(approvals), "preview_hash": preview_hash},
                         key=service.audit_key, ts=now)
            # Approved but held (next_check_at NULL) until a wave releases them: one
            # statement for the members, one batch of audit records.
            members_rows = conn.execute(
                "UPDATE ops.commands SET state = 'approved', next_check_at = NULL, "
                "updated_at = %s WHERE group_id = %s AND state = 'requested' "
                "RETURNING command_id, device_id, command", (now, group_id)).fetchall()
            members_rows.sort(key=lambda r: r[1])
            next_state(CommandState.REQUESTED, CommandEvent.APPROVE)  # the machine allows it
            audit.append_many(conn, [audit.Entry(
                approver, "command.approved", "command", cid,
                {"from": "requested", "to": "approved", "device_id": dev, "command": cmd,
                 "group_id": group_id, "approvers": list(approvals)})
                for cid, dev, cmd in members_rows], key=service.audit_key, ts=now)
            outbox.notify(conn)
        return _get(conn, group_id)


def resume_group(service: CommandService, group_id: str, actor: str, *, comment: str = ""
                 ) -> GroupRecord:
    """Resume a paused mass command; the failures so far are acknowledged."""
    now = service.clock()
    with service.transaction() as conn:
        group = _get(conn, group_id, for_update=True)
        if group.state != "paused":
            raise InvalidTransitionError(f"mass command {group_id} is {group.state}, not paused",
                                         where=f"group {group_id}")
        service._check_approver(conn, actor, "", (), f"group {group_id}")
        failed = _failed(group.members or {})
        conn.execute("UPDATE ops.command_groups SET state = 'running', paused_reason = '', "
                     "failures_acknowledged = %s, updated_at = %s WHERE group_id = %s",
                     (failed, now, group_id))
        audit.append(conn, actor=actor, action="group.resumed", object_type="group",
                     object_id=group_id, details={"failures_acknowledged": failed,
                                                  "comment": comment},
                     key=service.audit_key, ts=now)
        outbox.notify(conn)
        return _get(conn, group_id)


def cancel_group(service: CommandService, group_id: str, actor: str, *, reason: str = ""
                 ) -> GroupRecord:
    """Cancel a mass command: members not yet dispatched are cancelled; sent ones finish."""
    now = service.clock()
    with service.transaction() as conn:
        group = _get(conn, group_id, for_update=True)
        if group.state in ("completed", "cancelled"):
            raise InvalidTransitionError(f"mass command {group_id} is {group.state}",
                                         where=f"group {group_id}")
        n = 0
        for (member_id,) in conn.execute(
                "SELECT command_id FROM ops.commands WHERE group_id = %s AND state IN "
                "('requested', 'approved', 'quarantined') FOR UPDATE", (group_id,)).fetchall():
            transition(conn, get_command(conn, member_id), CommandEvent.CANCEL, actor=actor,
                       details={"group_id": group_id, "reason": reason}, result_detail=reason,
                       audit_key=service.audit_key, now=now)
            n += 1
        conn.execute("UPDATE ops.command_groups SET state = 'cancelled', finished_at = %s, "
                     "updated_at = %s WHERE group_id = %s", (now, now, group_id))
        audit.append(conn, actor=actor, action="group.cancelled", object_type="group",
                     object_id=group_id, details={"reason": reason, "members_cancelled": n},
                     key=service.audit_key, ts=now)
        return _get(conn, group_id)


def _failed(members: Mapping[str, int]) -> int:
    return sum(members.get(s, 0) for s in ("failed", "expired", "rejected"))


def advance_groups(service: CommandService, now: datetime) -> dict[str, str]:
    """Release waves, pause on failures, complete finished groups; returns what happened."""
    out: dict[str, str] = {}
    with service.transaction() as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT group_id FROM ops.command_groups WHERE state IN ('approved', 'running') "
            "ORDER BY requested_at FOR UPDATE SKIP LOCKED").fetchall()]
        for group_id in ids:
            out[group_id] = _advance(service, conn, group_id, now)
    return {k: v for k, v in out.items() if v}


def _advance(service: CommandService, conn: psycopg.Connection[Any], group_id: str,
             now: datetime) -> str:
    group = _get(conn, group_id)
    counts = {r[0]: int(r[1]) for r in conn.execute(
        "SELECT CASE WHEN state = 'approved' AND next_check_at IS NULL THEN 'held' "
        "ELSE state END, count(*) FROM ops.commands WHERE group_id = %s GROUP BY 1",
        (group_id,)).fetchall()}
    live = sum(counts.get(s, 0) for s in ("held", "approved", "queued", "sent", "requested",
                                          "quarantined"))
    if live == 0:
        conn.execute("UPDATE ops.command_groups SET state = 'completed', finished_at = %s, "
                     "updated_at = %s WHERE group_id = %s", (now, now, group_id))
        audit.append(conn, actor="system", action="group.completed", object_type="group",
                     object_id=group_id, details={"members": counts},
                     key=service.audit_key, ts=now)
        return "completed"
    if group.state == "approved":
        conn.execute("UPDATE ops.command_groups SET state = 'running', updated_at = %s "
                     "WHERE group_id = %s", (now, group_id))
    progress = WaveProgress(
        waiting=counts.get("held", 0),
        in_flight=sum(counts.get(s, 0) for s in ("approved", "queued", "sent")),
        confirmed=counts.get("confirmed", 0),
        failed=max(0, _failed(counts) - group.failures_acknowledged),
        last_wave_at=group.last_wave_at)
    decision = plan_wave(progress, now, service.limits)
    if decision.pause:
        conn.execute("UPDATE ops.command_groups SET state = 'paused', paused_reason = %s, "
                     "updated_at = %s WHERE group_id = %s", (decision.reason, now, group_id))
        audit.append(conn, actor="policy", action="group.paused", object_type="group",
                     object_id=group_id, details={"reason": decision.reason, "members": counts},
                     key=service.audit_key, ts=now)
        outbox.enqueue(conn, "alerts", Alert(
            alert_id=f"group-paused:{group_id}:{now.isoformat()}", object_type="command_group",
            object_id=group_id, severity="major", code="mass_command_paused",
            reason=f"mass command {group.command} paused: {decision.reason}; review the "
                   "failures, then resume or cancel it", ts=now, source="commands",
            attributes={"command": group.command, "requested_by": group.requested_by}))
        return "paused"
    if decision.dispatch <= 0:
        return ""
    released = conn.execute(
        "UPDATE ops.commands SET next_check_at = %s, updated_at = %s WHERE command_id IN ("
        "SELECT command_id FROM ops.commands WHERE group_id = %s AND state = 'approved' AND "
        "next_check_at IS NULL ORDER BY priority, device_id LIMIT %s FOR UPDATE) "
        "RETURNING command_id", (now, now, group_id, decision.dispatch)).fetchall()
    wave = group.waves + 1
    conn.execute("UPDATE ops.command_groups SET waves = %s, last_wave_at = %s, updated_at = %s "
                 "WHERE group_id = %s", (wave, now, now, group_id))
    audit.append(conn, actor="system", action="group.wave", object_type="group",
                 object_id=group_id,
                 details={"wave": wave, "released": len(released),
                          "commands": sorted(r[0] for r in released)},
                 key=service.audit_key, ts=now)
    outbox.notify(conn)
    return f"wave {wave}: {len(released)}"


def member_states(service: CommandService, group_id: str) -> dict[str, CommandState]:
    with service.transaction() as conn:
        return {r[0]: CommandState(r[1]) for r in conn.execute(
            "SELECT device_id, state FROM ops.commands WHERE group_id = %s", (group_id,))}


@dataclass(frozen=True)
class BulkOutcome:
    """What a command for several devices became: single commands, or one mass command."""

    commands: list[Any]
    group: GroupRecord | None
    refused: dict[str, str]


def submit_bulk(service: CommandService, *, device_ids: Sequence[str], command: str,
                params: Mapping[str, Any] | None, requested_by: str, origin: str = "api",
                reason: str = "", client_command_id: str | None = None,
                ttl: timedelta | None = None, priority: int = 5,
                regions: Sequence[str] | None = None) -> BulkOutcome:
    """One command for several devices. Up to ``mass_threshold`` devices it becomes one
    command each (each judged by the policy on its own; refusals are reported per device);
    beyond it, a mass command with a preview that two distinct approvers must approve."""
    devices = sorted(set(device_ids))
    if len(devices) > service.limits.mass_threshold:
        return BulkOutcome([], create_group(
            service, command=command, params=params, selector=Selector(device_ids=tuple(devices)),
            requested_by=requested_by, origin=origin, reason=reason,
            client_command_id=client_command_id, ttl=ttl, priority=priority, regions=regions),
            {})
    made: list[Any] = []
    refused: dict[str, str] = {}
    if regions is not None:
        with service.transaction() as conn:
            known = load_devices(conn, devices)
        for device_id in devices:
            if device_id not in known or known[device_id].region not in regions:
                refused[device_id] = f"no device '{device_id}' in your regions"
    for device_id in devices:
        if device_id in refused:
            continue
        client_id = f"{client_command_id}:{device_id}" if client_command_id else None
        try:
            made.append(service.submit(make_request(
                device_id=device_id, command=command, requested_by=requested_by,
                params=params, origin=origin, reason=reason, client_command_id=client_id,
                ttl=ttl, priority=priority, now=service.clock())))
        except CommandError as exc:
            refused[device_id] = exc.message
    return BulkOutcome(made, None, refused)
