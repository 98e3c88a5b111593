"""What the control plane reads about target devices: ledger facts, profiles and routes.

Strategy: one query per batch of devices joins the ledger (device, type, location → region,
meter → account → protected), the per-command overrides of the type's profile and the active
safety locks, so a mass command of 10,000 meters costs a handful of round trips. A device
type's command profile is derived from its ``ledger.device_types`` row — protocol, command
handler and variant, wake mode, valve and arming capabilities, read-back — with
``capabilities.commands`` (an explicit list) or the defaults below, then the overrides of
``ledger.device_type_commands`` — each kept only where the handler's ``decoders`` encoder can
carry it (:func:`devices.commands.encoding.handler_commands`). Routes come from the FEPs'
session registry
(``ops.device_sessions``): an online session names the FEP and link that deliver now; without
one the command waits for the device to wake or reconnect (``delivery='on_wake'``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devices.commands.capabilities import CommandBinding, Delivery, DeviceTypeCommands
from devices.commands.catalog import CATALOG
from devices.commands.encoding import handler_commands, resolve_handler
from devices.commands.errors import CommandNotFoundError
from devices.safety import DeviceFacts, SafetyLock

__all__ = [
    "DeviceRecord",
    "Route",
    "default_commands",
    "load_device",
    "load_devices",
    "profile_from_row",
    "route_for",
    "routes_for",
]

_READS = ("read_now", "read_history", "sync_time")
_VALVE = ("valve_close", "valve_open")
_RELAY = ("relay_trip", "relay_close")
_MONEY = ("set_price", "top_up", "set_balance")


def default_commands(row: Mapping[str, Any]) -> list[str]:
    """The commands a device type supports when its ``capabilities`` list none explicitly."""
    caps = row.get("capabilities") or {}
    if isinstance(caps.get("commands"), list):
        return [str(c) for c in caps["commands"] if str(c) in CATALOG]
    names: list[str] = ["read_now", "sync_time"]
    if row.get("kind", "meter") == "meter":
        names.append("read_history")
        if row.get("has_valve"):
            names.extend(_VALVE)
            if row.get("valve_arm_supported"):
                names.append("valve_arm_open")
        if caps.get("relay") or (row.get("medium") == "electricity" and caps.get("relay", True)
                                 and not row.get("has_valve")):
            names.extend(_RELAY)
        if caps.get("prepaid"):
            names.extend(_MONEY)
        if row.get("wake_mode") == "on_wake" or caps.get("report_interval"):
            names.append("set_report_interval")
    return names


def profile_from_row(row: Mapping[str, Any],
                     overrides: Iterable[Mapping[str, Any]] = ()) -> DeviceTypeCommands:
    """A device type's profile from its ledger row and its per-command override rows."""
    handler, variant = row.get("command_handler") or "", row.get("command_variant") or ""
    protocol, protocol_variant = str(row["protocol"]), row.get("protocol_variant") or ""
    handler_name = resolve_handler(
        f"{handler}:{variant}" if handler and variant else None, handler or None,
        f"{protocol}:{protocol_variant}" if protocol_variant else None, protocol,
    ) or (f"{handler}:{variant}" if handler and variant else handler or protocol)
    readback = bool(row.get("read_back", True))
    carried = handler_commands(handler_name)
    bindings = {name: CommandBinding(name, handler_name, readback)
                for name in default_commands(row) if carried is not None and name in carried}
    for ov in overrides:
        name = str(ov["command"])
        if name not in CATALOG:
            continue
        if not ov.get("enabled", True):
            bindings.pop(name, None)
            continue
        base = bindings.get(name, CommandBinding(name, handler_name, readback))
        other = handler_commands(str(ov.get("handler") or base.handler))
        if other is None or name not in other:
            bindings.pop(name, None)  # no encoder can carry it: not commandable
            continue
        bindings[name] = CommandBinding(
            name, str(ov.get("handler") or base.handler),
            base.readback if ov.get("readback") is None else bool(ov["readback"]),
            {str(k): str(v) for k, v in (ov.get("options") or {}).items()})
    delivery: Delivery = "on_wake" if row.get("wake_mode") == "on_wake" else "now"
    caps = row.get("capabilities") or {}
    return DeviceTypeCommands(
        device_type=str(row["device_type"]), protocol=str(row["protocol"]), bindings=bindings,
        valve_arming=bool(row.get("valve_arm_supported")), delivery=delivery,
        reply_timeout_s=float(caps.get("reply_timeout_s", 10.0)),
        max_attempts=int(caps.get("max_attempts", 3)))


@dataclass(frozen=True)
class DeviceRecord:
    """A target device with everything submission and dispatch need."""

    device_id: str
    device_type: str
    kind: str
    status: str
    protocol: str
    address: str
    region: str | None
    link_id: str | None
    service_point_id: str | None
    facts: DeviceFacts
    medium: str | None = None


_DEVICES_SQL = """
SELECT c.device_id, c.device_type, c.kind, c.status, c.address, c.service_point_id, c.link_id,
       c.region_id AS region, c.protocol, c.protocol_variant, c.command_handler,
       c.command_variant, c.wake_mode,
       c.has_valve, c.valve_arm_supported, c.read_back, c.medium, c.account_id, c.protected,
       dt.capabilities, dt.kind AS type_kind,
       sl.cause AS lock_cause, sl.locked_at AS lock_since, sl.command_id AS lock_command
FROM ledger.device_context c
JOIN ledger.device_types dt ON dt.device_type = c.device_type
LEFT JOIN ops.safety_locks sl ON sl.device_id = c.device_id AND sl.cleared_at IS NULL
WHERE c.device_id = ANY (%s)
"""


