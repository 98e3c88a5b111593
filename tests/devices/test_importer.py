"""Batch import and export on a real PostgreSQL: validation, all-or-nothing, idempotence."""

from __future__ import annotations

import filecmp
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from devices.errors import ImportRejectedError
from devices.importer import bulk_load, export_ledger, import_files, resolve_kinds
from tests.plugins.services import DbHandle

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "data" / "ledger"
DEMO = sorted((DATA / "demo").glob("*.csv"))
ZONE = "Asia/Shanghai"


@pytest.fixture
def api(database: DbHandle) -> Iterator[psycopg.Connection]:
    with database.connect("api") as conn:
        yield conn


@pytest.fixture
def demo(api: psycopg.Connection) -> psycopg.Connection:
    import_files(api, DEMO, actor="test", timezone=ZONE)
    return api


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM ledger.{table}").fetchone()
    assert row is not None
    return int(row[0])


def test_demo_ledger_imports_and_reimport_changes_nothing(api: psycopg.Connection) -> None:
    first = import_files(api, DEMO, actor="test", timezone=ZONE)
    assert first.counts["meters"].inserted == 10
    assert first.counts["locations"].inserted == 17
    history, outbox = _count(api, "history"), _count(api, "outbox")
    versions = api.execute("SELECT sum(row_version) FROM ledger.devices").fetchone()
    second = import_files(api, DEMO, actor="test", timezone=ZONE)
    assert second.changed == 0
    assert second.counts["meters"].unchanged == 10
    assert (_count(api, "history"), _count(api, "outbox")) == (history, outbox)
    assert api.execute("SELECT sum(row_version) FROM ledger.devices").fetchone() == versions
    runs = api.execute("SELECT status FROM ledger.import_runs ORDER BY import_id").fetchall()
    assert runs == [("applied",), ("unchanged",)]
    # What the files say ended up where the stream reads it.
    row = api.execute("SELECT link_id, service_point, region, org_unit, tariff_id, vee_group, "
                      "qmax FROM ledger.meter_dimensions WHERE meter_id = 'GM-0002'").fetchone()
    assert row == ("4201-0001", "SP-376", "NORTH", "CG-N-S1", "GAS-RES", "gas-residential",
                   Decimal("6"))
    installed = api.execute("SELECT installed_at FROM ledger.devices WHERE device_id = "
                            "'GM-0002'").fetchone()
    assert installed == (datetime(2024, 2, 29, 16, 0, tzinfo=UTC),)  # 2024-03-01 in Shanghai
    tiers = api.execute("SELECT tiers FROM ledger.tariff_versions WHERE tariff_id = 'GAS-RES'"
                        ).fetchone()
    assert tiers == ([{"upper": "400", "price": "2.67"}, {"upper": "900", "price": "3.15"},
                      {"upper": None, "price": "3.94"}],)


def test_every_bad_row_is_reported_and_nothing_is_applied(demo: psycopg.Connection) -> None:
    before = (_count(demo, "devices"), _count(demo, "history"), _count(demo, "outbox"))
    with pytest.raises(ImportRejectedError) as info:
        import_files(demo, [DATA / "bad" / "meters.csv"], actor="test", timezone=ZONE)
    found = {(p.line, p.column, p.reason) for p in info.value.context["problems"]}

    def has(line: int, column: str, text: str) -> bool:
        return any(ln == line and col == column and text in reason
                   for ln, col, reason in found)

    assert has(3, "device_type", "unknown device_type 'gc-nope'")
    assert has(4, "parent_device_id", "a meter cannot be connected below a meter")
    assert has(5, "status", "'broken' is not one of")
    assert has(5, "register_digits", "'five' is not a whole number")
    assert has(6, "status", "cannot go from active to in_stock")
    assert has(7, "medium", "differs from the device type's 'gas'")
    assert has(7, "size", "G4 is a gas size")
    assert has(8, "", "duplicate: the same key is also at")
    assert has(9, "size", "unknown meter_size 'G5'")
    assert has(9, "account_id", "unknown account 'A9999'")
    assert has(10, "device_type", "is a dtu, not a meter")
    assert not any(line == 2 for line, _c, _r in found)  # the good row has no problem
    assert "nothing was changed" in str(info.value)
    assert (_count(demo, "devices"), _count(demo, "history"), _count(demo, "outbox")) == before
    status = demo.execute("SELECT status, jsonb_array_length(problems) FROM ledger.import_runs "
                          "ORDER BY import_id DESC LIMIT 1").fetchone()
    assert status == ("rejected", len(info.value.context["problems"]))


