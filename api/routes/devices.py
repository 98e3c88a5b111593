"""Devices and the collection network (topology, GeoJSON, graph)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from api.auth import Principal, require
from api.errors import ERROR_RESPONSES
from api.models import CommandOut, CommandPage, DeviceDetailOut, DevicePage
from api.routes._common import (
    Cursor,
    Limit,
    connection,
    ensure_device_visible,
    limit_of,
    not_visible,
    service,
)
from devices import topology
from devices.commands.errors import CommandNotFoundError
from devices.errors import NotFoundError
from devices.inventory import device_detail, list_devices

router = APIRouter(tags=["devices"], responses=ERROR_RESPONSES)

Reader = Annotated[Principal, Depends(require("devices:read"))]
TopologyReader = Annotated[Principal, Depends(require("topology:read"))]
Text = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("/v1/devices", response_model=DevicePage, summary="List devices")
def get_devices(request: Request, principal: Reader, region: Text = None,
                status: Literal["in_stock", "installed", "active", "removed"] | None = None,
                device_type: Text = None,
                kind: Literal["meter", "dtu", "rtu", "concentrator", "collector"] | None = None,
                location_id: Text = None, under_device: Text = None, search: Text = None,
                limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
    """Devices ordered by id, filtered; only those of the caller's regions."""
    with connection(request) as conn:
        page = list_devices(conn, regions=principal.region_list(), region=region,
                            status=status, device_type=device_type, kind=kind,
                            location_id=location_id, under_device=under_device, search=search,
                            limit=limit_of(request, limit), cursor=cursor)
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/v1/devices/{device_id}", response_model=DeviceDetailOut, summary="One device")
def get_device(request: Request, principal: Reader, device_id: str) -> dict[str, Any]:
    """Ledger facts, the commands its type supports (with read-back), its safety lock and its
    latest commands."""
    with connection(request) as conn:
        return device_detail(conn, device_id, regions=principal.region_list())


@router.get("/v1/devices/{device_id}/commands", response_model=CommandPage,
            summary="A device's commands")
def get_device_commands(request: Request, principal: Annotated[Principal, Depends(
        require("commands:read"))], device_id: str, limit: Limit = None,
        cursor: Cursor = None) -> dict[str, Any]:
    ensure_device_visible(request, principal, device_id)
    page = service(request).list(device_id=device_id, limit=limit_of(request, limit),
                                 cursor=cursor)
    return {"items": [CommandOut.model_validate(r.to_dict()) for r in page.items],
            "next_cursor": page.next_cursor}


def _ensure_root_visible(request: Request, principal: Principal, root: str | None) -> None:
    if principal.regions is None:
        return
    if root is None:
        raise not_visible("scope", "(the whole utility)")
    with connection(request) as conn:
        row = conn.execute(
            "SELECT region_id FROM ledger.device_context WHERE device_id = %s UNION ALL "
            "SELECT path[1] FROM ledger.locations WHERE location_id = %s LIMIT 1",
            (root, root)).fetchone()
    if row is None or not principal.sees(row[0]):
        raise not_visible("device or location", root)


@router.get("/v1/topology/devices/{device_id}/below", summary="Everything under a device")
def get_below(request: Request, principal: TopologyReader, device_id: str,
              kind: Annotated[list[str] | None, Query(max_length=5)] = None
              ) -> list[dict[str, Any]]:
    """Every device below a DTU, concentrator or collector, parents before children."""
    ensure_device_visible(request, principal, device_id)
    with connection(request) as conn:
        try:
            return topology.devices_under(conn, device_id, kinds=kind)
        except NotFoundError as exc:
            raise CommandNotFoundError(exc.message, where=exc.where) from None


@router.get("/v1/topology/meters/{meter_id}/path", summary="The path to a meter")
def get_path(request: Request, principal: TopologyReader, meter_id: str) -> dict[str, Any]:
    """Service point and FEPs → link → DTU/concentrator → collector → meter; the places, the
    supply network, the organisation, the account and tariff."""
    ensure_device_visible(request, principal, meter_id)
    with connection(request) as conn:
        return topology.path_to_meter(conn, meter_id).as_dict()


@router.get("/v1/topology/locations/{location_id}/meters", summary="Meters of a place")
def get_meters_in(request: Request, principal: TopologyReader, location_id: str
                  ) -> list[dict[str, Any]]:
    _ensure_root_visible(request, principal, location_id)
    with connection(request) as conn:
        return topology.meters_in(conn, location_id)


@router.get("/v1/topology/geojson", summary="The network as GeoJSON")
def get_geojson(request: Request, principal: TopologyReader, root: Text = None,
                include: Annotated[list[Literal["places", "devices", "links", "supply"]] | None,
                                   Query()] = None) -> dict[str, Any]:
    """A FeatureCollection for maps; ``root`` limits it to a subtree or a place (required for
    callers limited to regions)."""
    _ensure_root_visible(request, principal, root)
    with connection(request) as conn:
        return topology.geojson(conn, root, include=include or ("places", "devices", "links",
                                                                 "supply"))


@router.get("/v1/topology/graph", summary="The network as nodes and edges")
def get_graph(request: Request, principal: TopologyReader, root: Text = None,
              layers: Annotated[list[Literal["network", "places", "supply", "billing",
                                             "organisation"]] | None, Query()] = None
              ) -> dict[str, Any]:
    _ensure_root_visible(request, principal, root)
    with connection(request) as conn:
        return topology.graph(conn, root, layers=layers or ("network", "places"))
