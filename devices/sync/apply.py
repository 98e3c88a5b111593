"""Applying one CIS change to the ledger, in the caller's transaction.

Strategy: every handler takes a decoded ``sync.in`` message and a connection inside a
transaction, checks the change's order (:func:`check_order`), writes the ledger with plain
upserts (the ledger's triggers record history and queue the outbox in the same transaction)
and returns the messages to produce afterwards (command requests). A change that cannot be
applied raises :class:`SyncRejectedError`: ``kind='conflict'`` when it is older than the ledger's
state or the ledger was changed locally after it, ``kind='reject'`` when it is invalid;
``retryable`` when a reference may still arrive on another topic (an account for a meter).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, time
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from devices.errors import SyncError
from schemas.messages import (
    CommandRequest,
    Message,
    SyncAccount,
    SyncCollectionRequirement,
    SyncCustomer,
    SyncDeviceParameters,
    SyncMeter,
    SyncTariff,
    TopUp,
)

__all__ = ["HANDLERS", "PARAMETER_COMMANDS", "Duplicate", "SyncRejectedError", "check_order"]


class SyncRejectedError(SyncError):
    """A CIS change not applied; ``kind`` is ``reject`` or ``conflict``."""

    def __init__(self, message: str, *, kind: str = "reject", entity: str = "",
                 entity_id: str = "", retryable: bool = False, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, kind=kind, entity=entity, entity_id=entity_id)
        self.kind = kind
        self.entity = entity
        self.entity_id = entity_id
        self.retryable = retryable


class Duplicate(Exception):  # noqa: N818 - a signal, not an error
    """The very change was applied already (redelivery): nothing to do."""


def check_order(conn: psycopg.Connection, entity: str, entity_id: str, changed_at: datetime,
                *, table: str | None = None, columns: tuple[str, ...] = ()) -> None:
    """Refuse a change older than the last applied one, or than a later local update (not by
    the sync) of one of the ``columns`` the CIS owns in ``table``."""
    row = conn.execute("SELECT changed_at FROM ledger.sync_state WHERE entity = %s AND "
                       "entity_id = %s", (entity, entity_id)).fetchone()
    if row is not None:
        if changed_at == row[0]:
            raise Duplicate
        if changed_at < row[0]:
            raise SyncRejectedError(
                f"{entity} '{entity_id}' change of {changed_at.isoformat()} is older than the "
                f"change of {row[0].isoformat()} already applied", kind="conflict",
                entity=entity, entity_id=entity_id,
                hint="the CIS sent changes out of order; resend the current state if needed")
    if table is not None and columns:
        local = conn.execute(
            "SELECT changed_at, actor FROM ledger.history WHERE entity = %s AND entity_id = %s "
            "AND op = 'update' AND actor NOT LIKE 'sync%%' AND after ?| %s "
            "ORDER BY history_id DESC LIMIT 1", (table, entity_id, list(columns))).fetchone()
        if local is not None and local[0] > changed_at:
            raise SyncRejectedError(
                f"{entity} '{entity_id}' was changed in the ledger by {local[1]} at "
                f"{local[0].isoformat()}, after this CIS change of {changed_at.isoformat()}",
                kind="conflict", entity=entity, entity_id=entity_id,
                hint="decide which is right, then resend from the CIS or resolve the exception")


def _record_order(conn: psycopg.Connection, entity: str, entity_id: str, changed_at: datetime,
                  message_id: str | None) -> None:
    conn.execute(
        "INSERT INTO ledger.sync_state (entity, entity_id, changed_at, message_id) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (entity, entity_id) DO UPDATE SET "
        "changed_at = EXCLUDED.changed_at, message_id = EXCLUDED.message_id, "
        "applied_at = clock_timestamp()", (entity, entity_id, changed_at, message_id))


def _exists(conn: psycopg.Connection, table: str, key: str, value: str | None) -> bool:
    if value is None:
        return True
    return conn.execute(f"SELECT 1 FROM ledger.{table} WHERE {key} = %s".encode(),
                        (value,)).fetchone() is not None


def _require(conn: psycopg.Connection, table: str, key: str, value: str | None, what: str,
             entity: str, entity_id: str, *, retryable: bool = True) -> None:
    if not _exists(conn, table, key, value):
        raise SyncRejectedError(f"unknown {what} '{value}'", entity=entity, entity_id=entity_id,
                           retryable=retryable,
                           hint=f"send the {what} first (it may still be on its way)")


Outgoing = list[tuple[str, Message]]


def apply_customer(conn: psycopg.Connection, msg: SyncCustomer, message_id: str | None
                   ) -> Outgoing:
    check_order(conn, "customer", msg.customer_id, msg.changed_at, table="customers",
                columns=("customer_type", "name", "phone", "email", "id_number",
                         "postal_address"))
    _require(conn, "customer_types", "customer_type", msg.customer_type, "customer type",
             "customer", msg.customer_id, retryable=False)
    conn.execute("""
        INSERT INTO ledger.customers (customer_id, customer_type, name, phone, email,
                                      id_number, postal_address)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (customer_id) DO UPDATE SET customer_type = EXCLUDED.customer_type,
            name = EXCLUDED.name, phone = EXCLUDED.phone, email = EXCLUDED.email,
            id_number = EXCLUDED.id_number, postal_address = EXCLUDED.postal_address""",
                 (msg.customer_id, msg.customer_type, msg.name, msg.phone, msg.email,
                  msg.id_number, msg.postal_address))
    _record_order(conn, "customer", msg.customer_id, msg.changed_at, message_id)
    return []


def apply_account(conn: psycopg.Connection, msg: SyncAccount, message_id: str | None
                  ) -> Outgoing:
    check_order(conn, "account", msg.account_id, msg.changed_at, table="accounts",
                columns=("customer_id", "location_id", "billing_mode", "tariff_id", "status",
                         "protected", "protected_reason", "alarm1", "alarm2",
                         "overdraft_limit", "max_balance", "reconnect_limit"))
    _require(conn, "customers", "customer_id", msg.customer_id, "customer", "account",
             msg.account_id)
    _require(conn, "tariffs", "tariff_id", msg.tariff_id, "tariff", "account", msg.account_id)
    _require(conn, "locations", "location_id", msg.location_id, "location", "account",
             msg.account_id, retryable=False)
    if msg.alarm1 is not None and msg.alarm2 is not None and msg.alarm2 > msg.alarm1:
        raise SyncRejectedError(f"alarm2 ({msg.alarm2}) is above alarm1 ({msg.alarm1})",
                           entity="account", entity_id=msg.account_id)
    conn.execute("""
        INSERT INTO ledger.accounts (account_id, customer_id, location_id, billing_mode,
            tariff_id, status, protected, protected_reason, alarm1, alarm2, overdraft_limit,
            max_balance, reconnect_limit)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (account_id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
            location_id = EXCLUDED.location_id, billing_mode = EXCLUDED.billing_mode,
            tariff_id = EXCLUDED.tariff_id, status = EXCLUDED.status,
            protected = EXCLUDED.protected, protected_reason = EXCLUDED.protected_reason,
            alarm1 = EXCLUDED.alarm1, alarm2 = EXCLUDED.alarm2,
            overdraft_limit = EXCLUDED.overdraft_limit, max_balance = EXCLUDED.max_balance,
            reconnect_limit = EXCLUDED.reconnect_limit""",
                 (msg.account_id, msg.customer_id, msg.location_id, msg.billing_mode,
                  msg.tariff_id, msg.status, msg.protected, msg.protected_reason, msg.alarm1,
                  msg.alarm2, msg.overdraft_limit, msg.max_balance, msg.reconnect_limit))
    _record_order(conn, "account", msg.account_id, msg.changed_at, message_id)
    return []


def apply_meter(conn: psycopg.Connection, msg: SyncMeter, message_id: str | None) -> Outgoing:
    check_order(conn, "meter", msg.meter_id, msg.changed_at, table="meters",
                columns=("account_id", "tariff_id", "size", "initial_reading"))
    _require(conn, "meters", "meter_id", msg.meter_id, "meter", "meter", msg.meter_id)
    _require(conn, "accounts", "account_id", msg.account_id, "account", "meter", msg.meter_id)
    _require(conn, "tariffs", "tariff_id", msg.tariff_id, "tariff", "meter", msg.meter_id)
    _require(conn, "meter_sizes", "size", msg.size, "meter size", "meter", msg.meter_id,
             retryable=False)
    _require(conn, "locations", "location_id", msg.location_id, "location", "meter",
             msg.meter_id, retryable=False)
    conn.execute("""
        UPDATE ledger.meters SET account_id = %(account)s,
               tariff_id = COALESCE(%(tariff)s, tariff_id), size = COALESCE(%(size)s, size),
               initial_reading = COALESCE(%(initial)s, initial_reading)
         WHERE meter_id = %(meter)s""",
                 {"account": msg.account_id, "tariff": msg.tariff_id, "size": msg.size,
                  "initial": msg.initial_reading, "meter": msg.meter_id})
    if msg.location_id is not None:
        conn.execute("UPDATE ledger.devices SET location_id = %s WHERE device_id = %s",
                     (msg.location_id, msg.meter_id))
    _record_order(conn, "meter", msg.meter_id, msg.changed_at, message_id)
    return []


def _tiers_json(msg: SyncTariff) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    previous: Decimal | None = None
    for i, tier in enumerate(msg.tiers):
        if tier.price < 0:
            raise SyncRejectedError(f"tier {i + 1} has a negative price", entity="tariff",
                               entity_id=msg.tariff_id)
        if i and previous is None:
            raise SyncRejectedError("only the last tier may be without an upper limit",
                               entity="tariff", entity_id=msg.tariff_id)
        if tier.upper is not None and previous is not None and tier.upper <= previous:
            raise SyncRejectedError(
                f"tier {i + 1} upper limit {tier.upper} is not above {previous}",
                entity="tariff", entity_id=msg.tariff_id)
        previous = tier.upper
        item: dict[str, Any] = {"upper": None if tier.upper is None else str(tier.upper),
                                "price": str(tier.price)}
        if tier.components:
            item["components"] = {k: str(v) for k, v in tier.components.items()}
        out.append(item)
    if msg.kind in ("step", "flat") and not out:
        raise SyncRejectedError(f"a {msg.kind} tariff needs tiers", entity="tariff",
                           entity_id=msg.tariff_id)
    return out


def apply_tariff(conn: psycopg.Connection, msg: SyncTariff, message_id: str | None) -> Outgoing:
    """A tariff version / price adjustment: one new version per ``adjustment_id``; the
    version it supersedes gets its ``effective_to``."""
    tiers = _tiers_json(msg)
    source = f"sync:{msg.adjustment_id}"
    done = conn.execute("SELECT version, tiers, effective_from FROM ledger.tariff_versions "
                        "WHERE tariff_id = %s AND source = %s",
                        (msg.tariff_id, source)).fetchone()
    if done is not None:
        if done[1] == tiers and done[2] == msg.effective_from:
            raise Duplicate
        raise SyncRejectedError(f"price adjustment '{msg.adjustment_id}' was already applied as "
                           f"version {done[0]} with other prices or another date",
                           kind="conflict", entity="tariff", entity_id=msg.tariff_id,
                           hint="send a new adjustment id for a new decision")
    conn.execute("""
        INSERT INTO ledger.tariffs (tariff_id, name, medium, currency, unit)
        VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tariff_id) DO NOTHING""",
                 (msg.tariff_id, msg.name or msg.tariff_id, msg.medium, msg.currency, msg.unit))
    row = conn.execute("SELECT COALESCE(max(version), 0) FROM ledger.tariff_versions "
                       "WHERE tariff_id = %s", (msg.tariff_id,)).fetchone()
    latest = int(row[0]) if row else 0
    version = msg.version or latest + 1
    if msg.version is not None and msg.version <= latest:
        raise SyncRejectedError(f"tariff '{msg.tariff_id}' version {msg.version} exists already "
                           f"(latest {latest})", kind="conflict", entity="tariff",
                           entity_id=msg.tariff_id, hint="leave version out to append one")
    overlapping = conn.execute(
        "SELECT version FROM ledger.tariff_versions WHERE tariff_id = %s AND "
        "effective_from >= %s ORDER BY version LIMIT 1",
        (msg.tariff_id, msg.effective_from)).fetchone()
    if overlapping is not None:
        raise SyncRejectedError(f"tariff '{msg.tariff_id}' version {overlapping[0]} already starts "
                           f"on or after {msg.effective_from.isoformat()}", kind="conflict",
                           entity="tariff", entity_id=msg.tariff_id,
                           hint="a price adjustment must start after the current version")
    conn.execute("UPDATE ledger.tariff_versions SET effective_to = %s WHERE tariff_id = %s "
                 "AND (effective_to IS NULL OR effective_to > %s)",
                 (msg.effective_from, msg.tariff_id, msg.effective_from))
    conn.execute("""
        INSERT INTO ledger.tariff_versions (tariff_id, version, kind, effective_from, cycle,
            cycle_start_month, cycle_start_day, tiers, tou, source, reason)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                 (msg.tariff_id, version, msg.kind, msg.effective_from, msg.cycle,
                  msg.cycle_start_month, msg.cycle_start_day, Jsonb(tiers), Jsonb(msg.tou),
                  source, msg.reason))
    return []


