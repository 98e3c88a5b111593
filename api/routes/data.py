"""Readings and aggregates of one meter, with bounded time ranges and keyset pages."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.auth import Principal, require
from api.errors import ERROR_RESPONSES
from api.models import ReadingPage
from api.routes._common import Cursor, Limit, connection, ensure_device_visible, limit_of
from api.routes._common import settings as api_settings
from devices.commands.errors import InvalidParametersError

router = APIRouter(tags=["readings"], responses=ERROR_RESPONSES)

Reader = Annotated[Principal, Depends(require("readings:read"))]


def check_range(start: datetime, end: datetime, max_days: int) -> None:
    """Refuse an empty, inverted, zone-less or too long range with what is allowed."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidParametersError("from and to need a time zone (e.g. +08:00 or Z)",
                                     where="from/to")
    if end <= start:
        raise InvalidParametersError("to must be after from", where="from/to")
    if end - start > timedelta(days=max_days):
        raise InvalidParametersError(f"the range is longer than {max_days} days",
                                     where="from/to", hint="split the query into shorter "
                                                           "ranges or use a coarser level")


@router.get("/v1/meters/{meter_id}/readings/raw", response_model=ReadingPage,
            summary="Raw readings of a meter")
def get_raw_readings(request: Request, principal: Reader, meter_id: str,
                     start: Annotated[datetime, Query(alias="from")],
                     end: Annotated[datetime, Query(alias="to")],
                     register: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
                     limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
    """Readings as decoded from the meter, before validation, in ``[from, to)``, oldest
    first."""
    check_range(start, end, api_settings(request).max_raw_range_days)
    ensure_device_visible(request, principal, meter_id)
    size = limit_of(request, limit)
    where = ["meter_id = %s", "ts >= %s", "ts < %s"]
    args: list[Any] = [meter_id, start, end]
    if register:
        where.append("register = %s")
        args.append(register)
    if cursor:
        at, sep, reg = cursor.partition("|")
        try:
            after = datetime.fromisoformat(at)
        except ValueError:
            after = None
        if not sep or after is None or after.tzinfo is None:
            raise InvalidParametersError("the cursor is not one this API gave", where="cursor",
                                         hint="pass next_cursor of the previous page")
        where.append("(ts, register) > (%s, %s)")
        args.extend([after, reg])
    with connection(request) as conn:
        rows = conn.execute(
            "SELECT meter_id, register, ts, value, unit, kind, interval_s, status, received_at, "
            f"source FROM data.raw_readings WHERE {' AND '.join(where)} "
            "ORDER BY ts, register LIMIT %s", [*args, size + 1]).fetchall()
    items = [{"meter_id": r[0], "register": r[1], "ts": r[2], "value": str(r[3]),
              "unit": r[4], "kind": r[5], "interval_s": r[6], "status": list(r[7] or []),
              "received_at": r[8], "source": r[9]} for r in rows[:size]]
    next_cursor = (f"{items[-1]['ts'].isoformat()}|{items[-1]['register']}"
                   if len(rows) > size else None)
    return {"items": items, "next_cursor": next_cursor}
