"""The collection network and its links to places, supply network and billing structure:
queries, GeoJSON for maps, and a node/edge graph for topology views.

Strategy: the ledger keeps each device's and each place's ancestor ``path`` (maintained by
triggers), so "everything under a concentrator" is one indexed ``path @> ARRAY[id]`` lookup
and "the path to a meter" is a join on the ids of its paths — no recursive walk per request.
The supply network and the organisation are small trees walked with recursive CTEs.

Personal data stays out: GeoJSON and graphs carry ids, kinds, names of places and devices,
status and coordinates, never customer names, phones or addresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devices.errors import NotFoundError

__all__ = [
    "GRAPH_LAYERS",
    "MeterPath",
    "devices_under",
    "geojson",
    "graph",
    "meters_in",
    "path_to_meter",
]

#: Layers a graph can show: collection network, places, supply network, billing, organisation.
GRAPH_LAYERS = ("network", "places", "supply", "billing", "organisation")


def _rows(conn: psycopg.Connection, query: str, params: Sequence[Any] | dict[str, Any] = ()
          ) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query.encode(), params)
        return cur.fetchall()


def _require(conn: psycopg.Connection, table: str, key: str, value: str, what: str) -> None:
    found = conn.execute(f"SELECT 1 FROM ledger.{table} WHERE {key} = %s".encode(),
                         (value,)).fetchone()
    if found is None:
        raise NotFoundError(f"no {what} '{value}' in the ledger", where=f"ledger.{table}",
                            hint=f"check the id; `unimeter ledger export --kind {table}` "
                                 "lists them")


def devices_under(conn: psycopg.Connection, device_id: str, *,
                  kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every device below ``device_id`` (a concentrator, collector, DTU, RTU) with its depth
    below it, parents before children; ``kinds`` filters (e.g. only meters)."""
    _require(conn, "devices", "device_id", device_id, "device")
    rows = _rows(conn, """
        SELECT c.device_id, c.kind, c.device_type, c.status, c.address, c.point_no,
               c.parent_device_id, c.link_id, c.service_point_id, c.location_id,
               c.account_id,
               cardinality(c.path) - array_position(c.path, %(id)s) AS depth
          FROM ledger.device_context c
         WHERE c.path @> ARRAY[%(id)s]::text[] AND c.device_id <> %(id)s
         ORDER BY cardinality(c.path), c.point_no NULLS LAST, c.device_id""",
                 {"id": device_id})
    wanted = set(kinds or ())
    return [r for r in rows if not wanted or r["kind"] in wanted]


def meters_in(conn: psycopg.Connection, location_id: str) -> list[dict[str, Any]]:
    """The meters of a building (or of a unit, area or region): located there or below."""
    _require(conn, "locations", "location_id", location_id, "location")
    return _rows(conn, """
        SELECT md.meter_id, md.status, md.medium, md.size, md.location_id, md.account_id,
               md.customer_type, md.tariff_id, md.link_id, md.device_type
          FROM ledger.meter_dimensions md
          JOIN ledger.locations l ON l.location_id = md.location_id
         WHERE l.path @> ARRAY[%s]::text[]
         ORDER BY md.location_id, md.meter_id""", (location_id,))


@dataclass
class MeterPath:
    """Everything between the head-end and a meter, and between the meter and the bill."""

    meter_id: str
    network: list[dict[str, Any]] = field(default_factory=list)
    places: list[dict[str, Any]] = field(default_factory=list)
    supply: list[dict[str, Any]] = field(default_factory=list)
    organisation: list[dict[str, Any]] = field(default_factory=list)
    billing: dict[str, Any] = field(default_factory=dict)
    link: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"meter_id": self.meter_id, "link": self.link, "network": self.network,
                "places": self.places, "supply": self.supply,
                "organisation": self.organisation, "billing": self.billing}


