"""Daily data-quality reports with great-expectations over stored readings (integration)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.quality_report import daily_report

pytestmark = pytest.mark.integration

DAY = date(2026, 3, 2)
START = datetime(2026, 3, 1, 16, tzinfo=UTC)  # 2026-03-02 00:00 in Shanghai


def _insert(db, meter: str, group: str, hour: int, quality: str, consumption: str,  # type: ignore[no-untyped-def]
            account: str | None = "A1") -> None:
    with db.admin() as conn:
        conn.execute(
            "INSERT INTO data.validated_readings (meter_id, register, ts, version, value, unit, "
            "quality, consumption, account_id, vee_group, medium) VALUES "
            "(%s, 'volume', %s, 1, %s, 'm3', %s, %s, %s, %s, 'gas')",
            (meter, START + timedelta(hours=hour), Decimal(100 + hour), quality,
             Decimal(consumption), account, group))


def test_daily_report_per_group_in_json_and_html(database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for meter in ("G-1", "G-2"):
        for hour in range(24):
            _insert(database, meter, "gas", hour, "validated", "1")
    for hour in range(24):
        _insert(database, "W-1", "water", hour, "estimated" if hour % 2 else "validated", "1")
    _insert(database, "W-2", "water", 3, "validated", "-2", account=None)
    _insert(database, "G-1", "gas", 30, "validated", "1")  # the next day: not in the report
    with database.connect("pipeline") as conn:
        report = daily_report(conn, DAY, tmp_path / "dq", timezone="Asia/Shanghai")
    groups = {g.group: g for g in report.groups}
    assert groups["gas"].success
    assert (groups["gas"].readings, groups["gas"].meters) == (48, 2)
    water = groups["water"]
    assert not water.success
    failed = {e["expectation"] for e in water.expectations if not e["success"]}
    assert failed == {"expect_column_values_to_be_in_set", "expect_column_values_to_be_between",
                      "expect_column_values_to_not_be_null"}
    doc = json.loads(report.json_path.read_text())
    assert doc["day"] == "2026-03-02"
    assert doc["success"] is False
    assert report.html_index is not None
    assert report.html_index.exists()
    pages = " ".join(p.name for p in report.html_index.parent.rglob("*.html"))
    assert "vee-water-readings" in pages
    # a second report of the same day reuses the suites and overwrites the day's JSON
    with database.connect("pipeline") as conn:
        again = daily_report(conn, DAY, tmp_path / "dq", timezone="Asia/Shanghai")
    assert [g.success for g in again.groups] == [g.success for g in report.groups]
