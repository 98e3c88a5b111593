"""What the CIS hears from us on ``sync.out.*``: device status, alarms, service exceptions and
data availability, translated from the platform's own topics and tables.

Pure translation functions (a message in, messages out) plus one database query for data
availability; the sync process (:mod:`devices.sync.service`) wires them to Kafka.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from schemas.messages import (
    Alert,
    CommandResult,
    DeviceEvent,
    Message,
    SyncDataAvailability,
    SyncDeviceStatus,
    SyncServiceException,
)

__all__ = [
    "STATUS_EVENTS",
    "alarm_for_cis",
    "data_availability",
    "status_from_event",
    "status_from_result",
]

#: Device events the CIS is told about (heartbeats and logins are too chatty for it).
STATUS_EVENTS = frozenset({"online", "offline", "alarm", "status", "valve_changed",
                           "battery_low", "tamper", "admission_rejected"})

#: Alert severities forwarded to the CIS.
CIS_SEVERITIES = frozenset({"warning", "major", "critical"})


def status_from_event(event: DeviceEvent, account_id: str | None = None
                      ) -> SyncDeviceStatus | None:
    """A ``device.events`` message as the CIS sees it, or None when it does not care."""
    if event.kind not in STATUS_EVENTS:
        return None
    attrs = event.attributes
    online: bool | None = {"online": True, "offline": False}.get(event.kind)
    valve = attrs.get("valve")
    battery = attrs.get("battery")
    return SyncDeviceStatus(
        device_id=event.meter_id or event.device_id, ts=event.ts, online=online,
        valve=None if valve is None else str(valve),
        battery=None if battery is None else str(battery), account_id=account_id,
        event=event.kind,
        detail=", ".join(f"{k}={v}" for k, v in sorted(attrs.items())
                         if k not in ("valve", "battery")))


def status_from_result(result: CommandResult, *, account_id: str | None = None,
                       device_kind: str = "device"
                       ) -> list[tuple[str, Message]]:
    """A command outcome: a failure becomes a service exception; a confirmed one that reports
    the valve becomes a device status."""
    out: list[tuple[str, Message]] = []
    if result.status in ("failed", "expired", "rejected"):
        out.append(("sync.out.service_exceptions", SyncServiceException(
            exception_id=f"{result.command_id}:{result.status}",
            kind=f"command_{result.status}", object_type=device_kind,
            object_id=result.device_id, ts=result.ts,
            reason=result.detail or f"command {result.status}", account_id=account_id,
            reference=result.command_id,
            attributes={"error_code": result.error_code, "attempt": result.attempt,
                        "fep": result.fep})))
    elif result.status == "confirmed" and "valve" in result.reply:
        out.append(("sync.out.device_status", SyncDeviceStatus(
            device_id=result.device_id, ts=result.ts, valve=str(result.reply["valve"]),
            account_id=account_id, event="command_confirmed",
            detail=f"command {result.command_id}")))
    return out


def alarm_for_cis(alert: Alert) -> Alert | None:
    """Alerts of warning severity or above go to the CIS unchanged."""
    return alert if alert.severity in CIS_SEVERITIES else None


def data_availability(conn: psycopg.Connection, day: date, zone: ZoneInfo,
                      *, meters: list[str] | None = None) -> list[SyncDataAvailability]:
    """Per active meter, how many raw readings of ``day`` (the utility's local day) arrived,
    against what its collection plans expect (86400 / shortest plan interval)."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = start + timedelta(days=1)
    rows = conn.execute("""
        WITH expected AS (
            SELECT device_id, min(interval_s) AS interval_s
              FROM ledger.collection_plan_devices WHERE interval_s IS NOT NULL
             GROUP BY device_id),
        got AS (
            SELECT meter_id, count(DISTINCT ts) AS readings, max(ts) AS last_ts
              FROM data.raw_readings WHERE ts >= %(start)s AND ts < %(end)s
             GROUP BY meter_id)
        SELECT md.meter_id, COALESCE(g.readings, 0), g.last_ts, md.account_id,
               CASE WHEN e.interval_s IS NULL THEN NULL ELSE 86400 / e.interval_s END
          FROM ledger.meter_dimensions md
          LEFT JOIN got g ON g.meter_id = md.meter_id
          LEFT JOIN expected e ON e.device_id = md.meter_id
         WHERE md.status = 'active' AND (%(meters)s::text[] IS NULL
                                         OR md.meter_id = ANY(%(meters)s))
         ORDER BY md.meter_id""", {"start": start, "end": end, "meters": meters}).fetchall()
    now = datetime.now(UTC)
    out = []
    for meter_id, readings, last_ts, account_id, expected in rows:
        out.append(SyncDataAvailability(
            meter_id=meter_id, day=day.isoformat(), readings=int(readings),
            expected=None if expected is None else int(expected), ts=now,
            last_reading_at=last_ts, account_id=account_id))
    return out


def account_of(conn: psycopg.Connection, device_id: str) -> tuple[str | None, str]:
    """The account and kind of a device (for the CIS's messages)."""
    row: Any = conn.execute("SELECT account_id, kind FROM ledger.device_context "
                            "WHERE device_id = %s", (device_id,)).fetchone()
    return (row[0], row[1]) if row else (None, "device")
