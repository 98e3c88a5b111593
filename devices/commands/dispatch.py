"""Dispatch, results, read-back, retries and expiry: the command lifecycle after approval.

Strategy: three idempotent, batch-wise steps, each one database transaction, which any number
of ``unimeter command serve`` processes can run at once (rows are claimed with ``FOR UPDATE
SKIP LOCKED``):

* :meth:`CommandEngine.dispatch_due` routes approved commands (FEP session registry, ledger)
  and writes their :class:`~schemas.messages.CommandDispatch` into the outbox — the command
  is ``queued`` with attempt *n*;
* :meth:`CommandEngine.apply_result` moves a command by its FEP's
  :class:`~schemas.messages.CommandResult`: ``sent``; acknowledged → confirmed, or a
  *read-back* (a ``read_now`` child command) where the device type allows one, whose
  interpreted reply the catalog's check judges; a retryable failure schedules the next
  attempt with exponential back-off; results of earlier attempts and of finished commands are
  audited and change nothing;
* :meth:`CommandEngine.sweep` expires what outlived its time to live, dispatches again what
  got no result within the reply timeout plus a grace period (a lost FEP), fails what has
  no attempts left, and advances mass commands (:mod:`devices.commands.groups`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from devices import audit
from devices.commands import outbox
from devices.commands.billing_link import enqueue_safety_control
from devices.commands.catalog import command_spec
from devices.commands.facts import DeviceRecord, Route, load_devices, route_for, routes_for
from devices.commands.lifecycle import CommandEvent, CommandState, is_terminal
from devices.commands.records import CommandRecord, get_command, get_commands, transition
from devices.commands.service import CommandService, make_request
from devices.safety import decide
from schemas.messages import CommandDispatch, CommandResult, Message

__all__ = ["NON_RETRYABLE_ERRORS", "CommandEngine", "SweepReport"]

log = logging.getLogger(__name__)

#: FEP error codes that another attempt cannot fix (the device said no, or we cannot encode).
NON_RETRYABLE_ERRORS = frozenset({
    "rejected", "device_refused", "unauthorised", "unauthorized", "unsupported",
    "encode_error", "EncodeError", "CommandNotSupportedError", "invalid_parameters",
    "unknown_device", "password", "bad_request",
})

#: Wait before reading a device back: valve motors take seconds to travel.
READBACK_DELAY = timedelta(seconds=15)


@dataclass
class SweepReport:
    expired: int = 0
    redispatched: int = 0
    failed: int = 0
    groups: dict[str, str] = field(default_factory=dict)

    def total(self) -> int:
        return self.expired + self.redispatched + self.failed + len(self.groups)


class CommandEngine:
    """The lifecycle after approval, over the same database as :class:`CommandService`."""

    def __init__(self, service: CommandService, *,
                 readback_delay: timedelta = READBACK_DELAY) -> None:
        self.service = service
        self.settings = service.settings
        self.readback_delay = readback_delay

    @property
    def _key(self) -> bytes | None:
        return self.service.audit_key

    # ------------------------------------------------------------------ dispatch

    def dispatch_due(self, limit: int | None = None) -> int:
        """Route and dispatch approved commands that are due; returns how many."""
        now = self.service.clock()
        limit = limit or self.settings.batch_size
        with self.service.transaction() as conn:
            # A top-up waits while an earlier one to the same meter is in flight: the meter
            # takes purchases in sequence.
            ids = [r[0] for r in conn.execute(
                "SELECT c.command_id FROM ops.commands c WHERE c.state = 'approved' AND "
                "c.next_check_at <= %s AND NOT (c.wire_command = 'top_up' AND EXISTS ("
                "SELECT 1 FROM ops.commands o WHERE o.device_id = c.device_id AND "
                "o.wire_command = 'top_up' AND o.state IN ('queued', 'sent'))) "
                "ORDER BY c.priority, c.requested_at LIMIT %s FOR UPDATE OF c SKIP LOCKED",
                (now, limit)).fetchall()]
            if not ids:
                return 0
            records = get_commands(conn, ids)
            devices = load_devices(conn, sorted({r.device_id for r in records}))
            routes = routes_for(conn, list(devices.values()))
            entries: list[audit.Entry] = []
            messages: list[tuple[str, Message]] = []
            done = 0
            for record in records:
                if record.expires_at <= now:
                    transition(conn, record, CommandEvent.EXPIRE, actor="system",
                               details={"why": "expired before dispatch"},
                               audit_entries=entries, now=now)
                    continue
                device = devices.get(record.device_id)
                if device is None:
                    transition(conn, record, CommandEvent.FAIL, actor="system",
                               details={"why": "device no longer in the ledger"},
                               error_code="unknown_device",
                               result_detail="the device was removed from the ledger",
                               audit_entries=entries, now=now)
                    continue
                self._dispatch(conn, record, device, now, route=routes[device.device_id],
                               entries=entries, messages=messages)
                done += 1
            outbox.enqueue_many(conn, messages)
            audit.append_many(conn, entries, key=self._key, ts=now)
            return done

    def _dispatch(self, conn: psycopg.Connection[Any], record: CommandRecord,
                  device: DeviceRecord, now: datetime, *, why: str = "",
                  route: Route | None = None, entries: list[audit.Entry] | None = None,
                  messages: list[tuple[str, Message]] | None = None) -> CommandRecord:
        """Dispatch one command; with ``entries``/``messages`` its audit record and its
        message join the caller's batch."""
        route = route or route_for(conn, device)
        attempt = record.attempt + 1
        binding = device.facts.profile.bindings.get(record.command)
        wire = dict(record.wire_params)
        extra: dict[str, Any] = {}
        if record.wire_command == "sync_time" and "time" not in wire and \
                route.delivery == "now":
            # Delivered within seconds: the dispatch time is the time to set. A sleeping
            # meter's FEP must set its own clock at delivery (DESIGN: CommandDispatch.handler).
            wire["time"] = now.isoformat()
        if record.wire_command == "top_up" and "purchase_sequence" not in wire:
            # The meter accepts purchase n+1 only: number at first dispatch, keep it after.
            wire["purchase_sequence"] = _next_purchase(conn, record.device_id)
            extra["wire_params"] = wire
        dispatch = CommandDispatch(
            command_id=record.command_id, device_id=record.device_id,
            command=record.wire_command or record.command, protocol=device.protocol,
            address=device.address, dispatched_at=now, params=wire,
            device_type=device.device_type, link_id=route.link_id, fep=route.fep,
            service_point=route.service_point, delivery=route.delivery, attempt=attempt,
            max_attempts=record.max_attempts, reply_timeout_s=record.reply_timeout_s,
            expires_at=record.expires_at, handler=record.handler,
            handler_options={k: v for k, v in (binding.options if binding else {}).items()})
        if messages is not None:
            messages.append(("commands.dispatch", dispatch))
        else:
            outbox.enqueue(conn, "commands.dispatch", dispatch)
        lost_after = (self.settings.on_wake_lost_after_s if route.delivery == "on_wake"
                      else self.settings.lost_after_s)
        next_check = min(now + timedelta(seconds=record.reply_timeout_s + lost_after),
                         record.expires_at)
        return transition(
            conn, record, CommandEvent.DISPATCH, actor="system",
            details={"attempt": attempt, "fep": route.fep, "delivery": route.delivery,
                     "link_id": route.link_id, "service_point": route.service_point,
                     **({"why": why} if why else {})},
            attempt=attempt, dispatched_at=now, fep=route.fep,
            service_point=route.service_point, link_id=route.link_id, delivery=route.delivery,
            next_check_at=next_check, audit_key=self._key, audit_entries=entries, now=now,
            **extra)

    # ------------------------------------------------------------------ results

    def apply_result(self, result: CommandResult) -> CommandRecord | None:
        """Apply one FEP result; None when the command is unknown here (dead-letter it)."""
        now = self.service.clock()
        with self.service.transaction() as conn:
            row = conn.execute("SELECT 1 FROM ops.commands WHERE command_id = %s FOR UPDATE",
                               (result.command_id,)).fetchone()
            if row is None:
                return None
            record = get_command(conn, result.command_id)
            record = self._apply(conn, record, result, now)
            if record.parent_command_id and is_terminal(record.state):
                self._readback_finished(conn, record, now)
            return record

    def _note(self, conn: psycopg.Connection[Any], record: CommandRecord, result: CommandResult,
              action: str, now: datetime) -> CommandRecord:
        audit.append(conn, actor=f"fep:{result.fep}" if result.fep else "fep",
                     action=action, object_type="command", object_id=record.command_id,
                     details={"status": result.status, "attempt": result.attempt,
                              "state": record.state.value, "detail": result.detail,
                              "error_code": result.error_code, "reply": dict(result.reply)},
                     key=self._key, ts=now)
        return record

    def _apply(self, conn: psycopg.Connection[Any], record: CommandRecord,
               result: CommandResult, now: datetime) -> CommandRecord:
        actor = f"fep:{result.fep}" if result.fep else "fep"
        base = {"attempt": result.attempt, "fep": result.fep, "detail": result.detail}
        if is_terminal(record.state):
            return self._note(conn, record, result, "command.late_result", now)
        if record.state not in (CommandState.QUEUED, CommandState.SENT):
            return self._note(conn, record, result, "command.unexpected_result", now)
        status = result.status
        positive = status in ("delivered", "confirmed")
        if result.attempt < record.attempt and not positive:
            return self._note(conn, record, result, "command.stale_result", now)
        if record.acknowledged_at is not None and not positive and status in ("queued", "sent"):
            return self._note(conn, record, result, "command.stale_result", now)

        if status == "queued":
            # The FEP holds it until the device (re)connects: wait as for a sleeping meter.
            self._note(conn, record, result, "command.fep_queued", now)
            conn.execute("UPDATE ops.commands SET next_check_at = %s, fep = COALESCE(%s, fep)"
                         " WHERE command_id = %s",
                         (min(now + timedelta(seconds=self.settings.on_wake_lost_after_s),
                              record.expires_at), result.fep or None, record.command_id))
            return get_command(conn, record.command_id)
        if status == "sent":
            return transition(
                conn, record, CommandEvent.SENT, actor=actor, details=base,
                sent_at=now, fep=result.fep or record.fep,
                next_check_at=min(now + timedelta(seconds=record.reply_timeout_s
                                                  + self.settings.lost_after_s),
                                  record.expires_at),
                audit_key=self._key, now=now)
        if positive:
            return self._acknowledged(conn, record, result, now)
        if status == "expired":
            return transition(conn, record, CommandEvent.EXPIRE, actor=actor, details=base,
                              result_detail=result.detail or "expired at the FEP",
                              error_code=result.error_code, audit_key=self._key, now=now)
        # failed or rejected. The FEP numbers the attempts it makes itself on from the
        # dispatch's, so its count is the one that tells whether attempts are left.
        attempts = max(record.attempt, result.attempt)
        code = result.error_code or ("rejected" if status == "rejected" else "failed")
        retryable = status == "failed" and code not in NON_RETRYABLE_ERRORS
        if retryable and attempts < record.max_attempts and now < record.expires_at:
            backoff = self.settings.retry_backoff_s * (2 ** max(0, record.attempt - 1))
            return transition(
                conn, record, CommandEvent.RETRY, actor=actor,
                details={**base, "error_code": code, "retry_in_s": backoff},
                next_check_at=min(now + timedelta(seconds=backoff), record.expires_at),
                result_detail=result.detail, error_code=code, attempt=attempts,
                audit_key=self._key, now=now)
        return transition(conn, record, CommandEvent.FAIL, actor=actor,
                          details={**base, "error_code": code},
                          result_detail=result.detail or status, error_code=code,
                          reply=dict(result.reply), attempt=attempts,
                          audit_key=self._key, now=now)

    def _acknowledged(self, conn: psycopg.Connection[Any], record: CommandRecord,
                      result: CommandResult, now: datetime) -> CommandRecord:
        actor = f"fep:{result.fep}" if result.fep else "fep"
        spec = command_spec(record.command)
        details = {"attempt": result.attempt, "fep": result.fep, "reply": dict(result.reply)}
        if record.state is CommandState.QUEUED:
            record = transition(conn, record, CommandEvent.SENT, actor=actor,
                                details={"implied_by": result.status}, sent_at=now,
                                fep=result.fep or record.fep, audit_key=self._key, now=now)
        verdict = None
        if spec.readback_check is not None:
            verdict = spec.readback_check(_observed(result), self._check_params(record))
        if verdict is False:
            return transition(conn, record, CommandEvent.FAIL, actor=actor,
                              details={**details, "why": "the reply contradicts the command"},
                              error_code="readback_mismatch", reply=dict(result.reply),
                              result_detail=_mismatch(spec.name, result.reply),
                              audit_key=self._key, now=now)
        if verdict is None and record.readback:
            if record.acknowledged_at is not None:
                return self._note(conn, record, result, "command.duplicate_ack", now)
            self._start_readback(conn, record, now)
            conn.execute("UPDATE ops.commands SET acknowledged_at = %s, reply = %s, "
                         "next_check_at = NULL "
                         "WHERE command_id = %s",
                         (now, psycopg.types.json.Jsonb(dict(result.reply)), record.command_id))
            self._note(conn, record, result, "command.acknowledged", now)
            return get_command(conn, record.command_id)
        how = "read back from the device reply" if verdict else "acknowledged by the device"
        record = transition(conn, record, CommandEvent.CONFIRM, actor=actor,
                            details={**details, "confirmation": how},
                            reply=_observed(result), result_detail=how,
                            acknowledged_at=now, audit_key=self._key, now=now)
        self._after_confirm(conn, record, now)
        return record

    # ------------------------------------------------------------------ read-back

    def _check_params(self, record: CommandRecord) -> dict[str, Any]:
        return {**dict(record.params), "_timezone": self.service.timezone}

    def _start_readback(self, conn: psycopg.Connection[Any], parent: CommandRecord,
                        now: datetime) -> None:
        spec = command_spec(parent.command)
        n = 1 + int(conn.execute("SELECT count(*) FROM ops.commands WHERE parent_command_id = %s",
                                 (parent.command_id,)).fetchone()[0])  # type: ignore[index]
        child_expires = max(parent.expires_at, now + timedelta(minutes=10))
        request = make_request(
            device_id=parent.device_id, command="read_now", requested_by="system:readback",
            params={"what": spec.readback_what or "all"}, origin="readback",
            command_id=f"{parent.command_id}.rb{n}", reason=f"read-back of {parent.command}",
            priority=max(0, parent.priority - 1), ttl=child_expires - now, now=now)
        device = load_devices(conn, [parent.device_id]).get(parent.device_id)
        if device is None:
            raise RuntimeError(f"device {parent.device_id} vanished during its read-back")
        read = command_spec("read_now")
        params = read.validate(request.params)
        # The read goes through the same door as every command (policy, audit), then waits
        # for the valve or breaker to travel before it is dispatched.
        decision = decide(read, params, device.facts, requested_by=request.requested_by,
                          origin=request.origin, mass=False, limits=self.service.limits)
        child = self.service._insert(conn, request, read, decision, device, now,
                                     encoded=self.service.encode(device, decision, now),
                                     operation_id=parent.operation_id,
                                     parent_command_id=parent.command_id)
        transition(conn, child, CommandEvent.APPROVE, actor="policy",
                   details={"readback_of": parent.command_id},
                   next_check_at=now + self.readback_delay, audit_key=self._key, now=now)

    def _readback_finished(self, conn: psycopg.Connection[Any], child: CommandRecord,
                           now: datetime) -> None:
        parent = get_command(conn, child.parent_command_id or "", for_update=True)
        if is_terminal(parent.state):
            return
        spec = command_spec(parent.command)
        if child.state is CommandState.CONFIRMED:
            verdict = spec.readback_check(child.reply, self._check_params(parent)) \
                if spec.readback_check else None
            if verdict is False:
                transition(conn, parent, CommandEvent.FAIL, actor="system",
                           details={"readback": child.command_id, "reply": dict(child.reply)},
                           error_code="readback_mismatch", reply=dict(child.reply),
                           result_detail=_mismatch(spec.name, child.reply),
                           audit_key=self._key, now=now)
                return
            how = ("confirmed by read-back" if verdict else
                   "acknowledged; the read-back did not report the effect")
            parent = transition(conn, parent, CommandEvent.CONFIRM, actor="system",
                                details={"readback": child.command_id,
                                         "reply": dict(child.reply), "confirmation": how},
                                reply={**dict(parent.reply), **dict(child.reply)},
                                result_detail=how, audit_key=self._key, now=now)
            self._after_confirm(conn, parent, now)
            return
        transition(conn, parent, CommandEvent.FAIL, actor="system",
                   details={"readback": child.command_id, "readback_state": child.state.value},
                   error_code="readback_failed",
                   result_detail=f"the device acknowledged, but its read-back "
                                 f"{child.state.value}: {child.result_detail}".rstrip(": "),
                   audit_key=self._key, now=now)

    def _after_confirm(self, conn: psycopg.Connection[Any], record: CommandRecord,
                       now: datetime) -> None:
        spec = command_spec(record.command)
        if spec.is_supply_restore() and record.params.get("acknowledge_safety_lock"):
            cleared = conn.execute(
                "UPDATE ops.safety_locks SET cleared_by = %s, cleared_at = %s, "
                "clear_command_id = %s WHERE device_id = %s AND cleared_at IS NULL "
                "RETURNING cause", (record.requested_by, now, record.command_id,
                                    record.device_id)).fetchone()
            if cleared is not None:
                audit.append(conn, actor=record.requested_by, action="safety_lock.cleared",
                             object_type="device", object_id=record.device_id,
                             details={"cause": cleared[0], "command_id": record.command_id,
                                      "approvers": list(record.approvals)},
                             key=self._key, ts=now)
                # the installation was checked: billing may arm the valve after top-ups again
                enqueue_safety_control(
                    conn, record.device_id, "clear_safety_lock", command_id=record.command_id,
                    actor=record.requested_by,
                    reason=f"safety lock ({cleared[0]}) cleared by the confirmed reopen "
                           f"{record.command_id}, approved by "
                           f"{', '.join(record.approvals) or 'nobody else'}", now=now)

    # ------------------------------------------------------------------ sweep

    def sweep(self, limit: int | None = None) -> SweepReport:
        """Expire, re-dispatch lost commands, fail exhausted ones, advance mass commands."""
        from devices.commands.groups import advance_groups

        now = self.service.clock()
        limit = limit or self.settings.batch_size
        report = SweepReport()
        with self.service.transaction() as conn:
            for (command_id,) in conn.execute(
                    "SELECT command_id FROM ops.commands WHERE state IN ('requested', "
                    "'quarantined', 'approved', 'queued', 'sent') AND expires_at <= %s "
                    "ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (now, limit)).fetchall():
                record = transition(conn, get_command(conn, command_id), CommandEvent.EXPIRE,
                                    actor="system", details={"why": "time to live passed"},
                                    result_detail="expired: its time to live passed",
                                    error_code="expired", audit_key=self._key, now=now)
                report.expired += 1
                if record.parent_command_id:
                    self._readback_finished(conn, record, now)
        with self.service.transaction() as conn:
            due = [r[0] for r in conn.execute(
                "SELECT command_id FROM ops.commands WHERE state IN ('queued', 'sent') AND "
                "next_check_at <= %s ORDER BY next_check_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, limit)).fetchall()]
            if due:
                records = [get_command(conn, c) for c in due]
                devices = load_devices(conn, sorted({r.device_id for r in records}))
                for record in records:
                    self._retry_or_fail(conn, record, devices.get(record.device_id), now, report)
        report.groups = advance_groups(self.service, now)
        return report

    def _retry_or_fail(self, conn: psycopg.Connection[Any], record: CommandRecord,
                       device: DeviceRecord | None, now: datetime, report: SweepReport) -> None:
        lost = record.error_code is None or record.state is CommandState.SENT
        why = ("no result from the FEP in time" if lost
               else f"retry after {record.error_code}")
        if record.attempt >= record.max_attempts or device is None:
            transition(conn, record, CommandEvent.FAIL, actor="system",
                       details={"why": why, "attempts": record.attempt},
                       error_code=record.error_code or "no_result",
                       result_detail=f"gave up after {record.attempt} attempt(s): {why}",
                       audit_key=self._key, now=now)
            report.failed += 1
            if record.parent_command_id:
                self._readback_finished(conn, get_command(conn, record.command_id), now)
            return
        if record.state is CommandState.SENT:
            record = transition(conn, record, CommandEvent.RETRY, actor="system",
                                details={"why": why}, audit_key=self._key, now=now)
        self._dispatch(conn, record, device, now, why=why)
        report.redispatched += 1


def _observed(result: CommandResult) -> dict[str, Any]:
    """The reply with the time it was observed (for clock read-backs)."""
    return {"observed_at": result.ts.isoformat(), **dict(result.reply)}


def _next_purchase(conn: psycopg.Connection[Any], device_id: str) -> int:
    """The meter's next purchase number: its recorded base plus confirmed top-ups, plus one.

    ``ledger.devices.parameters.purchase_sequence`` is the number of the last purchase the
    meter took before this platform (card or vendor top-ups); confirmed and in-flight
    top-ups since count on from it.
    """
    row = conn.execute(
        "SELECT COALESCE((SELECT (parameters->>'purchase_sequence')::int FROM ledger.devices "
        "WHERE device_id = %s), 0) + (SELECT count(*) FROM ops.commands WHERE device_id = %s "
        "AND wire_command = 'top_up' AND (state = 'confirmed' OR state IN ('queued', 'sent') "
        "AND attempt > 0))", (device_id, device_id)).fetchone()
    return int(row[0]) + 1 if row else 1


def _mismatch(command: str, reply: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in sorted(reply.items()) if k != "raw")
    return f"the device does not show the effect of {command}: {shown or 'no values'}"
