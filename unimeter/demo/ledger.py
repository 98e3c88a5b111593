"""The simulated fleet as a ledger: files ``unimeter ledger import`` takes, and opening top-ups.

Strategy: the simulator knows its meters (:class:`~simulator.fleet.Fleet`); the platform must
know them too, with what billing needs. Every meter gets a customer and an account in the
standard import format (one CSV per kind, all validated and applied at once):

* customer types from the fleet's consumption classes (residential, commercial, industrial),
  with one residential household in twenty on the subsidised ``low_income`` tariff;
* a tariff per medium and customer type (annual gas steps, monthly water steps, flat
  commercial/industrial prices, flat electricity);
* prepaid money accounts for households whose meter has a valve or relay (so billing can
  alarm and cut off, and the control plane can close valves), postpaid for the others;
* the collection network: DTUs, concentrators and RTUs as link devices with their service
  points, meters under them (NB-IoT meters are their own link).

:func:`opening_top_ups` gives each prepaid account a first payment: most enough for weeks,
a deterministic few only for a day or two of their expected use, so within a demo of a few
simulated days some accounts cross their alarm levels and run out — billing has something to
alarm about and valves something to do.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from simulator.fleet import Fleet, SimMeter

__all__ = ["LEDGER_FILES", "LedgerPlan", "opening_top_ups", "plan_ledger", "write_ledger"]

LEDGER_FILES = ("manufacturers", "device_types", "service_points", "locations", "customers",
                "tariffs", "tariff_versions", "accounts", "devices", "meters")

#: the service area: accounts are placed in districts (the ``region`` dimension of the
#: aggregates), by their meter's link
REGIONS = ("NORTH", "SOUTH", "EAST", "WEST")

#: tariff id -> (medium, unit, kind, cycle, tiers, name)
TARIFFS: dict[str, tuple[str, str, str, str, str, str]] = {
    "GAS-RES": ("gas", "m3", "step", "year", "400:2.67;900:3.15;:3.94", "Residential gas"),
    "GAS-LOW": ("gas", "m3", "step", "year", "400:2.27;:2.67", "Subsidised gas"),
    "GAS-COM": ("gas", "m3", "flat", "year", ":3.68", "Commercial gas"),
    "GAS-IND": ("gas", "m3", "flat", "year", ":3.20", "Industrial gas"),
    "WATER-RES": ("water", "m3", "step", "month", "15:3.45;:4.83", "Residential water"),
    "WATER-LOW": ("water", "m3", "step", "month", "15:2.80;:3.45", "Subsidised water"),
    "WATER-COM": ("water", "m3", "flat", "month", ":5.20", "Commercial water"),
    "WATER-IND": ("water", "m3", "flat", "month", ":4.60", "Industrial water"),
    "ELEC-RES": ("electricity", "kWh", "flat", "year", ":0.588", "Residential electricity"),
    "ELEC-LOW": ("electricity", "kWh", "flat", "year", ":0.488", "Subsidised electricity"),
    "ELEC-COM": ("electricity", "kWh", "flat", "year", ":0.820", "Commercial electricity"),
    "ELEC-IND": ("electricity", "kWh", "flat", "year", ":0.690", "Industrial electricity"),
}
_MEDIUM_CODE = {"gas": "GAS", "water": "WATER", "electricity": "ELEC"}
_TYPE_CODE = {"residential": "RES", "low_income": "LOW", "commercial": "COM",
              "industrial": "IND"}
#: device types: id -> (kind, medium, protocol, transport, has_valve)
_DEVICE_TYPES: dict[str, tuple[str, str, str, str, bool]] = {
    "sim-dtu": ("dtu", "", "dtu-text", "tcp", False),
    "sim-concentrator": ("concentrator", "", "qgdw376.1", "tcp", False),
    "sim-rtu": ("rtu", "", "modbus-tcp", "tcp", False),
}


@dataclass(frozen=True)
class AccountPlan:
    account_id: str
    customer_id: str
    customer_type: str
    meter: SimMeter
    tariff_id: str
    billing_mode: str
    #: expected days of use the opening payment buys (prepaid only)
    days_paid: float


@dataclass(frozen=True)
class LedgerPlan:
    accounts: list[AccountPlan]
    start: datetime

    def customer_types(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.accounts:
            out[a.customer_type] = out.get(a.customer_type, 0) + 1
        return out

    def prepaid(self) -> list[AccountPlan]:
        return [a for a in self.accounts if a.billing_mode == "prepaid_money"]


def plan_ledger(fleet: Fleet, *, seed: int = 20260701, short_share: float = 0.08,
                short_days: tuple[float, float] = (0.3, 2.0)) -> LedgerPlan:
    """Customers, tariffs and billing modes of every meter of ``fleet`` (deterministic)."""
    rng = random.Random(seed)
    accounts: list[AccountPlan] = []
    for n, meter in enumerate(fleet.meters.values(), start=1):
        customer_type = meter.customer_type
        if customer_type == "residential" and rng.random() < 0.05:
            customer_type = "low_income"
        tariff = f"{_MEDIUM_CODE[meter.medium]}-{_TYPE_CODE[customer_type]}"
        prepaid = customer_type in ("residential", "low_income") and meter.has_valve
        days = 0.0
        if prepaid:
            days = (rng.uniform(*short_days) if rng.random() < short_share
                    else rng.uniform(30, 90))
        accounts.append(AccountPlan(
            account_id=f"A{n:07d}", customer_id=f"C{n:07d}", customer_type=customer_type,
            meter=meter, tariff_id=tariff,
            billing_mode="prepaid_money" if prepaid else "postpaid", days_paid=days))
    return LedgerPlan(accounts=accounts, start=fleet.start)


def _first_price(tariff_id: str) -> Decimal:
    tiers = TARIFFS[tariff_id][4]
    return Decimal(tiers.split(";")[0].split(":")[1])


def opening_top_ups(plan: LedgerPlan) -> list[tuple[str, Decimal]]:
    """(account, amount) of each prepaid account's first payment: ``days_paid`` of its
    meter's mean use at its first-step price, at least 5 CNY, rounded to whole yuan."""
    out = []
    for a in plan.prepaid():
        per_day = Decimal(str(round(a.meter.consumption.base_per_hour * 24, 4)))
        amount = (per_day * Decimal(str(a.days_paid)) * _first_price(a.tariff_id)).quantize(
            Decimal(1), ROUND_HALF_UP)
        out.append((a.account_id, max(amount, Decimal(5))))
    return out


