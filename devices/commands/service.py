"""Submitting, approving, cancelling and releasing commands: the control plane's front door.

Strategy: every public method runs in one database transaction that reads the facts it
needs, applies the pure safety policy (:func:`devices.safety.decide`), writes the command and
its audit records, and — where a message must leave — an outbox row. The API, the CLI, the
``commands.requests`` consumer and service operations all call these methods, so every path
gets the same checks. Submission is idempotent: a repeated ``command_id`` or
``(requested_by, client_command_id)`` returns the stored command, and the same client id with
different content is refused as a conflict. A refusal by the safety policy is stored as a
``rejected`` command (audited, queryable) before the error is raised to the caller.

Per-operator work is serialised by an advisory lock on the operator's name, so two
concurrent submissions cannot both slip under the anomaly threshold.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from devices import audit
from devices.commands import outbox
from devices.commands.billing_link import enqueue_safety_control
from devices.commands.catalog import CommandSpec, SafetyClass, command_spec
from devices.commands.encoding import EncodedCommand, encode_for_device
from devices.commands.errors import (
    ApprovalError,
    CommandConflictError,
    CommandError,
    InvalidParametersError,
    InvalidTransitionError,
    SafetyPolicyError,
)
from devices.commands.facts import DeviceRecord, load_device
from devices.commands.lifecycle import CommandEvent, CommandState
from devices.commands.records import (
    CommandRecord,
    fingerprint,
    get_command,
    lock_command,
    transition,
)
from devices.commands.settings import CommandSettings
from devices.safety import HUMAN_ORIGINS, Decision, decide, exceeds_anomaly_threshold
from schemas.messages import Alert, CommandRequest

__all__ = [
    "CommandPage",
    "CommandService",
    "ConnectionSource",
    "DeviceUnavailableError",
    "QuarantineRecord",
    "direct_source",
    "make_request",
    "new_command_id",
]


class DeviceUnavailableError(CommandError):
    """The device exists but cannot take commands in its lifecycle state (removed)."""

    http_status = 409
    code = "device_unavailable"


class ConnectionSource(Protocol):
    """Where connections come from: a ``psycopg_pool.ConnectionPool`` or :func:`direct_source`."""

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...


@dataclass(frozen=True)
class _Direct:
    conninfo: str

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.conninfo) as conn:
            yield conn


def direct_source(conninfo: str) -> ConnectionSource:
    """A source opening one connection per use (CLI, tests); servers use a pool."""
    return _Direct(conninfo)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class QuarantineRecord:
    operator: str
    state: str
    reason: str
    since: datetime
    released_by: str | None
    released_at: datetime | None
    times: int

    def to_dict(self) -> dict[str, Any]:
        return {"operator": self.operator, "state": self.state, "reason": self.reason,
                "since": self.since.isoformat(), "released_by": self.released_by,
                "released_at": self.released_at.isoformat() if self.released_at else None,
                "times": self.times}


@dataclass(frozen=True)
class CommandPage:
    items: list[CommandRecord]
    next_cursor: str | None


_SUPPLY_CUT_COMMANDS = ("valve_close", "relay_trip")


class CommandService:
    """The command control plane over one database."""

    def __init__(self, source: ConnectionSource, settings: CommandSettings | None = None, *,
                 clock: Callable[[], datetime] = utc_now, timezone: str = "Asia/Shanghai"
                 ) -> None:
        self.source = source
        self.timezone = timezone
        self.settings = settings or CommandSettings()
        self.limits = self.settings.limits()
        self.audit_key = self.settings.audit_key_bytes()
        self.clock = clock

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self.source.connection() as conn, conn.transaction():
            yield conn

    # ------------------------------------------------------------------ submission

    def submit(self, request: CommandRequest, *, operation_id: str | None = None,
               parent_command_id: str | None = None) -> CommandRecord:
        """Validate, judge and store one command; return it (existing one on a retry).

        ``operation_id`` ties the command to a service operation step; ``parent_command_id``
        makes it the read-back of another command. A refusal by the safety policy is stored
        (state ``rejected``) and then raised as :class:`SafetyPolicyError` with its
        ``command_id``.
        """
        with self.transaction() as conn:
            record, refusal = self.submit_in(conn, request, operation_id=operation_id,
                                             parent_command_id=parent_command_id)
        if refusal is not None:
            raise refusal
        return record

    def submit_in(self, conn: psycopg.Connection[Any], request: CommandRequest, *,
                  operation_id: str | None = None, parent_command_id: str | None = None
                  ) -> tuple[CommandRecord, SafetyPolicyError | None]:
        """:meth:`submit` inside the caller's transaction; a policy refusal is returned with
        the stored ``rejected`` record instead of raised (commit to keep it)."""
        spec = command_spec(request.command)
        params = spec.validate(request.params)
        now = self.clock()
        refusal: SafetyPolicyError | None = None
        existing = self._existing(conn, request, params.canonical())
        if existing is not None:
            return existing, None
        device = load_device(conn, request.device_id)
        if device.status == "removed":
            raise DeviceUnavailableError(
                f"device {device.device_id} is removed and takes no commands",
                where=f"device {device.device_id}",
                hint="commands go to installed or active devices; check the device id")
        self._lock_operator(conn, request.requested_by)
        try:
            decision = decide(spec, params, device.facts, requested_by=request.requested_by,
                              origin=request.origin, mass=request.group_id is not None,
                              limits=self.limits)
        except SafetyPolicyError as exc:
            refusal = exc
            decision = Decision(command=spec.name, params=params.canonical(),
                                approvals_required=0)
        encoded = None if refusal is not None else self.encode(device, decision, now)
        # The audit records of this submission (requested, then approved, quarantined or
        # rejected) are appended together at the end: one lock of the chain head.
        entries: list[audit.Entry] = []
        record = self._insert(conn, request, spec, decision, device, now, encoded=encoded,
                              operation_id=operation_id, parent_command_id=parent_command_id,
                              audit_entries=entries)
        if refusal is not None:
            record = transition(conn, record, CommandEvent.REJECT, actor="policy",
                                details={"rule": refusal.context.get("rule", ""),
                                         "reason": refusal.message},
                                result_detail=refusal.message, error_code="safety_policy",
                                audit_entries=entries, now=now)
            audit.append_many(conn, entries, key=self.audit_key, ts=now)
            refusal.context["command_id"] = record.command_id
            return record, refusal
        record = self._after_insert(conn, record, spec, decision, now, entries)
        audit.append_many(conn, entries, key=self.audit_key, ts=now)
        return record, None

    def _existing(self, conn: psycopg.Connection[Any], request: CommandRequest,
                  params: Mapping[str, Any]) -> CommandRecord | None:
        digest = fingerprint(request.device_id, request.command, params, request.group_id)
        row = conn.execute(
            "SELECT command_id FROM ops.commands WHERE command_id = %s OR "
            "(requested_by = %s AND client_command_id = %s) LIMIT 1",
            (request.command_id, request.requested_by, request.client_command_id)).fetchone()
        if row is None:
            return None
        found = get_command(conn, row[0])
        if found.fingerprint != digest or found.requested_by != request.requested_by:
            raise CommandConflictError(
                f"command id '{request.client_command_id or request.command_id}' was already "
                f"used for a different request ({found.requested_command} on "
                f"{found.device_id})",
                where=f"command {found.command_id}",
                hint="use a new client command id for a new request",
                command_id=found.command_id)
        return found

    def _lock_operator(self, conn: psycopg.Connection[Any], operator: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"operator:{operator}",))

    def encode(self, device: DeviceRecord, decision: Decision, now: datetime
               ) -> EncodedCommand:
        """The encoder's form of the decided command for ``device`` (refuses what its
        protocol cannot carry). A top-up's purchase sequence is assigned at first dispatch."""
        binding = device.facts.profile.binding(decision.command)
        return encode_for_device(binding.handler, decision.command, decision.params,
                                 address=device.address, options=binding.options,
                                 medium=device.medium, timezone=self.timezone, now=now)

    def _values(self, request: CommandRequest, spec: CommandSpec, decision: Decision,
                device: DeviceRecord, now: datetime, *, encoded: EncodedCommand | None,
                operation_id: str | None, parent_command_id: str | None
                ) -> tuple[dict[str, Any], audit.Entry]:
        """The row of a new command and its ``command.requested`` audit record."""
        effective = command_spec(decision.command)
        expires_at = request.expires_at or (now + spec.default_ttl)
        binding = device.facts.profile.bindings.get(decision.command)
        params = spec.validate(request.params).canonical()
        profile_attempts = device.facts.profile.max_attempts
        values: dict[str, Any] = {
            "command_id": request.command_id,
            "client_command_id": request.client_command_id,
            "requested_by": request.requested_by,
            "origin": request.origin,
            "device_id": device.device_id,
            "device_type": device.device_type,
            "protocol": device.protocol,
            "address": device.address,
            "region": device.region,
            "requested_command": spec.name,
            "command": decision.command,
            "params": Jsonb(dict(decision.params)),
            "safety_class": effective.safety_class.value,
            "state": CommandState.REQUESTED.value,
            "approvals_required": decision.approvals_required,
            "policy_reasons": Jsonb(list(decision.reasons)),
            "readback": decision.readback,
            "sets_safety_lock": decision.sets_safety_lock,
            "group_id": request.group_id,
            "operation_id": operation_id,
            "parent_command_id": parent_command_id,
            "purpose": "readback" if parent_command_id else "command",
            "reason": request.reason,
            "priority": request.priority,
            "fingerprint": fingerprint(request.device_id, request.command, params,
                                       request.group_id),
            "requested_at": now,
            "expires_at": expires_at,
            "max_attempts": min(self.settings.max_attempts, profile_attempts)
            if profile_attempts else self.settings.max_attempts,
            "delivery": device.facts.profile.delivery,
            "reply_timeout_s": device.facts.profile.reply_timeout_s,
            "handler": binding.handler if binding else "",
            "wire_command": encoded.command if encoded else "",
            "wire_params": Jsonb(_without_sequence(encoded.params) if encoded else {}),
            "preview_hex": encoded.preview_hex if encoded else "",
            "updated_at": now,
        }
        entry = audit.Entry(request.requested_by, "command.requested", "command",
                            request.command_id,
                            {"device_id": device.device_id, "command": decision.command,
                             "requested_command": spec.name, "params": dict(decision.params),
                             "origin": request.origin, "reason": request.reason,
                             "approvals_required": decision.approvals_required,
                             "policy": list(decision.reasons), "group_id": request.group_id,
                             "expires_at": expires_at, "region": device.region})
        return values, entry

    def _insert(self, conn: psycopg.Connection[Any], request: CommandRequest, spec: CommandSpec,
                decision: Decision, device: DeviceRecord, now: datetime, *,
                encoded: EncodedCommand | None = None, operation_id: str | None = None,
                parent_command_id: str | None = None,
                audit_entries: list[audit.Entry] | None = None) -> CommandRecord:
        values, entry = self._values(request, spec, decision, device, now, encoded=encoded,
                                     operation_id=operation_id,
                                     parent_command_id=parent_command_id)
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(f"INSERT INTO ops.commands ({', '.join(values)}) VALUES "
                              f"({', '.join(['%s'] * len(values))}) RETURNING *",
                              list(values.values())).fetchone()
        assert row is not None
        if audit_entries is not None:
            audit_entries.append(entry)
        else:
            audit.append_many(conn, [entry], key=self.audit_key, ts=now)
        return CommandRecord.from_row(row)

    def _insert_many(self, conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> None:
        """Insert new command rows in one pipelined batch (mass commands)."""
        if not rows:
            return
        columns = list(rows[0])
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO ops.commands ({', '.join(columns)}) VALUES "
                            f"({', '.join(['%s'] * len(columns))})",
                            [[r[c] for c in columns] for r in rows])

    def _after_insert(self, conn: psycopg.Connection[Any], record: CommandRecord,
                      spec: CommandSpec, decision: Decision, now: datetime,
                      entries: list[audit.Entry]) -> CommandRecord:
        if decision.sets_safety_lock:
            audit.append_many(conn, entries, key=self.audit_key, ts=now)  # keep the order
            entries.clear()
            self._set_safety_lock(conn, record, now)
        if record.group_id is not None:
            return record  # members wait for the group's approvals and waves
        if self._must_quarantine(conn, record, spec, now, entries):
            return transition(conn, record, CommandEvent.QUARANTINE, actor="policy",
                              details={"operator": record.requested_by},
                              audit_entries=entries, now=now)
        if decision.approvals_required == 0:
            record = transition(conn, record, CommandEvent.APPROVE, actor="policy",
                                details={"approvals": 0}, next_check_at=now,
                                audit_entries=entries, now=now)
            outbox.notify(conn)
        return record

    # ------------------------------------------------------------------ safety locks

    def _set_safety_lock(self, conn: psycopg.Connection[Any], record: CommandRecord,
                         now: datetime) -> None:
        cause = str(record.params.get("safety_cause") or "safety")
        inserted = conn.execute(
            "INSERT INTO ops.safety_locks (device_id, cause, command_id, locked_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (device_id) WHERE cleared_at IS NULL "
            "DO NOTHING RETURNING lock_id",
            (record.device_id, cause, record.command_id, now)).fetchone()
        if inserted is not None:
            audit.append(conn, actor=record.requested_by, action="safety_lock.set",
                         object_type="device", object_id=record.device_id,
                         details={"cause": cause, "command_id": record.command_id},
                         key=self.audit_key, ts=now)
            # billing must not arm this meter's valve after a top-up either
            enqueue_safety_control(conn, record.device_id, "safety_lock",
                                   command_id=record.command_id, actor=record.requested_by,
                                   reason=cause, now=now)

    def record_safety_close(self, device_id: str, cause: str, *, source: str,
                            actor: str = "device") -> bool:
        """A device reported closing its own valve for a safety cause: lock its reopening."""
        now = self.clock()
        with self.transaction() as conn:
            row = conn.execute(
                "INSERT INTO ops.safety_locks (device_id, cause, source, locked_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (device_id) WHERE cleared_at IS NULL "
                "DO NOTHING RETURNING lock_id", (device_id, cause, source, now)).fetchone()
            if row is None:
                return False
            audit.append(conn, actor=actor, action="safety_lock.set", object_type="device",
                         object_id=device_id, details={"cause": cause, "source": source},
                         key=self.audit_key, ts=now)
            return True

    # ------------------------------------------------------------------ quarantine

    def _must_quarantine(self, conn: psycopg.Connection[Any], record: CommandRecord,
                         spec: CommandSpec, now: datetime,
                         entries: list[audit.Entry] | None = None) -> bool:
        if record.origin not in HUMAN_ORIGINS or spec.safety_class is SafetyClass.READ:
            return False
        # One round trip: the operator's quarantine state, and their state-changing commands
        # in the window (counted from a release, if that is later).
        row = conn.execute(
            "WITH q AS (SELECT state, released_at FROM ops.operator_quarantine "
            "WHERE operator = %(op)s) "
            "SELECT (SELECT state FROM q), (SELECT count(*) FROM (SELECT 1 FROM ops.commands "
            "WHERE requested_by = %(op)s AND origin = ANY (%(origins)s) "
            "AND safety_class <> 'read' AND purpose = 'command' AND command_id <> %(id)s "
            "AND requested_at > GREATEST(%(since)s, COALESCE((SELECT released_at FROM q), "
            "%(since)s)) LIMIT %(enough)s) recent)",
            {"op": record.requested_by, "origins": sorted(HUMAN_ORIGINS),
             "id": record.command_id, "since": now - self.limits.anomaly_window,
             # counting past the threshold tells nothing more
             "enough": self.limits.anomaly_max_commands + 1}).fetchone()
        assert row is not None
        if row[0] == "quarantined":
            return True
        recent = int(row[1])
        if not exceeds_anomaly_threshold(recent, spec, record.origin, self.limits):
            return False
        reason = (f"{recent + 1} state-changing commands within "
                  f"{int(self.limits.anomaly_window.total_seconds())} s (limit "
                  f"{self.limits.anomaly_max_commands})")
        conn.execute(
            "INSERT INTO ops.operator_quarantine (operator, state, reason, since) "
            "VALUES (%s, 'quarantined', %s, %s) ON CONFLICT (operator) DO UPDATE SET "
            "state = 'quarantined', reason = EXCLUDED.reason, since = EXCLUDED.since, "
            "released_by = NULL, released_at = NULL, "
            "times = ops.operator_quarantine.times + 1",
            (record.requested_by, reason, now))
        if entries:  # the request's own records come first
            audit.append_many(conn, entries, key=self.audit_key, ts=now)
            entries.clear()
        audit.append(conn, actor="policy", action="operator.quarantined", object_type="operator",
                     object_id=record.requested_by,
                     details={"reason": reason, "command_id": record.command_id},
                     key=self.audit_key, ts=now)
        outbox.enqueue(conn, "alerts", Alert(
            alert_id=f"quarantine:{record.requested_by}:{now.isoformat()}",
            object_type="operator", object_id=record.requested_by, severity="major",
            code="operator_quarantined", reason=f"commands of {record.requested_by} held: "
                                                f"{reason}; an approver must release them",
            ts=now, source="commands", attributes={"command_id": record.command_id}))
        # Hold what the operator already has waiting, too.
        for (held_id,) in conn.execute(
                "SELECT command_id FROM ops.commands WHERE requested_by = %s AND state IN "
                "('requested', 'approved') AND group_id IS NULL AND command_id <> %s AND "
                "safety_class <> 'read' FOR UPDATE", (record.requested_by, record.command_id)
        ).fetchall():
            held = get_command(conn, held_id)
            transition(conn, held, CommandEvent.QUARANTINE, actor="policy",
                       details={"operator": record.requested_by}, next_check_at=None,
                       audit_key=self.audit_key, now=now)
        return True

    def quarantine_of(self, operator: str) -> QuarantineRecord | None:
        with self.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM ops.operator_quarantine WHERE operator = %s",
                              (operator,)).fetchone()
        return QuarantineRecord(**row) if row else None

    def quarantined_operators(self) -> list[QuarantineRecord]:
        with self.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("SELECT * FROM ops.operator_quarantine WHERE state = "
                               "'quarantined' ORDER BY since").fetchall()
        return [QuarantineRecord(**r) for r in rows]

    def release_operator(self, operator: str, released_by: str, *, cancel_held: bool = False,
                         comment: str = "") -> list[CommandRecord]:
        """Lift a quarantine; held commands continue (or are cancelled). Returns them."""
        if released_by == operator:
            raise ApprovalError(f"{operator} cannot release their own quarantine",
                                where=f"operator {operator}",
                                hint="another approver must review the commands and release")
        now = self.clock()
        with self.transaction() as conn:
            self._lock_operator(conn, operator)
            row = conn.execute("SELECT state FROM ops.operator_quarantine WHERE operator = %s "
                               "FOR UPDATE", (operator,)).fetchone()
            if row is None or row[0] != "quarantined":
                raise InvalidTransitionError(f"operator {operator} is not quarantined",
                                             where=f"operator {operator}")
            conn.execute("UPDATE ops.operator_quarantine SET state = 'released', "
                         "released_by = %s, released_at = %s WHERE operator = %s",
                         (released_by, now, operator))
            audit.append(conn, actor=released_by, action="operator.released",
                         object_type="operator", object_id=operator,
                         details={"cancel_held": cancel_held, "comment": comment},
                         key=self.audit_key, ts=now)
            out = []
            for (held_id,) in conn.execute(
                    "SELECT command_id FROM ops.commands WHERE requested_by = %s AND state = "
                    "'quarantined' ORDER BY requested_at FOR UPDATE", (operator,)).fetchall():
                held = get_command(conn, held_id)
                if cancel_held:
                    out.append(transition(conn, held, CommandEvent.CANCEL, actor=released_by,
                                          details={"why": "quarantine released with cancel"},
                                          audit_key=self.audit_key, now=now))
                    continue
                held = transition(conn, held, CommandEvent.RELEASE, actor=released_by,
                                  details={}, audit_key=self.audit_key, now=now)
                if len(held.approvals) >= held.approvals_required:
                    held = transition(conn, held, CommandEvent.APPROVE, actor="policy",
                                      details={"approvals": len(held.approvals)},
                                      next_check_at=now, audit_key=self.audit_key, now=now)
                out.append(held)
            outbox.notify(conn)
            return out

    # ------------------------------------------------------------------ approvals

    def approve(self, command_id: str, approver: str, *, comment: str = "") -> CommandRecord:
        """Add ``approver``'s approval; the command is approved when enough distinct ones are in.

        The requester never approves their own command, nobody approves twice, and a person
        in quarantine approves nothing.
        """
        now = self.clock()
        with self.transaction() as conn:
            record = lock_command(conn, command_id)
            if record.group_id is not None:
                raise ApprovalError(
                    f"command {command_id} belongs to mass command {record.group_id}",
                    where=f"command {command_id}",
                    hint=f"approve the mass command: `unimeter command group approve "
                         f"{record.group_id}`")
            if record.state is CommandState.QUARANTINED:
                raise ApprovalError(
                    f"command {command_id} is held: {record.requested_by} is quarantined",
                    where=f"command {command_id}",
                    hint=f"review and release the operator first: `unimeter command release "
                         f"{record.requested_by}`")
            if record.state is not CommandState.REQUESTED:
                raise InvalidTransitionError(
                    f"command {command_id} is {record.state.value} and needs no approval",
                    where=f"command {command_id}")
            self._check_approver(conn, approver, record.requested_by, record.approvals,
                                 f"command {command_id}")
            conn.execute("INSERT INTO ops.command_approvals (command_id, approver, approved_at, "
                         "comment) VALUES (%s, %s, %s, %s)", (command_id, approver, now, comment))
            approvals = (*record.approvals, approver)
            audit.append(conn, actor=approver, action="command.approval", object_type="command",
                         object_id=command_id,
                         details={"approval": len(approvals),
                                  "required": record.approvals_required, "comment": comment},
                         key=self.audit_key, ts=now)
            record = get_command(conn, command_id)
            if len(approvals) >= record.approvals_required:
                record = transition(conn, record, CommandEvent.APPROVE, actor=approver,
                                    details={"approvers": list(approvals)}, next_check_at=now,
                                    audit_key=self.audit_key, now=now)
                outbox.notify(conn)
            return record

    def _check_approver(self, conn: psycopg.Connection[Any], approver: str, requester: str,
                        approvals: Sequence[str], where: str) -> None:
        if approver == requester:
            raise ApprovalError(f"{approver} requested this and cannot approve it",
                                where=where, hint="a second person must approve (four eyes)")
        if approver in approvals:
            raise ApprovalError(f"{approver} has already approved this", where=where,
                                hint="approvals must come from distinct people")
        q = conn.execute("SELECT 1 FROM ops.operator_quarantine WHERE operator = %s AND "
                         "state = 'quarantined'", (approver,)).fetchone()
        if q is not None:
            raise ApprovalError(f"{approver} is quarantined and cannot approve", where=where,
                                hint="another approver must act")

    # ------------------------------------------------------------------ cancel

    def cancel(self, command_id: str, actor: str, *, reason: str = "") -> CommandRecord:
        now = self.clock()
        with self.transaction() as conn:
            record = lock_command(conn, command_id)
            if record.group_id is not None and actor != "group":
                raise InvalidTransitionError(
                    f"command {command_id} belongs to mass command {record.group_id}",
                    where=f"command {command_id}", hint="cancel the mass command instead")
            return transition(conn, record, CommandEvent.CANCEL, actor=actor,
                              details={"reason": reason}, result_detail=reason,
                              audit_key=self.audit_key, now=now)

    # ------------------------------------------------------------------ queries

    def get(self, command_id: str) -> CommandRecord:
        with self.transaction() as conn:
            return get_command(conn, command_id)

    def history(self, command_id: str) -> list[audit.AuditRecord]:
        """The audit records of one command, oldest first."""
        with self.source.connection() as conn:
            get_command(conn, command_id)
            out = list(audit.records(conn, object_type="command", object_id=command_id))
            conn.commit()
            return out

    def list(self, *, device_id: str | None = None, state: str | None = None,
             requested_by: str | None = None, group_id: str | None = None,
             operation_id: str | None = None, regions: Sequence[str] | None = None,
             since: datetime | None = None, until: datetime | None = None,
             limit: int = 100, cursor: str | None = None) -> CommandPage:
        """Commands newest first, filtered; ``regions`` restricts to those regions' devices.

        Pagination is by keyset (``cursor`` from the previous page), stable under inserts.
        """
        where: list[str] = ["true"]
        args: list[Any] = []
        for column, value in (("device_id", device_id), ("state", state),
                              ("requested_by", requested_by), ("group_id", group_id),
                              ("operation_id", operation_id)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        if regions is not None:
            where.append("region = ANY (%s)")
            args.append(list(regions))
        if since is not None:
            where.append("requested_at >= %s")
            args.append(since)
        if until is not None:
            where.append("requested_at < %s")
            args.append(until)
        if cursor:
            at, sep, cid = cursor.partition("|")
            try:
                after = datetime.fromisoformat(at)
            except ValueError:
                after = None
            if not sep or after is None or after.tzinfo is None:
                raise InvalidParametersError("the cursor is not one this service gave",
                                             where="cursor",
                                             hint="pass next_cursor of the previous page")
            where.append("(requested_at, command_id) < (%s, %s)")
            args.extend([after, cid])
        args.append(limit + 1)
        with self.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT * FROM ops.commands WHERE {' AND '.join(where)} "
                "ORDER BY requested_at DESC, command_id DESC LIMIT %s", args).fetchall()
            ids = [r["command_id"] for r in rows[:limit]]
            approvals: dict[str, list[str]] = {i: [] for i in ids}
            for cid, approver in conn.execute(
                    "SELECT command_id, approver FROM ops.command_approvals WHERE command_id = "
                    "ANY (%s) ORDER BY approved_at", (ids,)).fetchall():
                approvals[cid].append(approver)
        items = [CommandRecord.from_row(r, tuple(approvals[r["command_id"]]))
                 for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = f"{last.requested_at.isoformat()}|{last.command_id}"
        return CommandPage(items, next_cursor)


def new_command_id() -> str:
    return uuid.uuid4().hex


def make_request(*, device_id: str, command: str, requested_by: str,
                 params: Mapping[str, Any] | None = None, origin: str = "api",
                 client_command_id: str | None = None, reason: str = "",
                 ttl: timedelta | None = None, priority: int = 5, group_id: str | None = None,
                 command_id: str | None = None, now: datetime | None = None) -> CommandRequest:
    """A :class:`CommandRequest` with a fresh id (what the API and the CLI submit)."""
    at = now or utc_now()
    return CommandRequest(
        command_id=command_id or new_command_id(), device_id=device_id, command=command,
        requested_by=requested_by, requested_at=at, params=dict(params or {}),
        client_command_id=client_command_id, origin=origin, reason=reason,
        expires_at=at + ttl if ttl else None, priority=priority, group_id=group_id)


def _without_sequence(params: Mapping[str, Any]) -> dict[str, Any]:
    # The purchase sequence of a top-up is the meter's next one at first dispatch.
    return {k: v for k, v in params.items() if k != "purchase_sequence"}
