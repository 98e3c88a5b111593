"""A small utility in the real ledger, for control-plane and API tests.

Two regions (R1, R2); device types on the real protocol encoders of ``decoders``
(CJ/T 188-2004, DL/T 645-2007; the concentrator's protocol has no encoder, so it takes no
commands); prepaid NB-IoT gas meters whose valve can be armed, wired gas meters
whose valve opens only directly, an electricity meter with a breaker, a read-only water meter,
a concentrator with meters below it, and one protected customer. :func:`seed_fleet` writes it
through the ledger's own tables (as the ``api`` role), so the views the control plane reads
(``ledger.device_context``) are exercised for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.plugins.services import DbHandle

#: device id -> (device type, location, account, parent)
FLEET: dict[str, tuple[str, str, str | None, str | None]] = {
    "GAS-ARM-1": ("gas_nbiot_g4", "R1-B1-U1", "ACC-1", None),
    "GAS-ARM-2": ("gas_nbiot_g4", "R1-B1-U2", "ACC-2", None),
    "GAS-PROT-1": ("gas_nbiot_g4", "R1-B1-U3", "ACC-PROT", None),
    "GAS-DIRECT-1": ("gas_wired_g2_5", "R1-B1-U4", "ACC-4", None),
    "ELEC-1": ("elec_dlt645", "R1-B1-U5", "ACC-5", None),
    "WATER-1": ("water_cjt188", "R1-B1-U6", None, None),
    "CONC-1": ("concentrator_376", "R1-B2", None, None),
    "GAS-R2-1": ("gas_nbiot_g4", "R2-B1-U1", "ACC-R2", None),
}
#: prepaid NB-IoT gas meters in the store, for install and replace
STOCK_METERS = ["GAS-STOCK-1", "GAS-STOCK-2"]
#: meters below the concentrator (wired, online, valve opens directly)
CONC_METERS = [f"GAS-C1-{i:02d}" for i in range(1, 13)]

_TYPES = [
    # device_type, kind, medium, protocol, wake_mode, has_valve, arm, capabilities
    ("gas_nbiot_g4", "meter", "gas", "cjt188-2004", "on_wake", True, True,
     '{"prepaid": true}'),
    ("gas_wired_g2_5", "meter", "gas", "cjt188-2004", "online", True, False,
     '{"prepaid": true}'),
    ("elec_dlt645", "meter", "electricity", "dlt645-2007", "online", False, False,
     '{"relay": true, "prepaid": true}'),
    ("water_cjt188", "meter", "water", "cjt188-2004", "online", False, False, '{}'),
    ("concentrator_376", "concentrator", None, "gb376", "online", False, False, '{}'),
]


@dataclass(frozen=True)
class Fleet:
    db: DbHandle
    regions: tuple[str, ...] = ("R1", "R2")

    def connect(self, role: str = "api", **kw: Any) -> psycopg.Connection[Any]:
        return self.db.connect(role, **kw)


def seed_fleet(conn: psycopg.Connection[Any]) -> None:
    """Write the test utility into the ledger (idempotent)."""
    x = conn.execute
    x("INSERT INTO ledger.manufacturers (manufacturer_id, name) VALUES ('ACME', 'Acme Meters') "
      "ON CONFLICT DO NOTHING")
    for t, kind, medium, proto, wake, valve, arm, caps in _TYPES:
        x("INSERT INTO ledger.device_types (device_type, kind, manufacturer_id, medium, protocol,"
          " wake_mode, has_valve, valve_arm_supported, capabilities) VALUES "
          "(%s, %s, 'ACME', %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
          (t, kind, medium, proto, wake, valve, arm, caps))
    for region in ("R1", "R2"):
        x("INSERT INTO ledger.locations (location_id, kind, name) VALUES (%s, 'region', %s) "
          "ON CONFLICT DO NOTHING", (region, f"Region {region}"))
        x("INSERT INTO ledger.locations (location_id, kind, parent_id, name) VALUES "
          "(%s, 'area', %s, 'Area') ON CONFLICT DO NOTHING", (f"{region}-A", region))
        for b in ("B1", "B2"):
            x("INSERT INTO ledger.locations (location_id, kind, parent_id, name) VALUES "
              "(%s, 'building', %s, %s) ON CONFLICT DO NOTHING",
              (f"{region}-{b}", f"{region}-A", f"Building {b}"))
            for u in range(1, 7):
                x("INSERT INTO ledger.locations (location_id, kind, parent_id, name) VALUES "
                  "(%s, 'unit', %s, %s) ON CONFLICT DO NOTHING",
                  (f"{region}-{b}-U{u}", f"{region}-{b}", f"Unit {u}"))
    x("INSERT INTO ledger.tariffs (tariff_id, name) VALUES ('BJ-GAS', 'Beijing residential gas') "
      "ON CONFLICT DO NOTHING")
    x("INSERT INTO ledger.tariff_versions (tariff_id, version, kind, effective_from, tiers) "
      "VALUES ('BJ-GAS', 1, 'step', '2020-01-01T00:00:00+08:00', %s) ON CONFLICT DO NOTHING",
      ('[{"upper": "350", "price": "2.61"}, {"upper": "500", "price": "2.83"}, '
       '{"upper": null, "price": "4.23"}]',))
    for cust in ("CUST-1", "CUST-PROT"):
        x("INSERT INTO ledger.customers (customer_id, customer_type, name) VALUES "
          "(%s, 'residential', %s) ON CONFLICT DO NOTHING", (cust, f"Customer {cust}"))
    for account in ("ACC-1", "ACC-2", "ACC-4", "ACC-5", "ACC-R2", "ACC-PROT", "ACC-NEW-1",
                    "ACC-NEW-2"):
        protected = account == "ACC-PROT"
        x("INSERT INTO ledger.accounts (account_id, customer_id, protected, protected_reason, "
          "tariff_id) VALUES (%s, %s, %s, %s, 'BJ-GAS') ON CONFLICT DO NOTHING",
          (account, "CUST-PROT" if protected else "CUST-1", protected,
           "home oxygen equipment" if protected else ""))
    for n, (device_id, (dtype, location, account, parent)) in enumerate(FLEET.items()):
        x("INSERT INTO ledger.devices (device_id, device_type, address, status, location_id, "
          "parent_device_id, link_id) VALUES (%s, %s, %s, 'active', %s, %s, %s) "
          "ON CONFLICT DO NOTHING",
          (device_id, dtype, f"{n + 1:012d}" if dtype == "elec_dlt645" else f"{n + 1:014d}",
           location, parent,
           "LINK-CONC-1" if device_id == "CONC-1" else None))
        medium = next(t[2] for t in _TYPES if t[0] == dtype)
        if medium is not None:
            x("INSERT INTO ledger.meters (meter_id, medium, account_id) VALUES (%s, %s, %s) "
              "ON CONFLICT DO NOTHING", (device_id, medium, account))
    for i, device_id in enumerate(STOCK_METERS):
        x("INSERT INTO ledger.devices (device_id, device_type, address, status) VALUES "
          "(%s, 'gas_nbiot_g4', %s, 'in_stock') ON CONFLICT DO NOTHING",
          (device_id, f"7{i:013d}"))
        x("INSERT INTO ledger.meters (meter_id, medium) VALUES (%s, 'gas') "
          "ON CONFLICT DO NOTHING", (device_id,))
    for i, device_id in enumerate(CONC_METERS):
        x("INSERT INTO ledger.devices (device_id, device_type, address, status, location_id, "
          "parent_device_id, point_no) VALUES (%s, 'gas_wired_g2_5', %s, 'active', %s, "
          "'CONC-1', %s) ON CONFLICT DO NOTHING",
          (device_id, f"9{i:013d}", f"R1-B2-U{i % 6 + 1}", i + 1))
        x("INSERT INTO ledger.meters (meter_id, medium) VALUES (%s, 'gas') "
          "ON CONFLICT DO NOTHING", (device_id,))


@pytest.fixture
def fleet(database: DbHandle) -> Fleet:
    """A fresh migrated database with the test utility in its ledger."""
    with database.connect("api") as conn, conn.transaction():
        conn.execute("SELECT set_config('unimeter.actor', 'test-seed', true)")
        seed_fleet(conn)
    return Fleet(database)