def path_to_meter(conn: psycopg.Connection, meter_id: str) -> MeterPath:
    """The path to a meter: service point and FEPs → link → DTU/concentrator → collector →
    meter; region → … → unit; station → … → pipe; org units; account, tariff."""
    dims = _rows(conn, "SELECT * FROM ledger.meter_dimensions WHERE meter_id = %s",
                 (meter_id,))
    if not dims:
        raise NotFoundError(f"no meter '{meter_id}' in the ledger", where="ledger.meters",
                            hint="check the meter id")
    meter = dims[0]
    out = MeterPath(meter_id)
    out.network = _rows(conn, """
        SELECT d.device_id, d.kind, d.device_type, d.status, d.address, d.point_no,
               d.parent_port, d.link_id, d.service_point_id
          FROM unnest(%s::text[]) WITH ORDINALITY AS p(device_id, ord)
          JOIN ledger.devices d USING (device_id) ORDER BY p.ord""", (meter["device_path"],))
    if meter["location_id"]:
        out.places = _rows(conn, """
            SELECT l.location_id, l.kind, l.name, l.latitude, l.longitude, l.org_unit_id
              FROM ledger.locations m,
                   unnest(m.path) WITH ORDINALITY AS p(location_id, ord)
              JOIN ledger.locations l USING (location_id)
             WHERE m.location_id = %s ORDER BY p.ord""", (meter["location_id"],))
    if meter["supply_node"]:
        out.supply = _rows(conn, """
            WITH RECURSIVE up AS (
                SELECT supply_node_id, parent_id, kind, name, 0 AS depth
                  FROM ledger.supply_nodes WHERE supply_node_id = %s
                UNION ALL
                SELECT s.supply_node_id, s.parent_id, s.kind, s.name, up.depth + 1
                  FROM ledger.supply_nodes s JOIN up ON s.supply_node_id = up.parent_id
                 WHERE up.depth < 32)
            SELECT supply_node_id, kind, name FROM up ORDER BY depth DESC""",
                           (meter["supply_node"],))
    if meter["org_unit"]:
        out.organisation = _rows(conn, """
            WITH RECURSIVE up AS (
                SELECT org_unit_id, parent_id, kind, name, 0 AS depth
                  FROM ledger.org_units WHERE org_unit_id = %s
                UNION ALL
                SELECT o.org_unit_id, o.parent_id, o.kind, o.name, up.depth + 1
                  FROM ledger.org_units o JOIN up ON o.org_unit_id = up.parent_id
                 WHERE up.depth < 32)
            SELECT org_unit_id, kind, name FROM up ORDER BY depth DESC""", (meter["org_unit"],))
    out.billing = {k: meter[k] for k in ("account_id", "customer_type", "tariff_id",
                                         "vee_group")}
    feps = _rows(conn, "SELECT fep_id, role FROM ledger.fep_assignments "
                       "WHERE service_point_id = %s ORDER BY role, fep_id",
                 (meter["service_point"],)) if meter["service_point"] else []
    out.link = {"link_id": meter["link_id"], "service_point": meter["service_point"],
                "feps": feps}
    return out


# --------------------------------------------------------------------------- GeoJSON


