"""Topology queries and exports over the demo ledger on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devices.errors import NotFoundError
from devices.importer import import_files
from devices.topology import GRAPH_LAYERS, devices_under, geojson, graph, meters_in, path_to_meter
from tests.plugins.services import DbHandle

pytestmark = pytest.mark.integration

DEMO = sorted((Path(__file__).parents[1] / "data" / "ledger" / "demo").glob("*.csv"))


@pytest.fixture
def demo(database: DbHandle) -> Iterator[psycopg.Connection]:
    with database.connect("api") as conn:
        import_files(conn, DEMO, actor="test")
        yield conn


def test_everything_under_a_concentrator(demo: psycopg.Connection) -> None:
    rows = devices_under(demo, "CON-GE-01")
    assert [(r["device_id"], r["depth"]) for r in rows] == [
        ("COL-GE-B1", 1), ("COL-GE-B2", 1), ("GM-0001", 2), ("GM-0002", 2), ("GM-0003", 2),
        ("GM-0004", 2)]
    assert [r["device_id"] for r in devices_under(demo, "COL-GE-B2", kinds=("meter",))] == [
        "GM-0004"]
    with pytest.raises(NotFoundError, match="no device 'NOPE'"):
        devices_under(demo, "NOPE")


def test_meters_of_a_building_area_and_unit(demo: psycopg.Connection) -> None:
    assert [r["meter_id"] for r in meters_in(demo, "NORTH-GE-B1")] == [
        "GM-0001", "GM-0002", "GM-0003"]
    assert len(meters_in(demo, "NORTH-GE")) == 5
    assert [r["meter_id"] for r in meters_in(demo, "SOUTH-LK-B1-101")] == ["EM-0001", "WM-0001"]


def test_path_to_a_meter(demo: psycopg.Connection) -> None:
    path = path_to_meter(demo, "GM-0004")
    assert [d["device_id"] for d in path.network] == ["CON-GE-01", "COL-GE-B2", "GM-0004"]
    assert [p["location_id"] for p in path.places] == [
        "NORTH", "NORTH-GE", "NORTH-GE-B2", "NORTH-GE-B2-101"]
    assert [s["supply_node_id"] for s in path.supply] == ["GS-1", "RG-1", "PZ-N1", "PIPE-GE-1"]
    assert [o["org_unit_id"] for o in path.organisation] == ["CG", "CG-N", "CG-N-S1"]
    assert path.link["link_id"] == "4201-0001"
    assert [f["fep_id"] for f in path.link["feps"]] == ["fep-1", "fep-2"]
    assert path.billing["tariff_id"] == "GAS-RES"
    # An NB-IoT meter holds its own link.
    assert path_to_meter(demo, "GM-0005").link["link_id"] == "NB-864000000000005"


def test_geojson_has_points_lines_and_no_personal_data(demo: psycopg.Connection) -> None:
    collection = geojson(demo)
    assert collection["type"] == "FeatureCollection"
    by_id = {f["id"]: f for f in collection["features"]}
    # A meter without coordinates sits at its building's.
    assert by_id["device:GM-0001"]["geometry"] == {"type": "Point",
                                                   "coordinates": [114.3051, 30.6211]}
    link = by_id["link:COL-GE-B1>GM-0001"]
    assert link["geometry"]["type"] == "LineString"
    assert by_id["supply:PIPE-GE-1"]["geometry"]["type"] == "LineString"
    text = str(collection)
    for personal in ("Zhang Wei", "13800000001", "Garden Rd 1-101"):
        assert personal not in text
    scoped = geojson(demo, "CON-RV-01")
    assert {f["properties"]["id"] for f in scoped["features"]
            if f["properties"]["layer"] == "devices"} == {"CON-RV-01", "GM-0006", "GM-0007"}


def test_graph_layers(demo: psycopg.Connection) -> None:
    view = graph(demo, "DTU-LK-01", layers=GRAPH_LAYERS)
    edges = {(e["source"], e["target"], e["relation"]) for e in view["edges"]}
    assert ("device:DTU-LK-01", "device:WM-0001", "collects") in edges
    assert ("account:A0008", "device:WM-0001", "bills") in edges
    assert ("location:SOUTH-LK-B1", "location:SOUTH-LK-B1-101", "contains") in edges
    assert ("org:CG-S", "location:SOUTH", "governs") in edges
    ids = {n["id"] for n in view["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in view["edges"]
               if e["relation"] != "supplies")
    with pytest.raises(ValueError, match="unknown layer"):
        graph(demo, layers=("rivers",))


def test_history_of_a_meter_shows_device_and_meter_changes(demo: psycopg.Connection) -> None:
    from devices.ledger import acting_as, history_of

    with demo.transaction():
        acting_as(demo, "alice", "meter replaced in the field")
        demo.execute("UPDATE ledger.devices SET status = 'removed' WHERE device_id = 'GM-0002'")
        demo.execute("UPDATE ledger.meters SET account_id = NULL WHERE meter_id = 'GM-0002'")
    rows = history_of(demo, "GM-0002")
    assert [(r["entity"], r["op"]) for r in rows[:2]] == [("meters", "update"),
                                                          ("devices", "update")]
    assert rows[0]["after"] == {"account_id": None}
    assert rows[1]["after"]["status"] == "removed"
    assert {r["actor"] for r in rows[:2]} == {"alice"}
    assert rows[-1]["op"] == "insert"
    assert [r["entity"] for r in history_of(demo, "A0001", entity="account")] == ["accounts"]
