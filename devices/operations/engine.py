"""Running service operations: persisted step state, resumption, compensation.

Strategy: :meth:`OperationService.advance` is idempotent and can be called any number of
times, by any process, after any crash: it locks the operation row, looks at the current
step's stored state and moves as far as it can in one transaction —

* a **ledger** step runs inside a savepoint; on success its undo record is stored with it;
* a **command** step submits its command through :meth:`CommandService.submit_in` in the
  same transaction, with the client command id ``op:<operation>:<step>`` (so a replay finds
  the same command), then *waits*; a later call sees the command confirmed (the reply is
  kept in the operation's context when the step says so) or finished otherwise;
* a failed step turns the operation to **compensating**: done steps are undone newest first
  (ledger undo records; compensation commands, waited for like any command), and the
  operation ends **compensated** — or **failed** when a compensation itself fails, with an
  alert, because then a person must look at the meter.

Facts (supported commands, billing mode, current tariff) are read fresh for every step, so a
step after a ledger change (a swapped meter, a transferred account) sees the new state.
``unimeter command serve`` advances every live operation in its sweep; the API and CLI
advance an operation right after starting it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from devices import audit
from devices.commands import outbox
from devices.commands.errors import (
    CommandError,
    CommandNotFoundError,
    InvalidParametersError,
    InvalidTransitionError,
)
from devices.commands.facts import load_devices
from devices.commands.lifecycle import CommandState
from devices.commands.records import fingerprint, get_command
from devices.commands.service import CommandService, make_request
from devices.ledger import acting_as
from devices.operations.definitions import OPERATIONS, OperationKind, Step, StepContext
from devices.operations.ledger_actions import run_action, undo
from schemas.messages import Alert

__all__ = ["OperationRecord", "OperationService", "StepRecord"]

_TERMINAL = ("completed", "compensated", "failed")


@dataclass(frozen=True)
class StepRecord:
    step_no: int
    name: str
    kind: str
    state: str
    device_id: str | None
    command_id: str | None
    compensation_command_id: str | None
    error: str
    result: Mapping[str, Any]
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class OperationRecord:
    operation_id: str
    client_operation_id: str | None
    kind: str
    params: Mapping[str, Any]
    context: Mapping[str, Any]
    state: str
    current_step: int
    requested_by: str
    origin: str
    reason: str
    region: str | None
    error: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: tuple[StepRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for container in (out, *out["steps"]):
            for key, value in container.items():
                if isinstance(value, datetime):
                    container[key] = value.isoformat()
        return out


class OperationService:
    """Service operations over the command service's database."""

    def __init__(self, commands: CommandService) -> None:
        self.commands = commands

    @property
    def _key(self) -> bytes | None:
        return self.commands.audit_key

    # ------------------------------------------------------------------ start

    def start(self, kind: str, params: Mapping[str, Any], *, requested_by: str,
              origin: str = "api", reason: str = "", client_operation_id: str | None = None,
              regions: Sequence[str] | None = None) -> OperationRecord:
        """Validate and store an operation, then advance it as far as it goes now."""
        definition = _kind(kind)
        try:
            typed = definition.params_model.model_validate(dict(params))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors())
            raise InvalidParametersError(
                f"invalid parameters for operation '{kind}': {problems}",
                where=f"operation {kind}",
                hint="parameters: " + ", ".join(definition.params_model.model_fields)) from None
        values = typed.model_dump(mode="json")
        now = self.commands.clock()
        digest = fingerprint(kind, values)
        with self.commands.transaction() as conn:
            if client_operation_id is not None:
                row = conn.execute(
                    "SELECT operation_id, fingerprint FROM ops.service_operations WHERE "
                    "requested_by = %s AND client_operation_id = %s",
                    (requested_by, client_operation_id)).fetchone()
                if row is not None:
                    if row[1] != digest:
                        raise CommandError(
                            f"client operation id '{client_operation_id}' was used for "
                            "another operation", where=f"operation {row[0]}",
                            hint="use a new client operation id")
                    return self._get(conn, row[0])
            device_ids = [str(values[d]) for d in definition.devices]
            devices = load_devices(conn, device_ids)
            missing = [d for d in device_ids if d not in devices]
            if missing:
                raise CommandNotFoundError(f"no meter {', '.join(missing)} in the ledger",
                                           where="operation parameters",
                                           hint="import the meter first")
            region_of = [devices[d].region for d in device_ids]
            if kind == "install":
                # The meter comes from the store (no place yet): the place decides.
                row = conn.execute("SELECT path[1] FROM ledger.locations WHERE location_id = "
                                   "%s", (values["location_id"],)).fetchone()
                region_of = [row[0] if row else None]
            placed = [r for r in region_of if r is not None]
            if regions is not None and (not placed or any(r not in regions for r in placed)):
                raise CommandNotFoundError(f"no meter {', '.join(device_ids)} in your regions",
                                           where="operation parameters")
            operation_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO ops.service_operations (operation_id, client_operation_id, kind, "
                "params, state, requested_by, origin, reason, region, fingerprint, created_at, "
                "updated_at) VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s, %s, %s, %s)",
                (operation_id, client_operation_id, kind, Jsonb(values), requested_by, origin,
                 reason, placed[0] if placed else None, digest, now, now))
            for n, step in enumerate(definition.steps):
                conn.execute(
                    "INSERT INTO ops.service_operation_steps (operation_id, step_no, name, kind,"
                    " state, device_id) VALUES (%s, %s, %s, %s, 'pending', %s)",
                    (operation_id, n, step.name, step.kind, str(values[step.device])))
            audit.append(conn, actor=requested_by, action="operation.started",
                         object_type="operation", object_id=operation_id,
                         details={"kind": kind, "params": values, "reason": reason,
                                  "steps": [s.name for s in definition.steps]},
                         key=self._key, ts=now)
        return self.advance(operation_id)

    # ------------------------------------------------------------------ advance

    def advance(self, operation_id: str) -> OperationRecord:
        """Move the operation as far as it can go now (idempotent, resumable)."""
        with self.commands.transaction() as conn:
            row = conn.execute("SELECT state FROM ops.service_operations WHERE operation_id = %s "
                               "FOR UPDATE", (operation_id,)).fetchone()
            if row is None:
                raise _not_found(operation_id)
            op = self._get(conn, operation_id)
            if op.state == "running":
                self._run(conn, op)
            elif op.state == "compensating":
                self._compensate(conn, op)
            return self._get(conn, operation_id)

    def advance_due(self, limit: int = 200) -> int:
        """Advance every live operation (called by the serve sweep); returns how many moved."""
        with self.commands.transaction() as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT operation_id FROM ops.service_operations WHERE state IN ('running', "
                "'compensating') ORDER BY updated_at LIMIT %s", (limit,)).fetchall()]
        moved = 0
        for operation_id in ids:
            with self.commands.transaction() as conn:
                locked = conn.execute(
                    "SELECT updated_at FROM ops.service_operations WHERE operation_id = %s AND "
                    "state IN ('running', 'compensating') FOR UPDATE SKIP LOCKED",
                    (operation_id,)).fetchone()
                if locked is None:
                    continue
                op = self._get(conn, operation_id)
                (self._run if op.state == "running" else self._compensate)(conn, op)
                if self._get(conn, operation_id).updated_at != locked[0]:
                    moved += 1
        return moved

    def cancel(self, operation_id: str, actor: str, *, reason: str = "") -> OperationRecord:
        """Stop a running operation and undo its done steps."""
        now = self.commands.clock()
        with self.commands.transaction() as conn:
            op = self._get(conn, operation_id, for_update=True)
            if op.state != "running":
                raise InvalidTransitionError(f"operation {operation_id} is {op.state}",
                                             where=f"operation {operation_id}")
            self._set(conn, op, state="compensating", error=f"cancelled by {actor}: {reason}",
                      now=now)
            audit.append(conn, actor=actor, action="operation.cancelled",
                         object_type="operation", object_id=operation_id,
                         details={"reason": reason}, key=self._key, ts=now)
            self._compensate(conn, self._get(conn, operation_id))
            return self._get(conn, operation_id)

    # ------------------------------------------------------------------ forward

    def _context(self, conn: psycopg.Connection[Any], op: OperationRecord) -> StepContext:
        definition = _kind(op.kind)
        ids = [str(op.params[d]) for d in definition.devices]
        return StepContext(params=op.params, context=op.context,
                           devices=_device_facts(conn, ids, self.commands.clock()),
                           operation_id=op.operation_id)

    def _run(self, conn: psycopg.Connection[Any], op: OperationRecord) -> None:
        definition = _kind(op.kind)
        while op.state == "running":
            if op.current_step >= len(definition.steps):
                now = self.commands.clock()
                self._set(conn, op, state="completed", finished_at=now, now=now)
                audit.append(conn, actor="system", action="operation.completed",
                             object_type="operation", object_id=op.operation_id,
                             details={"context": dict(op.context)}, key=self._key, ts=now)
                return
            step = definition.steps[op.current_step]
            record = op.steps[op.current_step]
            outcome = self._step(conn, op, step, record)
            if outcome == "wait":
                return
            op = self._get(conn, op.operation_id)

    def _step(self, conn: psycopg.Connection[Any], op: OperationRecord, step: Step,
              record: StepRecord) -> str:
        now = self.commands.clock()
        if record.state == "pending":
            ctx = self._context(conn, op)
            if step.when is not None and not step.when(ctx):
                self._step_set(conn, op, record, state="skipped", finished_at=now)
                self._set(conn, op, current_step=op.current_step + 1, now=now)
                return "next"
            if step.kind == "ledger":
                try:
                    with conn.transaction():
                        acting_as(conn, op.requested_by,
                                  f"service operation {op.kind} {op.operation_id}")
                        saved = run_action(conn, step.action, op.params)
                except (CommandError, psycopg.Error) as exc:
                    return self._fail(conn, op, record, _message(exc), now)
                self._step_set(conn, op, record, state="done", undo=saved, started_at=now,
                               finished_at=now)
                self._done(conn, op, record, {}, now)
                return "next"
            return self._submit(conn, op, step, record, ctx, now)
        if record.state == "waiting":
            command = get_command(conn, record.command_id or "")
            if command.state is CommandState.CONFIRMED:
                context = dict(op.context)
                if step.remember:
                    context[step.remember] = dict(command.reply)
                self._step_set(conn, op, record, state="done", result=dict(command.reply),
                               finished_at=now)
                self._set(conn, op, context=context, now=now)
                self._done(conn, op, record, dict(command.reply), now)
                return "next"
            if command.state.value in ("failed", "expired", "cancelled", "rejected"):
                return self._fail(conn, op, record, f"{step.action} {command.state.value}: "
                                  f"{command.result_detail}", now)
            return "wait"
        return "wait"  # pragma: no cover - done/skipped steps are behind current_step

    def _submit(self, conn: psycopg.Connection[Any], op: OperationRecord, step: Step,
                record: StepRecord, ctx: StepContext, now: datetime) -> str:
        params = step.params(ctx) if step.params else {}
        request = make_request(
            device_id=str(op.params[step.device]), command=step.action,
            requested_by=op.requested_by, params=params, origin="operation",
            client_command_id=f"op:{op.operation_id}:{record.step_no}",
            reason=f"{op.kind}: {step.name}", priority=4, now=now)
        try:
            with conn.transaction():
                command, refusal = self.commands.submit_in(conn, request,
                                                           operation_id=op.operation_id)
        except CommandError as exc:
            return self._fail(conn, op, record, exc.message, now)
        self._step_set(conn, op, record, state="waiting", command_id=command.command_id,
                       started_at=now)
        outbox.notify(conn)
        if refusal is not None:
            return self._fail(conn, op, record, refusal.message, now)
        return "wait"

    def _done(self, conn: psycopg.Connection[Any], op: OperationRecord, record: StepRecord,
              result: Mapping[str, Any], now: datetime) -> None:
        self._set(conn, op, current_step=record.step_no + 1, now=now)
        audit.append(conn, actor="system", action="operation.step_done",
                     object_type="operation", object_id=op.operation_id,
                     details={"step": record.step_no, "name": record.name,
                              "command_id": record.command_id, "result": dict(result)},
                     key=self._key, ts=now)

    def _fail(self, conn: psycopg.Connection[Any], op: OperationRecord, record: StepRecord,
              error: str, now: datetime) -> str:
        self._step_set(conn, op, record, state="failed", error=error, finished_at=now)
        self._set(conn, op, state="compensating",
                  error=f"step {record.step_no} ({record.name}) failed: {error}", now=now)
        audit.append(conn, actor="system", action="operation.step_failed",
                     object_type="operation", object_id=op.operation_id,
                     details={"step": record.step_no, "name": record.name, "error": error},
                     key=self._key, ts=now)
        self._compensate(conn, self._get(conn, op.operation_id))
        return "wait"

    # ------------------------------------------------------------------ compensation

    def _compensate(self, conn: psycopg.Connection[Any], op: OperationRecord) -> None:
        definition = _kind(op.kind)
        now = self.commands.clock()
        for record in sorted(op.steps, key=lambda s: s.step_no, reverse=True):
            step = definition.steps[record.step_no]
            if record.state == "compensating":
                command = get_command(conn, record.compensation_command_id or "")
                if command.state is CommandState.CONFIRMED:
                    self._step_set(conn, op, record, state="compensated", finished_at=now)
                    continue
                if command.state.value in ("failed", "expired", "cancelled", "rejected"):
                    return self._compensation_failed(
                        conn, op, record, f"{command.command} {command.state.value}: "
                                          f"{command.result_detail}", now)
                return  # still waiting for the compensation command
            if record.state != "done":
                continue
            if step.kind == "ledger":
                try:
                    with conn.transaction():
                        acting_as(conn, op.requested_by,
                                  f"compensation of {op.kind} {op.operation_id}")
                        undo(conn, _undo_of(conn, op.operation_id, record.step_no))
                except (CommandError, psycopg.Error) as exc:
                    return self._compensation_failed(conn, op, record, _message(exc), now)
                self._step_set(conn, op, record, state="compensated", finished_at=now)
                continue
            if step.compensation is None:
                continue
            command_name, builder = step.compensation
            ctx = self._context(conn, op)
            request = make_request(
                device_id=str(op.params[step.device]), command=command_name,
                requested_by=op.requested_by, params=builder(ctx), origin="operation",
                client_command_id=f"op:{op.operation_id}:{record.step_no}:undo",
                reason=f"compensation of {op.kind}: {step.name}", priority=3, now=now)
            try:
                with conn.transaction():
                    command, refusal = self.commands.submit_in(conn, request,
                                                               operation_id=op.operation_id)
            except CommandError as exc:
                return self._compensation_failed(conn, op, record, exc.message, now)
            if refusal is not None:
                return self._compensation_failed(conn, op, record, refusal.message, now)
            self._step_set(conn, op, record, state="compensating",
                           compensation_command_id=command.command_id)
            outbox.notify(conn)
            return  # wait for it
        self._set(conn, op, state="compensated", finished_at=now, now=now)
        audit.append(conn, actor="system", action="operation.compensated",
                     object_type="operation", object_id=op.operation_id,
                     details={"error": op.error}, key=self._key, ts=now)

    def _compensation_failed(self, conn: psycopg.Connection[Any], op: OperationRecord,
                             record: StepRecord, error: str, now: datetime) -> None:
        self._step_set(conn, op, record, state="compensation_failed", error=error,
                       finished_at=now)
        self._set(conn, op, state="failed", finished_at=now,
                  error=f"{op.error}; compensation of step {record.step_no} ({record.name}) "
                        f"failed: {error}", now=now)
        audit.append(conn, actor="system", action="operation.failed", object_type="operation",
                     object_id=op.operation_id,
                     details={"step": record.step_no, "name": record.name, "error": error},
                     key=self._key, ts=now)
        outbox.enqueue(conn, "alerts", Alert(
            alert_id=f"operation-failed:{op.operation_id}", object_type="service_operation",
            object_id=op.operation_id, severity="major", code="service_operation_failed",
            reason=f"{op.kind} could not be undone at step '{record.name}': {error}; check "
                   f"meter {record.device_id} on site", ts=now, source="operations",
            attributes={"kind": op.kind, "device_id": record.device_id}))

    # ------------------------------------------------------------------ storage

    def _set(self, conn: psycopg.Connection[Any], op: OperationRecord, *, now: datetime,
             **values: Any) -> None:
        values["updated_at"] = now
        if "context" in values:
            values["context"] = Jsonb(audit.canonical_details(values["context"]))
        cols = ", ".join(f"{k} = %s" for k in values)
        conn.execute(f"UPDATE ops.service_operations SET {cols} WHERE operation_id = %s",
                     [*values.values(), op.operation_id])

    def _step_set(self, conn: psycopg.Connection[Any], op: OperationRecord, record: StepRecord,
                  **values: Any) -> None:
        for key in ("undo", "result"):
            if key in values:
                values[key] = Jsonb(audit.canonical_details(values[key]))
        cols = ", ".join(f"{k} = %s" for k in values)
        conn.execute(f"UPDATE ops.service_operation_steps SET {cols} WHERE operation_id = %s "
                     "AND step_no = %s", [*values.values(), op.operation_id, record.step_no])

    def _get(self, conn: psycopg.Connection[Any], operation_id: str, *,
             for_update: bool = False) -> OperationRecord:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM ops.service_operations WHERE operation_id = %s"
                              + (" FOR UPDATE" if for_update else ""),
                              (operation_id,)).fetchone()
            if row is None:
                raise _not_found(operation_id)
            steps = cur.execute("SELECT * FROM ops.service_operation_steps WHERE "
                                "operation_id = %s ORDER BY step_no", (operation_id,)).fetchall()
        data = {k: row[k] for k in OperationRecord.__dataclass_fields__ if k in row}
        return OperationRecord(**data, steps=tuple(
            StepRecord(**{k: s[k] for k in StepRecord.__dataclass_fields__}) for s in steps))

    def get(self, operation_id: str) -> OperationRecord:
        with self.commands.transaction() as conn:
            return self._get(conn, operation_id)

    def list(self, *, state: str | None = None, kind: str | None = None,
             regions: Sequence[str] | None = None, limit: int = 100, offset: int = 0
             ) -> list[OperationRecord]:
        where: list[str] = ["true"]
        args: list[Any] = []
        if state:
            where.append("state = %s")
            args.append(state)
        if kind:
            where.append("kind = %s")
            args.append(kind)
        if regions is not None:
            where.append("region = ANY (%s)")
            args.append(list(regions))
        with self.commands.transaction() as conn:
            ids = [r[0] for r in conn.execute(
                f"SELECT operation_id FROM ops.service_operations WHERE {' AND '.join(where)} "
                "ORDER BY created_at DESC, operation_id LIMIT %s OFFSET %s",
                [*args, limit, offset]).fetchall()]
            return [self._get(conn, i) for i in ids]