def load_devices(conn: psycopg.Connection[Any], device_ids: Sequence[str]
                 ) -> dict[str, DeviceRecord]:
    """Facts of the given devices that exist in the ledger (missing ones are left out)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_DEVICES_SQL, (list(device_ids),)).fetchall()
        types = sorted({r["device_type"] for r in rows})
        overrides: dict[str, list[dict[str, Any]]] = {t: [] for t in types}
        if types:
            # One query for rows and overrides would repeat the overrides per device; two
            # small ones are cheaper than that for a mass command.
            for ov in cur.execute("SELECT * FROM ledger.device_type_commands "
                                  "WHERE device_type = ANY (%s)", (types,)):
                overrides[ov["device_type"]].append(ov)
    # A meter may override its type's valve flag, so profiles are per type and valve.
    profiles: dict[tuple[str, bool], DeviceTypeCommands] = {}
    out: dict[str, DeviceRecord] = {}
    for r in rows:
        profile_key = (r["device_type"], bool(r["has_valve"]))
        profile = profiles.get(profile_key)
        if profile is None:
            type_row = {**r, "kind": r["type_kind"]}
            profile = profiles[profile_key] = profile_from_row(
                type_row, overrides[r["device_type"]])
        lock = (SafetyLock(r["lock_cause"], r["lock_since"], r["lock_command"])
                if r["lock_cause"] else None)
        facts = DeviceFacts(device_id=r["device_id"], profile=profile, region=r["region"],
                            account_id=r["account_id"], protected_customer=bool(r["protected"]),
                            safety_lock=lock)
        out[r["device_id"]] = DeviceRecord(
            device_id=r["device_id"], device_type=r["device_type"], kind=r["kind"],
            status=r["status"], protocol=r["protocol"], address=r["address"] or "",
            region=r["region"], link_id=r["link_id"], service_point_id=r["service_point_id"],
            facts=facts, medium=r["medium"])
    return out


def load_device(conn: psycopg.Connection[Any], device_id: str) -> DeviceRecord:
    found = load_devices(conn, [device_id]).get(device_id)
    if found is None:
        raise CommandNotFoundError(f"device '{device_id}' is not in the ledger",
                                   where=f"device {device_id}",
                                   hint="check the id, or import the device with "
                                        "`unimeter ledger import`")
    return found


@dataclass(frozen=True)
class Route:
    """Where a dispatch goes: the FEP and link holding the device, and how it is delivered."""

    delivery: Delivery
    fep: str | None = None
    service_point: str | None = None
    link_id: str | None = None
    online: bool = False
    last_heard: datetime | None = None


_has_sessions: dict[str, bool] = {}


def _sessions_table(conn: psycopg.Connection[Any]) -> bool:
    key = conn.info.dbname
    if key not in _has_sessions:
        row = conn.execute("SELECT to_regclass('ops.device_sessions') IS NOT NULL").fetchone()
        _has_sessions[key] = bool(row and row[0])
    return _has_sessions[key]


def routes_for(conn: psycopg.Connection[Any], devices: Sequence[DeviceRecord]
               ) -> dict[str, Route]:
    """The routes of several devices in one query (a dispatch batch, a wave)."""
    out: dict[str, Route] = {}
    if not devices:
        return out
    rows: list[tuple[Any, ...]] = []
    if _sessions_table(conn):
        links = sorted({d.link_id for d in devices if d.link_id})
        rows = conn.execute(
            "SELECT device_id, kind, link_id, fep, service_point, online, last_heard "
            "FROM ops.device_sessions WHERE device_id = ANY (%s) OR "
            "(kind = 'link' AND (link_id = ANY (%s) OR device_id = ANY (%s)))",
            ([d.device_id for d in devices], links, links)).fetchall()
    by_device = {r[0]: r for r in rows}
    by_link: dict[str, tuple[Any, ...]] = {}
    for r in rows:
        if r[1] == "link":
            for key in {r[2], r[0]} - {None}:
                held = by_link.get(key)
                if held is None or (r[5] and not held[5]):  # an online session wins
                    by_link[key] = r
    for device in devices:
        row = by_device.get(device.device_id) or (by_link.get(device.link_id)
                                                  if device.link_id else None)
        if row is None:
            out[device.device_id] = Route("on_wake", None, device.service_point_id,
                                          device.link_id)
            continue
        _, kind, link_id, fep, service_point, online, last_heard = row
        link = link_id or (row[0] if kind == "link" else None) or device.link_id
        delivery: Delivery = ("now" if online and device.facts.profile.delivery == "now"
                              else "on_wake")
        out[device.device_id] = Route(delivery, fep if online else None, service_point, link,
                                      bool(online), last_heard)
    return out


def route_for(conn: psycopg.Connection[Any], device: DeviceRecord) -> Route:
    """The route of one device, from the FEPs' session registry and the ledger."""
    return routes_for(conn, [device])[device.device_id]
