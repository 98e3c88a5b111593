"""Readings and aggregates: raw and validated readings of a meter, its consumption by hour,
day and month, and consumption by ledger dimension — bounded time ranges, paged."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from aggregates.definitions import LEVELS, hierarchy
from api.auth import Principal, require
from api.errors import ERROR_RESPONSES
from api.models import ConsumptionPage, ReadingPage, ValidatedReadingPage
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


@router.get("/v1/meters/{meter_id}/readings", response_model=ValidatedReadingPage,
            summary="Validated readings of a meter")
def get_readings(request: Request, principal: Reader, meter_id: str,
                 start: Annotated[datetime, Query(alias="from")],
                 end: Annotated[datetime, Query(alias="to")],
                 register: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
                 versions: Annotated[bool, Query(description="Every version (edits, "
                                                             "re-estimations), not only the "
                                                             "current one.")] = False,
                 limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
    """Readings after validation, estimation and editing, with quality, method, flags and
    interval consumption, in ``[from, to)``, oldest first."""
    check_range(start, end, api_settings(request).max_raw_range_days)
    ensure_device_visible(request, principal, meter_id)
    size = limit_of(request, limit)
    relation = "data.validated_readings" if versions else "data.validated_readings_current"
    where = ["meter_id = %s", "ts >= %s", "ts < %s"]
    args: list[Any] = [meter_id, start, end]
    if register:
        where.append("register = %s")
        args.append(register)
    if cursor:
        parts = cursor.split("|")
        try:
            after, reg, version = datetime.fromisoformat(parts[0]), parts[1], int(parts[2])
        except (ValueError, IndexError):
            raise InvalidParametersError("the cursor is not one this API gave", where="cursor",
                                         hint="pass next_cursor of the previous page") from None
        where.append("(ts, register, version) > (%s, %s, %s)")
        args.extend([after, reg, version])
    with connection(request) as conn:
        rows = conn.execute(
            "SELECT meter_id, register, ts, version, value, unit, quality, method, flags, "
            f"kind, consumption, received_at, validated_at FROM {relation} "
            f"WHERE {' AND '.join(where)} ORDER BY ts, register, version LIMIT %s",
            [*args, size + 1]).fetchall()
    items = [{"meter_id": r[0], "register": r[1], "ts": r[2], "version": r[3],
              "value": None if r[4] is None else str(r[4]), "unit": r[5], "quality": r[6],
              "method": r[7], "flags": list(r[8] or []), "kind": r[9],
              "consumption": None if r[10] is None else str(r[10]), "received_at": r[11],
              "validated_at": r[12]} for r in rows[:size]]
    next_cursor = None
    if len(rows) > size:
        last = items[-1]
        next_cursor = f"{last['ts'].isoformat()}|{last['register']}|{last['version']}"
    return {"items": items, "next_cursor": next_cursor}


Level = Literal["hourly", "daily", "monthly"]
_MEASURES = ("consumption", "reading_count", "interval_count", "estimated_count",
             "min_consumption", "max_consumption")
_COMBINE = {"consumption": "sum", "reading_count": "sum", "interval_count": "sum",
            "estimated_count": "sum", "min_consumption": "min", "max_consumption": "max"}
_DIMENSIONS = ("medium", "register", "unit", "customer_type", "region", "org_unit",
               "supply_node", "tariff_id")
assert set(_DIMENSIONS) == set(hierarchy("dimension_consumption").group_names)
assert set(LEVELS) == {"hourly", "daily", "monthly"}


def _max_days(request: Request, level: str) -> int:
    s = api_settings(request)
    return {"hourly": s.max_hourly_range_days, "daily": s.max_daily_range_days,
            "monthly": s.max_monthly_range_days}[level]


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not cursor.isdigit() or len(cursor) > 9:
        raise InvalidParametersError("the cursor is not one this API gave", where="cursor",
                                     hint="pass next_cursor of the previous page")
    return int(cursor)


def _measure_sql() -> str:
    return ", ".join(f"{_COMBINE[m]}({m}) AS {m}" for m in _MEASURES)


def _row(names: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(names, row, strict=True):
        if name in ("consumption", "min_consumption", "max_consumption"):
            out[name] = None if value is None else str(value)
        elif name.endswith("_count"):
            out[name] = int(value or 0)
        else:
            out[name] = value
    return out


@router.get("/v1/meters/{meter_id}/consumption/{level}", response_model=ConsumptionPage,
            summary="A meter's consumption by hour, day or month")
def get_meter_consumption(request: Request, principal: Annotated[Principal, Depends(
        require("readings:read", "aggregates:read"))], meter_id: str, level: Level,
        start: Annotated[datetime, Query(alias="from")],
        end: Annotated[datetime, Query(alias="to")],
        register: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
    """Buckets of ``[from, to)`` (hours in UTC; days and months in the utility's zone), with
    consumption, reading and interval counts, estimated intervals and the smallest and
    largest hourly part."""
    check_range(start, end, _max_days(request, level))
    ensure_device_visible(request, principal, meter_id)
    size, offset = limit_of(request, limit), _offset(cursor)
    relation = hierarchy("meter_consumption").relation(level)
    where: list[str] = ["meter_id = %s", "bucket >= %s", "bucket < %s"]
    args: list[Any] = [meter_id, start, end]
    if register:
        where.append("register = %s")
        args.append(register)
    names = ("bucket", "register", "unit", *_MEASURES)
    with connection(request) as conn:
        rows = conn.execute(
            f"SELECT bucket, register, unit, {_measure_sql()} FROM {relation} "
            f"WHERE {' AND '.join(where)} GROUP BY bucket, register, unit "
            "ORDER BY bucket, register LIMIT %s OFFSET %s",
            [*args, size + 1, offset]).fetchall()
    items = [_row(names, r) for r in rows[:size]]
    return {"items": items, "next_cursor": str(offset + size) if len(rows) > size else None}


Dimension = Literal["medium", "register", "unit", "customer_type", "region", "org_unit",
                    "supply_node", "tariff_id"]
Filter = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("/v1/consumption/{level}", response_model=ConsumptionPage,
            summary="Consumption by dimension (customer type, region, supply node …)")
def get_dimension_consumption(
        request: Request, principal: Annotated[Principal, Depends(require("aggregates:read"))],
        level: Level, start: Annotated[datetime, Query(alias="from")],
        end: Annotated[datetime, Query(alias="to")],
        group_by: Annotated[list[Dimension] | None, Query(max_length=8)] = None,
        medium: Filter = None, register: Filter = None, customer_type: Filter = None,
        region: Filter = None, org_unit: Filter = None, supply_node: Filter = None,
        tariff_id: Filter = None, limit: Limit = None, cursor: Cursor = None
        ) -> dict[str, Any]:
    """Buckets of ``[from, to)`` grouped by the chosen ledger dimensions (default: medium,
    register, unit) — the attribution each reading had when it was validated. A caller limited
    to regions gets only those regions."""
    check_range(start, end, _max_days(request, level))
    size, offset = limit_of(request, limit), _offset(cursor)
    groups = tuple(dict.fromkeys(group_by or ("medium", "register", "unit")))
    relation = hierarchy("dimension_consumption").relation(level)
    where: list[str] = ["bucket >= %s", "bucket < %s"]
    args: list[Any] = [start, end]
    for column, value in (("medium", medium), ("register", register),
                          ("customer_type", customer_type), ("region", region),
                          ("org_unit", org_unit), ("supply_node", supply_node),
                          ("tariff_id", tariff_id)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    if principal.regions is not None:
        where.append("region = ANY (%s)")
        args.append(principal.region_list())
    keys = ", ".join(("bucket", *groups))
    names = ("bucket", *groups, *_MEASURES)
    with connection(request) as conn:
        rows = conn.execute(
            f"SELECT {keys}, {_measure_sql()} FROM {relation} WHERE {' AND '.join(where)} "
            f"GROUP BY {keys} ORDER BY {keys} LIMIT %s OFFSET %s",
            [*args, size + 1, offset]).fetchall()
    items = [_row(names, r) for r in rows[:size]]
    return {"items": items, "next_cursor": str(offset + size) if len(rows) > size else None}