def _kind(kind: str) -> OperationKind:
    try:
        return OPERATIONS[kind]
    except KeyError:
        raise CommandError(f"unknown service operation '{kind}'", where="kind",
                           hint=f"known: {', '.join(OPERATIONS)}") from None


def _not_found(operation_id: str) -> CommandNotFoundError:
    return CommandNotFoundError(f"no service operation '{operation_id}'",
                                where=f"operation {operation_id}")


def _message(exc: Exception) -> str:
    if isinstance(exc, CommandError):
        return exc.message
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag else None
    return str(primary or exc).strip().splitlines()[0]


def _undo_of(conn: psycopg.Connection[Any], operation_id: str, step_no: int) -> dict[str, Any]:
    row = conn.execute("SELECT undo FROM ops.service_operation_steps WHERE operation_id = %s "
                       "AND step_no = %s", (operation_id, step_no)).fetchone()
    return dict(row[0]) if row else {}


def _device_facts(conn: psycopg.Connection[Any], device_ids: Sequence[str], now: datetime
                  ) -> dict[str, dict[str, Any]]:
    """Per device: supported commands, billing mode, and the tariff version in force."""
    devices = load_devices(conn, device_ids)
    out: dict[str, dict[str, Any]] = {}
    for device_id, device in devices.items():
        out[device_id] = {"commands": sorted(device.facts.profile.bindings)}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(
                "SELECT m.meter_id, a.billing_mode, v.tariff_id, v.version, v.tiers "
                "FROM ledger.meters m LEFT JOIN ledger.accounts a USING (account_id) "
                "LEFT JOIN LATERAL (SELECT * FROM ledger.tariff_versions v WHERE v.tariff_id = "
                "COALESCE(m.tariff_id, a.tariff_id) AND v.effective_from <= %s AND "
                "(v.effective_to IS NULL OR v.effective_to > %s) ORDER BY v.version DESC "
                "LIMIT 1) v ON true WHERE m.meter_id = ANY (%s)",
                (now, now, list(device_ids))).fetchall():
            entry = out.setdefault(row["meter_id"], {"commands": []})
            entry["billing_mode"] = row["billing_mode"] or ""
            if row["tariff_id"]:
                entry["tariff"] = {
                    "tariff_id": row["tariff_id"], "version": row["version"],
                    "tiers": [{"upper": t.get("upper"),
                               "price": str(Decimal(str(t["price"])).quantize(Decimal("0.0001"))
                                            .normalize())}
                              for t in row["tiers"]]}
    return out
