"""Parquet export: one file per local day, exact decimals and instants, analyst variant."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest

from aggregates.refresh import refresh_aggregates
from sinks.errors import SinkError
from sinks.parquet import DATASETS, export_parquet
from sinks.postgres import PostgresSink
from tests.aggregates.test_refresh import dataset
from tests.plugins.services import DbHandle
from tests.sinks.fleet import batch

pytestmark = pytest.mark.integration

ZONE = "Asia/Shanghai"


@pytest.fixture
def stored(database: DbHandle) -> DbHandle:
    sink = PostgresSink(database.settings.conninfo("sink"), consumer_group="export")
    assert not sink.write(batch(dataset())).rejected
    sink.close()
    refresh_aggregates(database.settings)
    return database


def test_validated_readings_by_local_day(stored: DbHandle, tmp_path: Path) -> None:
    report = export_parquet(stored.settings, "validated_readings", date(2026, 6, 29),
                            date(2026, 7, 2), tmp_path, timezone=ZONE)
    days = sorted(p.parent.name for p in report.files)
    assert days == ["day=2026-06-30", "day=2026-07-01"]
    table = pq.read_table(tmp_path / "validated_readings")
    with stored.admin() as conn:
        expected = conn.execute("SELECT count(*), sum(consumption) FROM "
                                "data.validated_readings_current").fetchone()
        edited = conn.execute("SELECT value FROM data.validated_readings_current "
                              "WHERE meter_id = 'GAS-000001' AND version = 2").fetchone()
    assert expected is not None
    assert edited is not None
    assert table.num_rows == report.rows == expected[0]
    rows = table.to_pylist()
    assert sum(r["consumption"] for r in rows) == expected[1]
    # Every row sits in the partition of its local day.
    for row in rows:
        assert str(row["day"]) == row["ts"].astimezone(ZoneInfo(ZONE)).date().isoformat()
    v2 = [r for r in rows if r["meter_id"] == "GAS-000001" and r["version"] == 2]
    assert len(v2) == 1
    assert v2[0]["value"] == edited[0]
    assert v2[0]["quality"] == "estimated"
    assert isinstance(v2[0]["ts"], datetime)
    assert v2[0]["ts"].tzinfo is not None
    assert str(table.schema.field("value").type) == "decimal128(38, 9)"


def test_aggregates_and_a_second_export_replaces_the_day(stored: DbHandle,
                                                         tmp_path: Path) -> None:
    first = export_parquet(stored.settings, "meter_consumption_daily", date(2026, 6, 30),
                           date(2026, 7, 1), tmp_path, timezone=ZONE)
    again = export_parquet(stored.settings, "meter_consumption_daily", date(2026, 6, 30),
                           date(2026, 7, 1), tmp_path, timezone=ZONE)
    assert first.files == again.files
    assert first.rows == again.rows
    table = pq.read_table(tmp_path / "meter_consumption_daily")
    assert table.num_rows == first.rows
    with stored.admin() as conn:
        total = conn.execute("SELECT sum(consumption) FROM agg.meter_consumption_daily"
                             ).fetchone()
    assert total is not None
    assert sum(r["consumption"] for r in table.to_pylist()) == total[0]
    assert not list(tmp_path.rglob("*.partial"))


def test_analyst_export_has_no_account_ids(stored: DbHandle, tmp_path: Path) -> None:
    report = export_parquet(stored.settings, "meter_consumption_hourly", date(2026, 6, 30),
                            date(2026, 7, 1), tmp_path, timezone=ZONE, analyst=True)
    table = pq.read_table(tmp_path / "meter_consumption_hourly")
    assert report.rows > 0
    assert "account_id" not in table.column_names
    assert "meter_id" in table.column_names
    with pytest.raises(SinkError, match="no analyst view"):
        export_parquet(stored.settings, "tier_consumption_daily", date(2026, 6, 30),
                       date(2026, 7, 1), tmp_path, timezone=ZONE, analyst=True)


def test_empty_days_and_bad_requests(stored: DbHandle, tmp_path: Path) -> None:
    report = export_parquet(stored.settings, "dimension_consumption_hourly", date(2025, 1, 1),
                            date(2025, 1, 3), tmp_path, timezone=ZONE)
    assert report.rows == 0
    assert report.days == 3
    assert not report.files
    with pytest.raises(SinkError, match="unknown data set"):
        export_parquet(stored.settings, "nonsense", date(2026, 1, 1), date(2026, 1, 1),
                       tmp_path, timezone=ZONE)
    with pytest.raises(SinkError, match="empty export window"):
        export_parquet(stored.settings, "raw_readings", date(2026, 1, 2), date(2026, 1, 1),
                       tmp_path, timezone=ZONE)


def test_every_data_set_exports(stored: DbHandle, tmp_path: Path) -> None:
    for name in DATASETS:
        report = export_parquet(stored.settings, name, date(2026, 6, 1), date(2026, 7, 1),
                                tmp_path, timezone=ZONE)
        if name != "raw_readings":
            assert report.rows > 0, name

