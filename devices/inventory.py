"""Read-only device queries for the console and the HTTP API.

Strategy: everything is read from ``ledger.device_context`` (the ledger's one-row-per-device
view with type, handler, effective link and service point, region, account and protection),
filtered in SQL and paged by keyset on ``device_id`` so a page is stable while devices are
added. ``regions`` is the caller's authorisation scope: a device outside it is not listed and
is reported as *not found* — an operator of one region cannot even learn that another
region's device exists. Personal data (customer names, phone numbers) is never returned here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devices.commands.catalog import CATALOG
from devices.commands.errors import CommandNotFoundError
from devices.commands.facts import load_device

__all__ = ["DEVICE_COLUMNS", "DevicePage", "device_detail", "device_region", "list_devices"]

DEVICE_COLUMNS = (
    "device_id", "kind", "device_type", "manufacturer_id", "model", "protocol",
    "protocol_variant", "transport", "wake_mode", "has_valve", "valve_arm_supported", "status",
    "address", "serial_no", "parent_device_id", "point_no", "path", "link_id", "link_device_id",
    "service_point_id", "location_id", "region_id", "org_unit_id", "medium", "account_id",
    "protected", "installed_at", "activated_at", "removed_at", "updated_at",
)


@dataclass(frozen=True)
class DevicePage:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def list_devices(conn: psycopg.Connection[Any], *, regions: Sequence[str] | None = None,
                 region: str | None = None, status: str | None = None,
                 device_type: str | None = None, kind: str | None = None,
                 location_id: str | None = None, under_device: str | None = None,
                 search: str | None = None, limit: int = 100,
                 cursor: str | None = None) -> DevicePage:
    """Devices ordered by id, filtered, within ``regions`` when given."""
    where: list[str] = ["true"]
    args: list[Any] = []
    if regions is not None:
        where.append("c.region_id = ANY (%s)")
        args.append(list(regions))
    for column, value in (("c.region_id", region), ("c.status", status),
                          ("c.device_type", device_type), ("c.kind", kind)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    if location_id is not None:
        where.append("EXISTS (SELECT 1 FROM ledger.locations l WHERE l.location_id = "
                     "c.location_id AND %s = ANY (l.path))")
        args.append(location_id)
    if under_device is not None:
        where.append("%s = ANY (c.path) AND c.device_id <> %s")
        args.extend([under_device, under_device])
    if search:
        where.append("(c.device_id ILIKE %s OR c.address ILIKE %s OR c.serial_no ILIKE %s)")
        pattern = f"%{search.replace('%', '').replace('_', '')}%"
        args.extend([pattern] * 3)
    if cursor:
        where.append("c.device_id > %s")
        args.append(cursor)
    args.append(limit + 1)
    columns = ", ".join(f"c.{c}" for c in DEVICE_COLUMNS)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {columns} FROM ledger.device_context c "
                           f"WHERE {' AND '.join(where)} ORDER BY c.device_id LIMIT %s",
                           args).fetchall()
    items = [_plain(r) for r in rows[:limit]]
    return DevicePage(items, items[-1]["device_id"] if len(rows) > limit else None)


def device_region(conn: psycopg.Connection[Any], device_id: str) -> str | None:
    row = conn.execute("SELECT region_id FROM ledger.device_context WHERE device_id = %s",
                       (device_id,)).fetchone()
    if row is None:
        raise _not_found(device_id)
    return None if row[0] is None else str(row[0])


def device_detail(conn: psycopg.Connection[Any], device_id: str, *,
                  regions: Sequence[str] | None = None) -> dict[str, Any]:
    """One device: ledger facts, supported commands, safety lock, latest commands."""
    columns = ", ".join(DEVICE_COLUMNS)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {columns} FROM ledger.device_context WHERE device_id = %s",
                          (device_id,)).fetchone()
        if row is None or (regions is not None and row["region_id"] not in regions):
            raise _not_found(device_id)
        recent = cur.execute(
            "SELECT command_id, command, state, requested_by, requested_at, finished_at, "
            "result_detail FROM ops.commands WHERE device_id = %s ORDER BY requested_at DESC "
            "LIMIT 10", (device_id,)).fetchall()
        lock = cur.execute("SELECT cause, locked_at, command_id, source FROM ops.safety_locks "
                           "WHERE device_id = %s AND cleared_at IS NULL", (device_id,)).fetchone()
    record = load_device(conn, device_id)
    profile = record.facts.profile
    out = _plain(row)
    out["commands"] = {
        name: {"handler": b.handler, "read_back": profile.confirms_by_readback(CATALOG[name])}
        for name, b in sorted(profile.bindings.items())}
    out["delivery"] = profile.delivery
    out["safety_lock"] = _plain(lock) if lock else None
    out["recent_commands"] = [_plain(r) for r in recent]
    return out


def _not_found(device_id: str) -> CommandNotFoundError:
    return CommandNotFoundError(f"no device '{device_id}'", where=f"device {device_id}",
                                hint="check the id (and that it is in your region)")