def _alarms(a: AccountPlan) -> tuple[str, str]:
    """Alarm levels: about two days and half a day of expected use (money)."""
    per_day = a.meter.consumption.base_per_hour * 24 * float(_first_price(a.tariff_id))
    return f"{max(per_day * 2, 2.0):.2f}", f"{max(per_day * 0.5, 0.5):.2f}"


#: Meter sizes (``ledger.meter_sizes``) by medium and the simulated customer profile, or an
#: explicit Qmax (m³/h) where the table has no size that large. Chosen above the simulated
#: peaks, measured hour by hour over 40 winter days (2026-12-08): residential gas 0.95 m³/h,
#: commercial gas 9.2, industrial gas 162 (DTU meters) and 364 (RTU flow computers),
#: residential water 0.08, commercial water 1.4, industrial water 12.3.
_SIZES: dict[tuple[str, str], tuple[str, str]] = {
    ("gas", "residential"): ("G2.5", ""), ("gas", "commercial"): ("G10", ""),
    ("water", "residential"): ("DN15", ""), ("water", "commercial"): ("DN20", ""),
    ("water", "industrial"): ("DN40", ""), ("heat", "residential"): ("DN20-heat", ""),
}
_INDUSTRIAL_GAS_QMAX = {"modbus-tcp": "650", "cjt188-2004": "250"}  # G400, G160


def meter_size(medium: str, customer_type: str, protocol: str) -> tuple[str, str]:
    """``(size, qmax)`` of a simulated meter for the ledger (either may be empty: an
    electricity meter has neither)."""
    if medium == "gas" and customer_type == "industrial":
        return "", _INDUSTRIAL_GAS_QMAX.get(protocol, "250")
    return _SIZES.get((medium, customer_type), ("", ""))


