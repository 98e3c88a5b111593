"""The billing system's and the analysts' views, and what each role may and may not read."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import psycopg
import pytest

from aggregates.refresh import refresh_aggregates
from schemas.messages import Alert, Message, Settlement
from sinks.postgres import PostgresSink
from tests.aggregates.test_refresh import charges, dataset
from tests.plugins.services import DbHandle
from tests.sinks.fleet import batch

pytestmark = pytest.mark.integration

BILLING_VIEWS = ("billing.account_consumption_daily", "billing.account_consumption_monthly",
                 "billing.tier_consumption_daily", "billing.tier_consumption_monthly",
                 "billing.charges_daily", "billing.settlements_daily",
                 "billing.settlements_monthly")
ANALYST_VIEWS = ("analyst.meter_consumption_hourly", "analyst.meter_consumption_daily",
                 "analyst.meter_consumption_monthly", "analyst.dimension_consumption_hourly",
                 "analyst.dimension_consumption_daily", "analyst.dimension_consumption_monthly",
                 "analyst.tier_consumption_daily", "analyst.tier_consumption_monthly",
                 "analyst.validated_readings", "analyst.device_events", "analyst.alerts",
                 "analyst.reading_edits")
#: Columns that would carry personal data (or a direct key to it) into the analyst's hands.
PERSONAL = {"account_id", "customer_id", "edited_by", "note", "peer", "attributes",
            "reference", "operator", "previous_value", "user"}


@pytest.fixture
def filled(backend_database: DbHandle, samples: dict[str, Message]) -> DbHandle:
    messages = dataset()
    messages += [samples[s] for s in ("device.event", "billing.balance", "alert",
                                      "billing.settlement")]
    settlement = samples["billing.settlement"]
    assert isinstance(settlement, Settlement)
    messages.append(msgspec.structs.replace(settlement, revision=3, provisional=False,
                                            amount=Decimal("21.00")))
    messages.append(Alert(alert_id="al-m", object_type="meter", object_id="GAS-000001",
                          severity="major", code="vee.spike", reason="spike of 40 m3",
                          ts=datetime(2026, 6, 30, 12, tzinfo=UTC)))
    sink = PostgresSink(backend_database.settings.conninfo("sink"), consumer_group="views")
    assert not sink.write(batch(messages)).rejected
    sink.close()
    refresh_aggregates(backend_database.settings)
    return backend_database


def test_billing_reads_its_views_and_nothing_personal_or_raw(filled: DbHandle) -> None:
    with filled.connect("billing") as conn:
        for view in BILLING_VIEWS:
            conn.execute(f"SELECT * FROM {view} LIMIT 1")
        for table in ("billing.charges", "billing.balances", "billing.charge_segments",
                      "agg.meter_consumption_daily", "agg.tier_consumption_monthly"):
            conn.execute(f"SELECT * FROM {table} LIMIT 1")
        for forbidden in ("data.validated_readings", "data.raw_readings",
                          "analyst.validated_readings", "ops.sink_corrections"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {forbidden} LIMIT 1")
        for statement in ("DELETE FROM billing.charges", "UPDATE billing.balances SET balance = 0",
                          "INSERT INTO billing.topups (top_up_id, account_id, amount, ts) "
                          "VALUES ('x', 'y', 1, now())"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_billing_views_add_up(filled: DbHandle) -> None:
    with filled.connect("billing") as conn:
        by_account_day = conn.execute(
            "SELECT day, account_id, sum(consumption) FROM billing.account_consumption_daily "
            "WHERE account_id = 'ACC-00005' GROUP BY 1, 2 ORDER BY 1").fetchall()
        moved = conn.execute(
            "SELECT DISTINCT account_id, tariff_id FROM billing.account_consumption_daily "
            "WHERE meter_id = 'GAS-000005' ORDER BY 1").fetchall()
        tiers = conn.execute(
            "SELECT month, tier, volume, amount FROM billing.tier_consumption_monthly "
            "ORDER BY tier").fetchall()
        total = conn.execute("SELECT sum(amount) FROM billing.charges_daily "
                             "WHERE account_id = 'ACC-00001'").fetchone()
        unattributed = conn.execute("SELECT count(*) FROM billing.account_consumption_daily "
                                    "WHERE account_id IS NULL").fetchone()
        settled = conn.execute("SELECT day, account_id, revision, amount, provisional "
                               "FROM billing.settlements_daily").fetchall()
        peak = conn.execute("SELECT sum(volume) FROM billing.tier_consumption_daily "
                            "WHERE price_period = 'peak'").fetchone()
    assert [d.isoformat() for d, _, _ in by_account_day] == ["2026-06-30", "2026-07-01"]
    assert moved == [("ACC-00005", "BJ-GAS"), ("ACC-NEW", "BJ-NEW")]
    expected = {}
    for charge in charges():
        for s in charge.segments:
            vol, amt = expected.get(s.tier, (Decimal(0), Decimal(0)))
            expected[s.tier] = (vol + s.volume, amt + s.amount)
    summed: dict[int, tuple[Decimal, Decimal]] = {}
    for _, tier, vol, amt in tiers:
        was = summed.get(tier, (Decimal(0), Decimal(0)))
        summed[tier] = (was[0] + vol, was[1] + amt)
    assert summed == expected
    # The charges at 16:00Z and 17:00Z fall into July, local time.
    assert {m.isoformat() for m, *_ in tiers} == {"2026-06-01", "2026-07-01"}
    assert total == (sum(c.amount for c in charges()),)
    assert unattributed == (0,)
    # Only the current revision of a settlement, on its local day.
    assert [(d.isoformat(), a, r, amt, p) for d, a, r, amt, p in settled] == [
        ("2026-07-10", "ACC-1", 3, Decimal("21.00"), False)]
    assert peak == (Decimal("2"),)


def test_analysts_read_their_views_without_personal_data(filled: DbHandle) -> None:
    with filled.admin() as admin:
        columns = admin.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'analyst'").fetchall()
    assert {f"analyst.{t}" for t, _ in columns} >= set(ANALYST_VIEWS)
    leaking = [(t, c) for t, c in columns if c in PERSONAL and f"analyst.{t}" in ANALYST_VIEWS]
    assert not leaking
    with filled.connect("analyst") as conn:
        for view in ANALYST_VIEWS:
            conn.execute(f"SELECT * FROM {view} LIMIT 1")
        alerts = dict(conn.execute("SELECT object_type, object_id FROM analyst.alerts"
                                   ).fetchall())
        readings = conn.execute("SELECT count(*), count(DISTINCT meter_id) "
                                "FROM analyst.validated_readings").fetchone()
        for forbidden in ("billing.charges", "billing.balances", "agg.meter_consumption_daily",
                          "agg.tier_consumption_daily", "data.validated_readings",
                          "data.reading_edits", "data.device_events", "ops.alerts",
                          "billing.account_consumption_daily"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {forbidden} LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM data.raw_readings")
    assert alerts == {"account": None, "meter": "GAS-000001"}
    assert readings is not None
    assert readings[1] == 8


def test_api_reads_everything_it_shows_operators(filled: DbHandle) -> None:
    with filled.connect("api") as conn:
        for relation in (*BILLING_VIEWS, *ANALYST_VIEWS, "ops.sink_progress",
                         "ops.sink_corrections", "data.validated_readings_current",
                         "agg.meter_consumption_hourly"):
            conn.execute(f"SELECT * FROM {relation} LIMIT 1")
        conn.execute("UPDATE ops.sink_corrections SET reviewed_by = 'op', reviewed_at = now() "
                     "WHERE false")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE ops.sink_corrections SET incoming = '{}'")
