"""Retention: old source rows go, the aggregates keep their history; unsafe settings refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregates.refresh import refresh_aggregates
from schemas.settings import UtilitySettings
from sinks.errors import SinkError
from sinks.postgres import PostgresSink
from sinks.retention import apply_retention
from sinks.settings import RetentionSettings
from tests.plugins.services import DbHandle
from tests.sinks.fleet import HOUR, batch, reading

pytestmark = pytest.mark.integration


def test_deleted_source_rows_leave_the_aggregates_alone(database: DbHandle) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    old = [reading(i, now - timedelta(days=60) + h * HOUR) for i in range(3) for h in range(3)]
    recent = [reading(i, now - timedelta(days=2) + h * HOUR) for i in range(3) for h in range(3)]
    sink = PostgresSink(database.settings.conninfo("sink"), consumer_group="retention")
    sink.write(batch(old + recent))
    sink.close()
    refresh_aggregates(database.settings)
    with database.admin() as conn:
        before = conn.execute("SELECT count(*), sum(consumption) FROM "
                              "agg.meter_consumption_daily").fetchone()

    actions = apply_retention(database.settings,
                              RetentionSettings(validated_readings_days=30, raw_frames_days=0,
                                                device_events_days=0),
                              UtilitySettings())
    by_relation = {a.relation: a.action for a in actions}
    assert by_relation["data.validated_readings"].startswith("deleted 9 row(s)")
    assert by_relation["data.consumption_intervals"].startswith("deleted 9 row(s)")
    assert by_relation["data.raw_frames"] == "kept for ever"

    report = refresh_aggregates(database.settings)
    assert report.buckets == 0  # the deletes invalidated nothing
    with database.admin() as conn:
        after = conn.execute("SELECT count(*), sum(consumption) FROM "
                             "agg.meter_consumption_daily").fetchone()
        left = conn.execute("SELECT count(*) FROM data.validated_readings").fetchone()
    assert after == before
    assert left == (9,)


def test_retention_inside_the_late_window_is_refused(database: DbHandle) -> None:
    with pytest.raises(SinkError, match="late-data window"):
        apply_retention(database.settings, RetentionSettings(raw_readings_days=5),
                        UtilitySettings(late_data_days=7))


def test_timescale_policies_follow_the_settings(timescale_database: DbHandle) -> None:
    def policies() -> dict[str, str]:
        with timescale_database.admin() as conn:
            return dict(conn.execute(
                "SELECT format('%I.%I', hypertable_schema, hypertable_name), "
                "config ->> 'drop_after' FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_retention'").fetchall())

    settings = RetentionSettings(raw_frames_days=30, hourly_aggregates_days=400)
    apply_retention(timescale_database.settings, settings, UtilitySettings())
    assert policies() == {"data.raw_frames": "30 days", "data.device_events": "365 days",
                          "agg.meter_consumption_hourly": "400 days",
                          "agg.dimension_consumption_hourly": "400 days",
                          "agg.tier_consumption_hourly": "400 days"}
    again = apply_retention(timescale_database.settings, settings, UtilitySettings())
    assert all(a.action.startswith("unchanged") for a in again)
    apply_retention(timescale_database.settings,
                    RetentionSettings(raw_frames_days=0, device_events_days=0),
                    UtilitySettings())
    assert policies() == {}
