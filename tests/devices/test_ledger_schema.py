"""The ledger schema on a real PostgreSQL: lifecycle, network, history, outbox, roles."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from devices.ledger import acting_as
from tests.plugins.services import DbHandle

pytestmark = pytest.mark.integration

SEED = Path(__file__).parents[1] / "data" / "ledger" / "small_network.sql"


@pytest.fixture
def api(database: DbHandle) -> Iterator[psycopg.Connection]:
    """A connection acting as the control plane, on a database holding the small network."""
    with database.connect("api") as conn:
        conn.execute(SEED.read_text(encoding="utf-8").encode())
        yield conn


def _outbox(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        "SELECT topic, entity, entity_id FROM ledger.outbox ORDER BY seq").fetchall()]


def test_lifecycle_transitions_are_enforced_and_stamped(api: psycopg.Connection) -> None:
    api.execute("UPDATE ledger.devices SET status = 'active' WHERE device_id = 'M1'")
    row = api.execute("SELECT status, installed_at, activated_at FROM ledger.devices "
                      "WHERE device_id = 'M1'").fetchone()
    assert row is not None
    assert row[0] == "active"
    assert row[2] >= row[1]
    with pytest.raises(psycopg.errors.CheckViolation, match="from active to in_stock"):
        api.execute("UPDATE ledger.devices SET status = 'in_stock' WHERE device_id = 'M1'")
    api.execute("UPDATE ledger.devices SET status = 'removed' WHERE device_id = 'M1'")
    removed = api.execute("SELECT removed_at FROM ledger.devices WHERE device_id = 'M1'"
                          ).fetchone()
    assert removed is not None
    assert removed[0] is not None
    # Back to stock, then installed again: a new installation, the removal forgotten.
    api.execute("UPDATE ledger.devices SET status = 'in_stock' WHERE device_id = 'M1'")
    api.execute("UPDATE ledger.devices SET status = 'installed' WHERE device_id = 'M1'")
    again = api.execute("SELECT installed_at, removed_at, activated_at FROM ledger.devices "
                        "WHERE device_id = 'M1'").fetchone()
    assert again is not None
    assert again[0] > row[1]
    assert (again[1], again[2]) == (None, None)


def test_collection_network_stays_a_ranked_tree(api: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="below a meter"):
        api.execute("INSERT INTO ledger.devices (device_id, device_type, parent_device_id) "
                    "VALUES ('M9', 'gc-g4', 'M1')")
    with pytest.raises(psycopg.errors.CheckViolation, match="below a collector"):
        api.execute("UPDATE ledger.devices SET parent_device_id = 'COL1' WHERE device_id = 'C1'")
    # Re-homing a collector moves its meters' paths with it.
    api.execute("INSERT INTO ledger.devices (device_id, device_type, link_id) "
                "VALUES ('C2', 'gc-conc', 'LINK-C2')")
    api.execute("UPDATE ledger.devices SET parent_device_id = 'C2' WHERE device_id = 'COL1'")
    paths = dict(api.execute("SELECT device_id, path FROM ledger.devices "
                             "WHERE device_id IN ('M1', 'M2')").fetchall())
    assert paths == {"M1": ["C2", "COL1", "M1"], "M2": ["C2", "COL1", "M2"]}
    link = api.execute("SELECT link_id, link_device_id, service_point_id "
                       "FROM ledger.device_context WHERE device_id = 'M1'").fetchone()
    assert link == ("LINK-C2", "C2", None)


def test_locations_nest_and_never_rename(api: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="cannot lie inside"):
        api.execute("INSERT INTO ledger.locations (location_id, kind, parent_id, name) "
                    "VALUES ('X', 'area', 'R1-A1-B1', 'bad')")
    with pytest.raises(psycopg.errors.CheckViolation, match="cannot be renamed"):
        api.execute("UPDATE ledger.locations SET location_id = 'R9' WHERE location_id = 'R1'")


def test_meter_dimensions_carry_what_the_stream_needs(api: psycopg.Connection) -> None:
    row = api.execute(
        "SELECT qmax, link_id, service_point, account_id, customer_type, region, org_unit, "
        "supply_node, tariff_id, has_valve FROM ledger.meter_dimensions WHERE meter_id = 'M2'"
    ).fetchone()
    assert row == (Decimal("10"), "LINK-C1", "SP-CJT188", "A2", "commercial", "R1", "ORG-N",
                   "P1", "RES", True)


async def test_ledger_meters_carry_the_measuring_point(database: DbHandle) -> None:
    """A concentrator's class 1/2 data names meters by measuring point: LedgerMeter says it."""
    from psycopg import AsyncConnection

    from devices.ledger.messages import build_meters

    with database.connect("api") as conn:
        conn.execute(SEED.read_text(encoding="utf-8").encode())
    async with await AsyncConnection.connect(database.settings.conninfo("api")) as conn:
        meters = await build_meters(conn, ["M2"])
    assert meters["M2"].point_no == 2  # type: ignore[attr-defined]