def test_a_partial_file_changes_only_its_columns(demo: psycopg.Connection,
                                                 tmp_path: Path) -> None:
    moves = tmp_path / "meters.csv"
    moves.write_text("meter_id,account_id\nGM-0004,A0005\n", encoding="utf-8")
    with pytest.raises(ImportRejectedError, match="required column"):
        import_files(demo, [moves], actor="test", timezone=ZONE)
    # The network kind re-homes existing devices without touching anything else.
    network = tmp_path / "network.csv"
    network.write_text("device_id,parent_device_id,point_no\nGM-0004,COL-GE-B1,9\n",
                       encoding="utf-8")
    demo.execute("DELETE FROM ledger.outbox")
    report = import_files(demo, [network], actor="alice", timezone=ZONE)
    assert (report.counts["network"].updated, report.counts["network"].unchanged) == (1, 0)
    row = demo.execute("SELECT path, point_no, status, address FROM ledger.devices "
                       "WHERE device_id = 'GM-0004'").fetchone()
    assert row == (["CON-GE-01", "COL-GE-B1", "GM-0004"], 9, "active", "20240000000004")
    assert demo.execute("SELECT actor, reason FROM ledger.history WHERE entity = 'devices' "
                        "AND entity_id = 'GM-0004' ORDER BY history_id DESC LIMIT 1"
                        ).fetchone() == ("alice", "import network.csv")
    assert demo.execute("SELECT DISTINCT topic, entity_id FROM ledger.outbox").fetchall() == [
        ("ledger.meters", "GM-0004")]


def test_dry_run_counts_without_applying(api: psycopg.Connection) -> None:
    report = import_files(api, DEMO, actor="test", timezone=ZONE, dry_run=True)
    assert report.dry_run
    assert report.counts["meters"].inserted == 10
    assert _count(api, "devices") == 0
    assert api.execute("SELECT status FROM ledger.import_runs").fetchall() == [("dry_run",)]


def test_export_imports_back_unchanged_in_excel_and_csv(demo: psycopg.Connection,
                                                        database: DbHandle,
                                                        tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    kinds = resolve_kinds(["all"])
    workbook = tmp_path / "ledger.xlsx"
    counts = export_ledger(demo, workbook, kinds, ZoneInfo(ZONE))
    assert counts["meters"] == 10
    assert counts["devices"] == 5  # non-meter devices only; meters have their own sheet
    again = import_files(demo, [workbook], actor="test", timezone=ZONE)
    assert again.changed == 0
    assert sum(c.rows for c in again.counts.values()) == sum(counts.values())
    # A second database loaded from the workbook exports the very same CSV files.
    export_ledger(demo, tmp_path / "one", kinds, ZoneInfo(ZONE))
    from tests.plugins.services import create_database, drop_database
    from unimeter.config import load_config

    config = load_config()
    second = create_database(config, f"{database.name}_b", template=None, migrate=True)
    try:
        with second.connect("api") as conn:
            import_files(conn, [workbook], actor="test", timezone=ZONE)
            export_ledger(conn, tmp_path / "two", kinds, ZoneInfo(ZONE))
    finally:
        drop_database(config, second.name)
    for kind in kinds:
        assert filecmp.cmp(tmp_path / "one" / f"{kind}.csv", tmp_path / "two" / f"{kind}.csv",
                           shallow=False), kind


def test_bulk_load_is_idempotent_and_feeds_the_outbox(demo: psycopg.Connection) -> None:
    records = [{
        "meter_id": f"BULK-{i:05d}", "device_type": "gc-nb-g25", "address": f"{i:014d}",
        "status": "active", "location_id": "NORTH-GE-B2-101", "medium": "gas", "size": "G2.5",
        "account_id": "A0004", "installed_at": datetime(2024, 1, 1, tzinfo=UTC),
    } for i in range(300)]
    with demo.transaction():
        first = bulk_load(demo, "meters", records)
    assert (first.rows, first.inserted) == (300, 300)
    with demo.transaction():
        second = bulk_load(demo, "meters", records)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 300)
    assert demo.execute("SELECT count(*) FROM ledger.meter_dimensions WHERE meter_id LIKE "
                        "'BULK-%' AND region = 'NORTH' AND customer_type = 'residential'"
                        ).fetchone() == (300,)
    with pytest.raises(KeyError, match="unknown meters column"):
        bulk_load(demo, "meters", [{"meter_id": "X", "colour": "red"}])
