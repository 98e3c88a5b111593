"""Validated readings and aggregates through the API (plain-PostgreSQL relations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.conftest import Api

pytestmark = pytest.mark.integration

T0 = datetime(2024, 6, 1, tzinfo=UTC)


def _seed(api: Api) -> None:
    with api.fleet.db.admin() as conn:
        for h in range(3):
            conn.execute(
                "INSERT INTO data.validated_readings (meter_id, register, ts, version, value, "
                "unit, quality, method, consumption) VALUES ('GAS-ARM-1', 'volume', %s, 1, %s, "
                "'m3', 'validated', 'none', 0.5)", (T0 + timedelta(hours=h), 100 + h))
        conn.execute(
            "INSERT INTO data.validated_readings (meter_id, register, ts, version, value, unit, "
            "quality, method, consumption) VALUES ('GAS-ARM-1', 'volume', %s, 2, 101.2, 'm3', "
            "'edited', 'manual', 0.7)", (T0 + timedelta(hours=1),))
        for day, (region, ctype, volume) in enumerate([("R1", "residential", "3.5"),
                                                      ("R1", "commercial", "10"),
                                                      ("R2", "residential", "2")]):
            conn.execute(
                "INSERT INTO agg.dimension_consumption_daily (bucket, medium, register, unit, "
                "customer_type, region, consumption, reading_count, interval_count, "
                "estimated_count, min_consumption, max_consumption) VALUES (%s, 'gas', "
                "'volume', 'm3', %s, %s, %s, 1, 24, 0, 0.1, 1.2)",
                (T0 + timedelta(days=day % 2), ctype, region, volume))
        conn.execute(
            "INSERT INTO agg.meter_consumption_daily (bucket, meter_id, register, unit, medium, "
            "account_id, tariff_id, consumption, reading_count, interval_count, "
            "estimated_count, min_consumption, max_consumption) VALUES (%s, 'GAS-ARM-1', "
            "'volume', 'm3', 'gas', 'ACC-1', 'BJ-GAS', 1.5, 3, 24, 2, 0, 0.4)", (T0,))


def test_validated_readings_current_and_all_versions(api: Api) -> None:
    _seed(api)
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(days=1)).isoformat()}
    current = api.get("op_r1", "/v1/meters/GAS-ARM-1/readings", params=window).json()
    assert [(r["value"], r["quality"]) for r in current["items"]] == [
        ("100", "validated"), ("101.2", "edited"), ("102", "validated")]
    every = api.get("op_r1", "/v1/meters/GAS-ARM-1/readings",
                    params={**window, "versions": True}).json()
    assert [r["version"] for r in every["items"]] == [1, 1, 2, 1]
    assert api.get("op_r2", "/v1/meters/GAS-ARM-1/readings", params=window).status_code == 404


def test_meter_and_dimension_consumption(api: Api) -> None:
    _seed(api)
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(days=7)).isoformat()}
    meter = api.get("billing", "/v1/meters/GAS-ARM-1/consumption/daily", params=window).json()
    assert meter["items"][0]["consumption"] == "1.5"
    assert meter["items"][0]["estimated_count"] == 2
    by_region = api.get("analyst", "/v1/consumption/daily",
                        params={**window, "group_by": ["region"]}).json()["items"]
    totals = {(r["bucket"][:10], r["region"]): r["consumption"] for r in by_region}
    assert totals == {("2024-06-01", "R1"): "3.5", ("2024-06-01", "R2"): "2",
                      ("2024-06-02", "R1"): "10"}
    # A caller limited to a region gets that region only; an operator has no aggregates.
    hourly_too_long = api.get("analyst", "/v1/consumption/hourly",
                              params={"from": T0.isoformat(),
                                      "to": (T0 + timedelta(days=200)).isoformat()})
    assert hourly_too_long.status_code == 422
    assert api.get("op_r1", "/v1/consumption/daily", params=window).status_code == 403