def apply_topup(conn: psycopg.Connection, msg: TopUp, message_id: str | None) -> Outgoing:
    """Once per ``top_up_id``: stored and queued for ``billing.topups`` in one transaction."""
    if msg.kind == "top_up" and msg.amount <= 0:
        raise SyncRejectedError(f"top-up amount {msg.amount} must be positive", entity="top_up",
                           entity_id=msg.top_up_id)
    if msg.amount == 0:
        raise SyncRejectedError("amount is zero", entity="top_up", entity_id=msg.top_up_id)
    if msg.amount != msg.amount.quantize(Decimal("0.01")):
        raise SyncRejectedError(f"amount {msg.amount} has more than two decimals", entity="top_up",
                           entity_id=msg.top_up_id)
    known = conn.execute("SELECT account_id, amount, kind, ts FROM ledger.sync_topups "
                         "WHERE top_up_id = %s", (msg.top_up_id,)).fetchone()
    if known is not None:
        if (known[0], known[1], known[2], known[3]) == (msg.account_id, msg.amount, msg.kind,
                                                        msg.ts):
            raise Duplicate
        raise SyncRejectedError(f"top-up '{msg.top_up_id}' was received before with account "
                           f"{known[0]} amount {known[1]}", kind="conflict", entity="top_up",
                           entity_id=msg.top_up_id,
                           hint="a top-up id names one payment; correct it with a refund or "
                                "an adjustment under a new id")
    _require(conn, "accounts", "account_id", msg.account_id, "account", "top_up",
             msg.top_up_id)
    conn.execute("""
        INSERT INTO ledger.sync_topups (top_up_id, account_id, amount, ts, kind, channel,
            currency, operator, reason, message_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                 (msg.top_up_id, msg.account_id, msg.amount, msg.ts, msg.kind, msg.channel,
                  msg.currency, msg.operator, msg.reason, message_id))
    return []


TARGET_KINDS = ("device", "subtree", "location", "device_type", "service_point", "account",
                "all")


def _time(value: str | None, requirement: str) -> time | None:
    if value in (None, ""):
        return None
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise SyncRejectedError(f"'{value}' is not a time of day (HH:MM)", entity="requirement",
                           entity_id=requirement) from None


def apply_collection(conn: psycopg.Connection, msg: SyncCollectionRequirement,
                     message_id: str | None) -> Outgoing:
    """A collection requirement becomes (or changes) plan ``sync:<requirement_id>``."""
    check_order(conn, "collection_requirement", msg.requirement_id, msg.changed_at)
    plan_id = f"sync:{msg.requirement_id}"
    if msg.interval_s is None and not msg.schedule:
        raise SyncRejectedError("give interval_s or a schedule", entity="requirement",
                           entity_id=msg.requirement_id)
    if msg.interval_s is not None and msg.interval_s < 60:
        raise SyncRejectedError("interval_s must be at least 60", entity="requirement",
                           entity_id=msg.requirement_id)
    targets = []
    for target in msg.targets:
        kind, _, target_id = target.partition(":")
        if kind not in TARGET_KINDS:
            raise SyncRejectedError(f"target '{target}': kind must be one of "
                               f"{', '.join(TARGET_KINDS)}", entity="requirement",
                               entity_id=msg.requirement_id)
        targets.append((kind, target_id))
    conn.execute("""
        INSERT INTO ledger.collection_plans (plan_id, name, command, registers, interval_s,
            schedule, window_start, window_end, priority, enabled, source)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'sync')
        ON CONFLICT (plan_id) DO UPDATE SET command = EXCLUDED.command,
            registers = EXCLUDED.registers, interval_s = EXCLUDED.interval_s,
            schedule = EXCLUDED.schedule, window_start = EXCLUDED.window_start,
            window_end = EXCLUDED.window_end, priority = EXCLUDED.priority,
            enabled = EXCLUDED.enabled""",
                 (plan_id, f"CIS requirement {msg.requirement_id}", msg.command,
                  list(msg.registers), msg.interval_s, msg.schedule,
                  _time(msg.window_start, msg.requirement_id),
                  _time(msg.window_end, msg.requirement_id), msg.priority, msg.enabled))
    conn.execute("DELETE FROM ledger.collection_plan_targets WHERE plan_id = %s", (plan_id,))
    for kind, target_id in targets:
        conn.execute("INSERT INTO ledger.collection_plan_targets (plan_id, target_kind, "
                     "target_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                     (plan_id, kind, target_id))
    _record_order(conn, "collection_requirement", msg.requirement_id, msg.changed_at,
                  message_id)
    return []


#: Device parameters that a catalog command sets: name -> (command, params from value).
PARAMETER_COMMANDS: dict[str, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    "report_interval_s": ("set_report_interval",
                          lambda v: {"minutes": max(1, int(v) // 60)}),
}


def apply_device_parameters(conn: psycopg.Connection, msg: SyncDeviceParameters,
                            message_id: str | None) -> Outgoing:
    """Store the desired parameters on the device; ask for the command that sets each one the
    catalog can set (``commands.requests``, idempotent by client command id)."""
    try:
        check_order(conn, "device_parameters", msg.request_id, msg.changed_at)
    except Duplicate:
        # Stored already, but the command requests may have been lost with a crash before
        # they were produced: ask again (the control plane dedupes by client command id).
        pass
    else:
        _require(conn, "devices", "device_id", msg.device_id, "device", "device_parameters",
                 msg.request_id)
        conn.execute("UPDATE ledger.devices SET parameters = parameters || %s "
                     "WHERE device_id = %s", (Jsonb(msg.parameters), msg.device_id))
        _record_order(conn, "device_parameters", msg.request_id, msg.changed_at, message_id)
    out: Outgoing = []
    for name, value in sorted(msg.parameters.items()):
        mapping = PARAMETER_COMMANDS.get(name)
        if mapping is None:
            continue
        command, params = mapping
        try:
            command_params = params(value)
        except (TypeError, ValueError):
            raise SyncRejectedError(f"parameter {name}={value!r} is not valid for {command}",
                               entity="device_parameters", entity_id=msg.request_id) from None
        client_id = f"sync:{msg.request_id}:{name}"
        out.append(("commands.requests", CommandRequest(
            command_id=client_id, device_id=msg.device_id, command=command,
            requested_by="cis", requested_at=msg.changed_at, params=command_params,
            client_command_id=client_id, origin="sync",
            reason=f"CIS parameter request {msg.request_id}: {json.dumps({name: value})}")))
    return out


#: schema -> (handler, entity name used in exceptions).
HANDLERS: dict[str, Callable[[psycopg.Connection, Any, str | None], Outgoing]] = {
    SyncCustomer.SCHEMA: apply_customer,
    SyncAccount.SCHEMA: apply_account,
    SyncMeter.SCHEMA: apply_meter,
    SyncTariff.SCHEMA: apply_tariff,
    TopUp.SCHEMA: apply_topup,
    SyncCollectionRequirement.SCHEMA: apply_collection,
    SyncDeviceParameters.SCHEMA: apply_device_parameters,
}
