"""The demo's pure parts: the fleet's ledger and billing set-up, and the report's charts."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from simulator.fleet import Fleet, FleetSpec
from unimeter.demo.ledger import LEDGER_FILES, TARIFFS, opening_top_ups, plan_ledger, write_ledger
from unimeter.demo.report import write_report

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


#: Qmax (m³/h) of the sizes the demo uses, as ``ledger.meter_sizes`` has them
_QMAX = {"G2.5": 4.0, "G10": 16.0, "DN15": 3.125, "DN20": 5.0, "DN40": 20.0}


def test_gas_and_water_meters_get_a_size_above_their_simulated_peak(tmp_path: Path) -> None:
    """Regression: the demo ledger gave no meter a size or Qmax, so the VEE's max_flow check
    skipped every gas meter and held every water meter to the 5 m³/h default of a small
    one — the industrial water meters' ordinary flow was estimated away (133 readings)."""
    from datetime import timedelta

    fleet = Fleet(FleetSpec().scaled(600), datetime(2026, 1, 1, tzinfo=UTC))
    write_ledger(fleet, plan_ledger(fleet), tmp_path)
    checked = 0
    for row in rows(tmp_path / "meters.csv"):
        if row["medium"] not in ("gas", "water"):
            assert (row["size"], row["qmax"]) == ("", "")
            continue
        qmax = float(row["qmax"]) if row["qmax"] else _QMAX[row["size"]]
        sim = fleet.meters[row["meter_id"]]
        if checked >= 60 and sim.customer_type == "residential":
            continue  # enough households; every commercial and industrial meter is checked
        at = sim.consumption.at
        peak = 0.0
        for _hour in range(24 * 14):  # two January weeks, hour by hour
            at += timedelta(hours=1)
            peak = max(peak, sim.consumption.advance(at))
        assert peak < qmax, (row["meter_id"], peak, qmax)
        checked += 1
    assert checked > 60


def test_every_meter_gets_a_customer_account_and_tariff(tmp_path: Path) -> None:
    fleet = Fleet(FleetSpec().scaled(600), T0)
    plan = plan_ledger(fleet)
    counts = write_ledger(fleet, plan, tmp_path)
    assert set(counts) == set(LEDGER_FILES)
    meters = rows(tmp_path / "meters.csv")
    accounts = {a["account_id"]: a for a in rows(tmp_path / "accounts.csv")}
    customers = {c["customer_id"]: c for c in rows(tmp_path / "customers.csv")}
    assert {m["meter_id"] for m in meters} == set(fleet.meters)
    assert len(accounts) == len(customers) == len(meters)
    assert {c["customer_type"] for c in customers.values()} == {
        "residential", "low_income", "commercial", "industrial"}
    for m in meters:
        account = accounts[m["account_id"]]
        tariff = TARIFFS[account["tariff_id"]]
        assert tariff[0] == m["medium"]  # a tariff of the meter's own medium
        sim = fleet.meters[m["meter_id"]]
        # the ledger's initial reading is the register the meter starts from
        assert Decimal(m["initial_reading"]) == sim.consumption.register_value(
            sim.consumption.initial)
        ctype = customers[account["customer_id"]]["customer_type"]
        prepaid = account["billing_mode"] == "prepaid_money"
        assert prepaid == (ctype in ("residential", "low_income") and sim.has_valve)
        if prepaid:
            assert Decimal(account["alarm1"]) > Decimal(account["alarm2"]) > 0
    # links are devices with their service point; NB-IoT meters are their own link
    devices = {d["device_id"]: d for d in rows(tmp_path / "devices.csv")}
    for m in meters:
        if m["parent_device_id"]:
            assert devices[m["parent_device_id"]]["service_point_id"] == \
                fleet.meters[m["meter_id"]].service_point
        else:
            assert m["link_id"] == m["meter_id"]


def test_opening_top_ups_leave_a_few_accounts_short() -> None:
    fleet = Fleet(FleetSpec().scaled(2000), T0)
    plan = plan_ledger(fleet)
    top_ups = dict(opening_top_ups(plan))
    assert set(top_ups) == {a.account_id for a in plan.prepaid()}
    assert all(amount >= 5 and amount == amount.to_integral_value()
               for amount in top_ups.values())
    short = [a for a in plan.prepaid() if a.days_paid < 3]
    assert 0.02 < len(short) / len(plan.prepaid()) < 0.2
    assert opening_top_ups(plan_ledger(fleet)) == opening_top_ups(plan)  # deterministic


def test_report_has_a_png_per_customer_type(tmp_path: Path) -> None:
    days = [(date(2026, 7, d), ctype, medium, unit, Decimal(d * 10))
            for d in (1, 2, 3) for ctype in ("residential", "industrial")
            for medium, unit in (("gas", "m3"), ("electricity", "kWh"))]
    files = write_report(days, tmp_path, title="t", summary_text="READINGS <b>")
    assert set(files.charts) == {"residential", "industrial"}
    for path in files.charts.values():
        assert path.read_bytes()[:4] == b"\x89PNG"
    page = files.index.read_text()
    assert "consumption_industrial.png" in page
    assert "READINGS &lt;b&gt;" in page  # the summary is escaped, not markup