def write_ledger(fleet: Fleet, plan: LedgerPlan, out_dir: Path) -> dict[str, int]:
    """Write the import files into ``out_dir``; returns the rows written per kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    day = plan.start.date().isoformat()
    rows: dict[str, list[list[object]]] = {k: [] for k in LEDGER_FILES}
    heads = {
        "manufacturers": ["manufacturer_id", "name", "country"],
        "device_types": ["device_type", "kind", "manufacturer_id", "model", "medium",
                         "protocol", "transport", "wake_mode", "has_valve"],
        "service_points": ["service_point_id", "protocol", "transport", "description"],
        "locations": ["location_id", "kind", "name"],
        "customers": ["customer_id", "customer_type", "name"],
        "tariffs": ["tariff_id", "name", "medium", "currency", "unit"],
        "tariff_versions": ["tariff_id", "version", "kind", "effective_from", "cycle", "tiers",
                            "reason"],
        "accounts": ["account_id", "customer_id", "location_id", "billing_mode", "tariff_id",
                     "status", "alarm1", "alarm2", "overdraft_limit", "opened_at"],
        "devices": ["device_id", "device_type", "address", "status", "link_id",
                    "service_point_id", "installed_at"],
        "meters": ["meter_id", "device_type", "address", "status", "parent_device_id",
                   "point_no", "link_id", "service_point_id", "installed_at", "medium",
                   "register_digits", "register_decimals", "unit", "has_valve", "account_id",
                   "initial_reading", "size", "qmax"],
    }
    rows["manufacturers"].append(["unimeter-sim", "unimeter simulator", "CN"])
    for region in REGIONS:
        rows["locations"].append([region, "region", f"{region.title()} district"])
    link_region = {link_id: REGIONS[n % len(REGIONS)]
                   for n, link_id in enumerate(fleet.links)}
    link_of = {m.meter_id: link for link in fleet.links.values() for m in link.meters}
    for dt, (kind, medium, protocol, transport, valve) in _DEVICE_TYPES.items():
        rows["device_types"].append([dt, kind, "unimeter-sim", dt, medium, protocol, transport,
                                     "online", str(valve).lower()])
    meter_types: set[str] = set()
    for m in fleet.meters.values():
        dt = f"sim-{m.medium}-{m.protocol}"
        if dt not in meter_types:
            meter_types.add(dt)
            nbiot = m.service_point == fleet.spec.nbiot_service_point
            rows["device_types"].append([
                dt, "meter", "unimeter-sim", dt, m.medium, m.protocol,
                "nbiot" if nbiot else "modbus_tcp" if m.protocol == "modbus-tcp" else "rs485",
                "on_wake" if nbiot else "online", str(m.has_valve).lower()])
    points = {link.service_point: link.protocol for link in fleet.links.values()}
    for point, protocol in sorted(points.items()):
        transport = ("mqtt" if point == fleet.spec.nbiot_service_point else
                     "modbus_tcp" if protocol == "modbus-tcp" else "tcp")
        rows["service_points"].append([point, protocol, transport, "simulated fleet"])
    for tariff_id, (medium, unit, kind, cycle, tiers, name) in TARIFFS.items():
        rows["tariffs"].append([tariff_id, name, medium, "CNY", unit])
        rows["tariff_versions"].append([tariff_id, 1, kind, "2024-01-01", cycle, tiers,
                                        "initial"])
    device_type = {"dtu": "sim-dtu", "concentrator": "sim-concentrator", "modbus": "sim-rtu"}
    for link in fleet.links.values():
        if link.kind == "nbiot":
            continue
        link_id = link.address or link.link_id
        rows["devices"].append([link.link_id, device_type[link.kind], link.address or "",
                                "active", link_id, link.service_point, day])
    for a in plan.accounts:
        m = a.meter
        alarm1, alarm2 = _alarms(a) if a.billing_mode == "prepaid_money" else ("", "")
        rows["customers"].append([a.customer_id, a.customer_type, f"Customer {a.customer_id}"])
        # an account with a place: the ledger's region of it needs no search through meters
        link = link_of[m.meter_id]
        region = link_region[link.link_id]
        rows["accounts"].append([a.account_id, a.customer_id, region, a.billing_mode,
                                 a.tariff_id, "active", alarm1, alarm2, 0, day])
        nbiot = link.kind == "nbiot"
        point_no = m.point_no or link.meters.index(m) + 1
        rows["meters"].append([
            m.meter_id, f"sim-{m.medium}-{m.protocol}", m.address, "active",
            "" if nbiot else link.link_id, "" if nbiot else point_no,
            m.meter_id if nbiot else "", m.service_point if nbiot else "", day, m.medium,
            m.consumption.digits, m.consumption.decimals, m.unit, str(m.has_valve).lower(),
            a.account_id, m.consumption.register_value(m.consumption.initial),
            *meter_size(m.medium, m.customer_type, m.protocol)])
    counts = {}
    for kind in LEDGER_FILES:
        with open(out_dir / f"{kind}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(heads[kind])
            writer.writerows(rows[kind])
        counts[kind] = len(rows[kind])
    return counts