def _num(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def _point(lon: Any, lat: Any) -> dict[str, Any] | None:
    if lon is None or lat is None:
        return None
    return {"type": "Point", "coordinates": [_num(lon), _num(lat)]}


def _scope(conn: psycopg.Connection, root: str | None) -> tuple[str, str | None]:
    """``root`` is a device or a place; returns which and the id (None = everything)."""
    if root is None:
        return "all", None
    if conn.execute("SELECT 1 FROM ledger.devices WHERE device_id = %s", (root,)).fetchone():
        return "device", root
    if conn.execute("SELECT 1 FROM ledger.locations WHERE location_id = %s",
                    (root,)).fetchone():
        return "location", root
    raise NotFoundError(f"'{root}' is neither a device nor a location",
                        hint="give a concentrator/DTU id or a region/area/building id")


def _devices_in_scope(conn: psycopg.Connection, root: str | None) -> list[dict[str, Any]]:
    scope, root_id = _scope(conn, root)
    # A device without coordinates is drawn at its location's (or its account premises').
    base = """
        SELECT c.device_id, c.kind, c.device_type, c.status, c.parent_device_id,
               c.location_id, c.link_id, c.service_point_id, c.account_id, c.region_id,
               COALESCE(d.longitude, l.longitude, b.longitude) AS longitude,
               COALESCE(d.latitude, l.latitude, b.latitude) AS latitude
          FROM ledger.device_context c
          JOIN ledger.devices d ON d.device_id = c.device_id
          LEFT JOIN ledger.locations l ON l.location_id = c.location_id
          LEFT JOIN LATERAL (
                SELECT x.longitude, x.latitude FROM ledger.locations x
                 WHERE x.location_id = ANY (l.path) AND x.latitude IS NOT NULL
                 ORDER BY cardinality(x.path) DESC LIMIT 1) b ON true"""
    if scope == "device":
        return _rows(conn, base + " WHERE c.path @> ARRAY[%s]::text[] ORDER BY c.device_id",
                     (root_id,))
    if scope == "location":
        return _rows(conn, base + " WHERE l.path @> ARRAY[%s]::text[] ORDER BY c.device_id",
                     (root_id,))
    return _rows(conn, base + " ORDER BY c.device_id")


def geojson(conn: psycopg.Connection, root: str | None = None, *,
            include: Sequence[str] = ("places", "devices", "links", "supply")
            ) -> dict[str, Any]:
    """A GeoJSON ``FeatureCollection`` for a map: places, devices (at their own coordinates or
    their place's), collection links as lines, supply nodes and pipes. ``root`` limits it
    to a concentrator's/DTU's subtree or a place and everything in it."""
    features: list[dict[str, Any]] = []
    devices = _devices_in_scope(conn, root)
    scope, root_id = _scope(conn, root)
    if "places" in include:
        query = ("SELECT location_id, kind, name, parent_id, org_unit_id, latitude, longitude "
                 "FROM ledger.locations WHERE latitude IS NOT NULL")
        params: tuple[Any, ...] = ()
        if scope == "location":
            query += " AND path @> ARRAY[%s]::text[]"
            params = (root_id,)
        elif scope == "device":
            query += " AND location_id = ANY(%s)"
            params = (list({d["location_id"] for d in devices if d["location_id"]}),)
        for row in _rows(conn, query + " ORDER BY cardinality(path), location_id", params):
            features.append({"type": "Feature", "id": f"location:{row['location_id']}",
                             "geometry": _point(row["longitude"], row["latitude"]),
                             "properties": {"layer": "places", "id": row["location_id"],
                                            "kind": row["kind"], "name": row["name"],
                                            "parent": row["parent_id"],
                                            "org_unit": row["org_unit_id"]}})
    by_id = {d["device_id"]: d for d in devices}
    if "devices" in include:
        for d in devices:
            features.append({"type": "Feature", "id": f"device:{d['device_id']}",
                             "geometry": _point(d["longitude"], d["latitude"]),
                             "properties": {"layer": "devices", "id": d["device_id"],
                                            "kind": d["kind"], "device_type": d["device_type"],
                                            "status": d["status"], "link_id": d["link_id"],
                                            "service_point": d["service_point_id"],
                                            "parent": d["parent_device_id"],
                                            "account_id": d["account_id"],
                                            "location_id": d["location_id"]}})
    if "links" in include:
        for d in devices:
            parent = by_id.get(d["parent_device_id"] or "")
            if parent is None or d["longitude"] is None or parent["longitude"] is None:
                continue
            features.append({
                "type": "Feature", "id": f"link:{parent['device_id']}>{d['device_id']}",
                "geometry": {"type": "LineString", "coordinates": [
                    [_num(parent["longitude"]), _num(parent["latitude"])],
                    [_num(d["longitude"]), _num(d["latitude"])]]},
                "properties": {"layer": "links", "from": parent["device_id"],
                               "to": d["device_id"], "relation": "collects"}})
    if "supply" in include and scope == "all":
        for row in _rows(conn, "SELECT supply_node_id, kind, name, parent_id, medium, "
                               "pressure_level, latitude, longitude, geometry "
                               "FROM ledger.supply_nodes ORDER BY supply_node_id"):
            geometry = row["geometry"] or _point(row["longitude"], row["latitude"])
            if geometry is None:
                continue
            features.append({"type": "Feature", "id": f"supply:{row['supply_node_id']}",
                             "geometry": geometry,
                             "properties": {"layer": "supply", "id": row["supply_node_id"],
                                            "kind": row["kind"], "name": row["name"],
                                            "parent": row["parent_id"],
                                            "medium": row["medium"],
                                            "pressure_level": row["pressure_level"]}})
    return {"type": "FeatureCollection", "features": features,
            "properties": {"root": root, "devices": len(devices)}}


# --------------------------------------------------------------------------- graph


def graph(conn: psycopg.Connection, root: str | None = None, *,
          layers: Sequence[str] = ("network", "places")) -> dict[str, Any]:
    """Nodes and edges for a topology view (``{"nodes": [...], "edges": [...]}``).

    Node ids are prefixed by what they are (``device:``, ``location:``, ``supply:``,
    ``account:``, ``org:``); edges carry a ``relation``: ``collects`` (parent device → child),
    ``contains`` (place → place), ``located_in`` (device → place), ``supplies`` (supply node →
    node or meter), ``bills`` (account → meter), ``governs`` (org unit → place / org unit).
    """
    unknown = [layer for layer in layers if layer not in GRAPH_LAYERS]
    if unknown:
        raise ValueError(f"unknown layer(s) {', '.join(unknown)}; known: "
                         f"{', '.join(GRAPH_LAYERS)}")
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []

    def node(node_id: str, **props: Any) -> None:
        nodes.setdefault(node_id, {"id": node_id, **props})

    def edge(source: str, target: str, relation: str) -> None:
        edges.append({"source": source, "target": target, "relation": relation})

    devices = _devices_in_scope(conn, root)
    in_scope = {d["device_id"] for d in devices}
    for d in devices:
        node(f"device:{d['device_id']}", type="device", kind=d["kind"], label=d["device_id"],
             status=d["status"], device_type=d["device_type"])
        if "network" in layers and d["parent_device_id"] in in_scope:
            edge(f"device:{d['parent_device_id']}", f"device:{d['device_id']}", "collects")
    location_ids = {d["location_id"] for d in devices if d["location_id"]}
    if "places" in layers or "organisation" in layers:
        places = _rows(conn, """
            SELECT DISTINCT l.location_id, l.kind, l.name, l.parent_id, l.org_unit_id
              FROM ledger.locations m
              JOIN ledger.locations l ON l.location_id = ANY (m.path)
             WHERE m.location_id = ANY(%s)""", (list(location_ids),))
        for p in places:
            node(f"location:{p['location_id']}", type="location", kind=p["kind"],
                 label=p["name"])
            if p["parent_id"]:
                edge(f"location:{p['parent_id']}", f"location:{p['location_id']}", "contains")
            if "organisation" in layers and p["org_unit_id"]:
                edge(f"org:{p['org_unit_id']}", f"location:{p['location_id']}", "governs")
        for d in devices:
            if d["location_id"]:
                edge(f"device:{d['device_id']}", f"location:{d['location_id']}", "located_in")
    if "organisation" in layers:
        for o in _rows(conn, "SELECT org_unit_id, parent_id, kind, name FROM ledger.org_units"):
            node(f"org:{o['org_unit_id']}", type="org_unit", kind=o["kind"], label=o["name"])
            if o["parent_id"]:
                edge(f"org:{o['parent_id']}", f"org:{o['org_unit_id']}", "governs")
    meters = [d["device_id"] for d in devices if d["kind"] == "meter"]
    if "supply" in layers:
        for s in _rows(conn, "SELECT supply_node_id, parent_id, kind, name "
                             "FROM ledger.supply_nodes"):
            node(f"supply:{s['supply_node_id']}", type="supply_node", kind=s["kind"],
                 label=s["name"])
            if s["parent_id"]:
                edge(f"supply:{s['parent_id']}", f"supply:{s['supply_node_id']}", "supplies")
        for m in _rows(conn, "SELECT meter_id, supply_node_id FROM ledger.meters "
                             "WHERE meter_id = ANY(%s) AND supply_node_id IS NOT NULL",
                       (meters,)):
            edge(f"supply:{m['supply_node_id']}", f"device:{m['meter_id']}", "supplies")
    if "billing" in layers:
        for a in _rows(conn, """
                SELECT m.meter_id, a.account_id, a.billing_mode, a.tariff_id, a.status,
                       cu.customer_type
                  FROM ledger.meters m JOIN ledger.accounts a USING (account_id)
                  JOIN ledger.customers cu USING (customer_id)
                 WHERE m.meter_id = ANY(%s)""", (meters,)):
            node(f"account:{a['account_id']}", type="account", kind=a["billing_mode"],
                 label=a["account_id"], tariff_id=a["tariff_id"], status=a["status"],
                 customer_type=a["customer_type"])
            edge(f"account:{a['account_id']}", f"device:{a['meter_id']}", "bills")
    return {"root": root, "layers": list(layers), "nodes": list(nodes.values()),
            "edges": edges}