def test_noop_update_leaves_no_trace(api: psycopg.Connection) -> None:
    api.execute("DELETE FROM ledger.outbox")
    before = api.execute("SELECT row_version, updated_at FROM ledger.accounts "
                         "WHERE account_id = 'A1'").fetchone()
    history = api.execute("SELECT count(*) FROM ledger.history").fetchone()
    api.execute("UPDATE ledger.accounts SET alarm1 = 20, tariff_id = 'RES' "
                "WHERE account_id = 'A1'")
    assert api.execute("SELECT row_version, updated_at FROM ledger.accounts "
                       "WHERE account_id = 'A1'").fetchone() == before
    assert api.execute("SELECT count(*) FROM ledger.history").fetchone() == history
    assert _outbox(api) == []


def test_change_is_recorded_with_actor_and_enqueued_in_the_same_transaction(
        api: psycopg.Connection) -> None:
    api.execute("DELETE FROM ledger.outbox")
    with api.transaction():
        acting_as(api, "alice", "customer asked for a lower alarm")
        api.execute("UPDATE ledger.accounts SET alarm1 = 15 WHERE account_id = 'A1'")
    row = api.execute("SELECT op, actor, reason, before, after, row_version FROM ledger.history "
                      "WHERE entity = 'accounts' AND entity_id = 'A1' "
                      "ORDER BY history_id DESC LIMIT 1").fetchone()
    assert row == ("update", "alice", "customer asked for a lower alarm", {"alarm1": 20},
                   {"alarm1": 15}, 2)
    assert sorted(_outbox(api)) == [("ledger.accounts", "account", "A1"),
                                    ("ledger.meters", "account", "A1")]
    # A rolled-back change leaves neither history nor outbox.
    api.execute("DELETE FROM ledger.outbox")
    def change_then_fail() -> None:
        with api.transaction():
            api.execute("UPDATE ledger.accounts SET alarm1 = 1 WHERE account_id = 'A1'")
            api.execute("UPDATE ledger.devices SET status = 'in_stock' WHERE device_id = 'C1'")

    with pytest.raises(psycopg.errors.CheckViolation):
        change_then_fail()
    assert _outbox(api) == []


def test_customer_type_change_fans_out_but_personal_changes_do_not(
        api: psycopg.Connection) -> None:
    api.execute("DELETE FROM ledger.outbox")
    api.execute("UPDATE ledger.customers SET phone = '13900000000' WHERE customer_id = 'CU1'")
    assert _outbox(api) == []
    api.execute("UPDATE ledger.customers SET customer_type = 'low_income' "
                "WHERE customer_id = 'CU1'")
    assert sorted(_outbox(api)) == [("ledger.accounts", "customer", "CU1"),
                                    ("ledger.meters", "customer", "CU1")]


def test_personal_data_is_for_api_and_billing_never_analyst(database: DbHandle,
                                                            api: psycopg.Connection) -> None:
    assert api.execute("SELECT name FROM ledger.customers WHERE customer_id = 'CU1'"
                       ).fetchone() == ("Zhang San",)
    with database.connect("billing") as billing:
        assert billing.execute("SELECT count(*) FROM ledger.customers").fetchone() == (2,)
    with database.connect("analyst") as analyst:
        assert analyst.execute("SELECT count(*), min(region) FROM analyst.meters"
                               ).fetchone() == (2, "R1")
        columns = {r[0] for r in analyst.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'analyst' AND table_name IN ('meters', 'accounts', 'devices')"
        ).fetchall()}
        assert not columns & {"name", "phone", "email", "id_number", "postal_address",
                              "address", "customer_id"}
        assert analyst.execute("SELECT count(*) FROM analyst.locations WHERE kind = 'unit'"
                               ).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            analyst.execute("SELECT name FROM ledger.customers")
    with database.connect("pipeline") as pipeline:
        assert pipeline.execute("SELECT count(*) FROM ledger.meter_dimensions").fetchone() == (2,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            pipeline.execute("SELECT name FROM ledger.customers")
