"""The PostgreSQL sink's write path against a real database: idempotence, corrections,
versions, rejects. Each test gets a fresh migrated database."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import psycopg
import pytest

from schemas.messages import (
    BalanceChange,
    Charge,
    ChargeSegment,
    Message,
    Reading,
    ReadingBatch,
    Settlement,
)
from sinks.postgres import PostgresSink
from sinks.stores import STORES, StoreContext
from tests.plugins.services import DbHandle
from tests.sinks.fleet import HOUR, batch, fleet, reading

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 9, 12, tzinfo=UTC)

#: Every table the sink writes, compared without the storage timestamp columns.
TABLES = {
    "data.raw_readings": "meter_id, register, ts",
    "data.validated_readings": "meter_id, register, ts, version",
    "data.reading_edits": "meter_id, register, ts, version",
    "data.consumption_intervals": "meter_id, register, reading_ts, interval_start",
    "data.device_events": "event_id",
    "billing.charges": "charge_id",
    "billing.charge_segments": "charge_id, segment_no",
    "billing.settlements": "settlement_id, revision",
    "billing.settlement_segments": "settlement_id, revision, segment_no",
    "billing.balance_changes": "entry_id",
    "billing.balances": "account_id",
    "billing.topups": "top_up_id",
    "ops.alerts": "alert_id, state",
    "ops.command_results": "command_id, status, attempt",
    "ops.sink_corrections": "table_name, natural_key::text",
    "data.raw_reading_conflicts": "meter_id, register, ts, value",
}


def snapshot(db: DbHandle) -> dict[str, list[tuple[object, ...]]]:
    out = {}
    with db.admin() as conn:
        for table, order in TABLES.items():
            rows = conn.execute(f"SELECT to_jsonb(t) - 'stored_at' - 'updated_at' "
                                f"- 'detected_at' - 'correction_id' FROM {table} t "
                                f"ORDER BY {order}").fetchall()
            out[table] = [r[0] for r in rows]
    return out


def mixed_messages(samples: dict[str, Message]) -> list[Message]:
    """A day of readings for a few meters plus one of every other stored type."""
    messages: list[Message] = list(fleet(5, T0, 6))
    messages.append(reading(1, T0 + 7 * HOUR, version=2, span_hours=1, edit_user="alice"))
    messages += [
        Reading(meter_id=f"GAS-{i:06d}", register="volume", ts=T0 + HOUR * h,
                value=Decimal(1000 + i * 10 + h), unit="m3", received_at=T0 + HOUR * h,
                device_id="DTU-1", fep="fep-1", protocol="cjt188-2004", status=("ok",))
        for i in range(3) for h in range(4)
    ]
    messages += [samples[s] for s in ("device.event", "billing.charge", "billing.balance",
                                      "billing.topup", "billing.settlement", "alert",
                                      "command.result")]
    settlement = samples["billing.settlement"]
    assert isinstance(settlement, Settlement)
    # The next revision of the same settlement: a correction, kept next to the first.
    messages.append(msgspec.structs.replace(settlement, revision=settlement.revision + 1,
                                            provisional=False,
                                            estimated_volume=Decimal("0")))
    messages.append(tou_charge())
    return messages


def tou_charge() -> Charge:
    """A time-of-use charge: its segments keep the period names; a real-time one does not."""
    start = datetime(2026, 7, 9, 16, tzinfo=UTC)
    return Charge(charge_id="ACC-2:ELEC-1:tou", account_id="ACC-2", meter_id="ELEC-1",
                  kind="consumption", period_start=start, period_end=start + timedelta(days=1),
                  volume=Decimal("10"), amount=Decimal("6.10"),
                  segments=(ChargeSegment(tier=1, volume=Decimal("4"), unit_price=Decimal("0.8"),
                                          amount=Decimal("3.20"), period="peak"),
                            ChargeSegment(tier=1, volume=Decimal("6"), unit_price=Decimal("0.3"),
                                          amount=Decimal("1.80"), period="valley"),
                            ChargeSegment(tier=1, volume=Decimal("1"), unit_price=Decimal("1.1"),
                                          amount=Decimal("1.10"),
                                          period="2026-07-10T08:00:00+08:00")),
                  tariff_id="ELEC-TOU")


def make_sink(db: DbHandle, *, fast_path: bool = True) -> PostgresSink:
    return PostgresSink(db.settings.conninfo("sink"), consumer_group="test",
                        context=StoreContext(fast_path=fast_path))


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "staging-only"])
def test_same_batch_twice_shuffled_and_duplicated_changes_nothing(
        backend_database: DbHandle, samples: dict[str, Message], fast_path: bool) -> None:
    database = backend_database
    messages = mixed_messages(samples)
    sink = make_sink(database, fast_path=fast_path)
    first = sink.write(batch(messages))
    assert not first.rejected
    assert first.absorbed == 0
    assert first.corrections == 0
    stored = snapshot(database)
    assert len(stored["data.validated_readings"]) == 31
    assert len(stored["data.raw_readings"]) == 12
    assert len(stored["data.reading_edits"]) == 1
    assert [r["revision"] for r in stored["billing.settlements"]] == [2, 3]
    assert len(stored["billing.settlement_segments"]) == 4
    periods = [(r["period"], r["price_period"]) for r in stored["billing.charge_segments"]
               if r["charge_id"] == "ACC-2:ELEC-1:tou"]
    assert periods == [("peak", "peak"), ("valley", "valley"),
                       ("2026-07-10T08:00:00+08:00", "")]
    # Each charge is accounted at the last instant of its period.
    accounted = {r["accounted_at"] for r in stored["billing.charge_segments"]
                 if r["charge_id"] == "ACC-2:ELEC-1:tou"}
    assert accounted == {"2026-07-10T15:59:59.999999+00:00"}

    again = messages + random.Random(7).sample(messages, 20)
    random.Random(3).shuffle(again)
    second = sink.write(batch(again, first_offset=len(messages)))
    sink.close()
    assert not second.rejected
    assert second.corrections == 0
    assert second.rows_written == 0
    assert second.absorbed == len(again)
    assert snapshot(database) == stored


def test_raw_reading_with_another_value_is_kept_apart(database: DbHandle) -> None:
    original = Reading(meter_id="GAS-000001", register="volume", ts=T0,
                       value=Decimal("100.000"), unit="m3", received_at=T0)
    changed = msgspec.structs.replace(original, value=Decimal("100.500"),
                                      received_at=T0 + HOUR)
    resent = msgspec.structs.replace(original, received_at=T0 + 2 * HOUR)
    sink = make_sink(database)
    sink.write(batch([original]))
    result = sink.write(batch([changed, resent, changed], first_offset=1))
    sink.close()
    assert result.corrections == 2
    assert result.absorbed == 1
    with database.admin() as conn:
        assert conn.execute("SELECT value FROM data.raw_readings").fetchall() == [
            (Decimal("100.000"),)]
        assert conn.execute("SELECT value, stored_value FROM data.raw_reading_conflicts"
                            ).fetchall() == [(Decimal("100.500"), Decimal("100.000"))]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "staging-only"])
def test_reading_batches_and_single_readings_are_stored_together(database: DbHandle,
                                                                 fast_path: bool) -> None:
    """FEPs send a meter's readings of one frame as one batch record; older producers send
    single readings. Both kinds in one write: every reading stored once, the one already
    there absorbed and counted once."""
    readings = [Reading(meter_id=f"GAS-{m:06d}", register="volume", ts=T0 + HOUR * h,
                        value=Decimal(100 + h), unit="m3", received_at=T0 + HOUR * h)
                for m in (1, 2) for h in range(3)]
    sink = make_sink(database, fast_path=fast_path)
    sink.write(batch([readings[0]], topic="test.readings.raw"))
    result = sink.write(batch([ReadingBatch(meter_id="GAS-000001", readings=tuple(readings[:3])),
                               readings[3],
                               ReadingBatch(meter_id="GAS-000002", readings=tuple(readings[4:]))],
                              topic="test.readings.raw", first_offset=1))
    sink.close()
    assert not result.rejected
    assert result.rows["data.raw_readings"] == 5
    assert result.absorbed == 1
    assert result.corrections == 0
    with database.admin() as conn:
        stored = conn.execute("SELECT meter_id, ts, value FROM data.raw_readings "
                              "ORDER BY meter_id, ts").fetchall()
    assert stored == [(r.meter_id, r.ts, r.value) for r in readings]


def test_same_version_with_another_value_is_a_flagged_correction(backend_database: DbHandle
                                                                 ) -> None:
    database = backend_database
    first = reading(3, T0)
    other = msgspec.structs.replace(first, value=first.value + 1)  # type: ignore[operator]
    sink = make_sink(database)
    sink.write(batch([first]))
    result = sink.write(batch([other, other], first_offset=1))
    sink.close()
    assert result.corrections == 2
    assert result.rows_written == 0
    with database.admin() as conn:
        rows = conn.execute(
            "SELECT table_name, natural_key, stored ->> 'value', incoming ->> 'value', differs, "
            "reviewed_at FROM ops.sink_corrections").fetchall()
        stored_value = conn.execute("SELECT value FROM data.validated_readings").fetchone()
    assert len(rows) == 1  # the same correction delivered twice is recorded once
    table, key, was, incoming, differs, reviewed = rows[0]
    assert table == "data.validated_readings"
    assert key["meter_id"] == "GAS-000003"
    assert key["version"] == 1
    assert Decimal(was) == first.value
    assert Decimal(incoming) == other.value
    assert differs == ["value"]
    assert reviewed is None
    assert stored_value == (first.value,)


def test_new_version_replaces_hour_parts_and_history_is_kept(backend_database: DbHandle
                                                            ) -> None:
    database = backend_database
    ts = T0 + 3 * HOUR
    v1 = [reading(1, T0 + h * HOUR) for h in range(1, 4)]
    # Version 2 of the 15:00 reading re-spreads it over three hours, estimated.
    v2 = reading(1, ts, version=2, span_hours=3, volume=Decimal("0.900000"), estimated=True,
                 edit_user="bob")
    sink = make_sink(database)
    sink.write(batch(v1))
    result = sink.write(batch([v2], first_offset=3))
    assert result.rows["data.consumption_intervals"] == 3
    # A replay of the old version afterwards changes nothing.
    replay = sink.write(batch(v1, first_offset=4))
    sink.close()
    assert replay.absorbed == 3
    assert replay.rows_written == 0
    with database.admin() as conn:
        parts = conn.execute(
            "SELECT interval_start, version, volume, estimated, closes_reading "
            "FROM data.consumption_intervals WHERE reading_ts = %s ORDER BY 1", (ts,)).fetchall()
        versions = conn.execute("SELECT version FROM data.validated_readings WHERE ts = %s "
                                "ORDER BY 1", (ts,)).fetchall()
        current = conn.execute("SELECT version, quality FROM data.validated_readings_current "
                               "WHERE ts = %s", (ts,)).fetchall()
        edit = conn.execute("SELECT edited_by, reason_code, previous_version, new_value "
                            "FROM data.reading_edits").fetchall()
        total = conn.execute("SELECT sum(volume) FROM data.consumption_intervals").fetchone()
    assert [p[1] for p in parts] == [2, 2, 2]
    assert sum(p[2] for p in parts) == Decimal("0.9")
    assert [p[4] for p in parts] == [False, False, True]
    assert all(p[3] for p in parts)
    assert versions == [(1,), (2,)]
    assert current == [(2, "estimated")]
    assert edit == [("bob", "SPIKE", 1, v2.value)]
    # The other two hours still carry version 1 of their own readings.
    assert total is not None
    assert total[0] == Decimal("0.9") + v1[0].consumption + v1[1].consumption  # type: ignore[operator]


def test_versions_in_one_batch_keep_the_highest(database: DbHandle) -> None:
    v1 = reading(2, T0, version=1)
    v2 = reading(2, T0, version=2, volume=Decimal("1.5"))
    sink = make_sink(database)
    sink.write(batch([v2, v1]))
    sink.close()
    with database.admin() as conn:
        assert conn.execute("SELECT version, volume FROM data.consumption_intervals"
                            ).fetchall() == [(2, Decimal("1.5"))]


def test_a_record_the_database_refuses_is_rejected_and_the_rest_stored(
        database: DbHandle, samples: dict[str, Message]) -> None:
    good = list(fleet(4, T0, 2))
    nul = msgspec.structs.replace(good[0], ts=T0 - HOUR, source="tcp\x00garbage")
    version_zero = msgspec.structs.replace(good[1], ts=T0 - HOUR, version=0)
    not_stored = samples["command.request"]
    sink = make_sink(database)
    result = sink.write(batch([*good[:3], nul, *good[3:], version_zero, not_stored]))
    sink.close()
    reasons = {r.record.offset: r.reason for r in result.rejected}
    assert set(reasons) == {3, len(good) + 1, len(good) + 2}
    assert reasons[3]["sqlstate"].startswith("22")
    assert reasons[len(good) + 1]["sqlstate"] == "23514"
    assert "validated_readings" in reasons[len(good) + 1]["where"]
    assert reasons[len(good) + 2]["error"] == "NoStoreForSchema"
    with database.admin() as conn:
        stored = conn.execute("SELECT count(*) FROM data.validated_readings").fetchone()
        progress = conn.execute("SELECT next_offset, rows_written, dead_lettered "
                                "FROM ops.sink_progress").fetchone()
    assert stored == (len(good),)
    assert progress == (len(good) + 3, 2 * len(good), 3)


def test_newest_balance_movement_wins(database: DbHandle) -> None:
    def change(n: int, minutes: int, after: str) -> BalanceChange:
        return BalanceChange(entry_id=f"ACC-9:{n}", account_id="ACC-9",
                             ts=T0 + timedelta(minutes=minutes), kind="charge",
                             amount=Decimal("-1.00"), balance_after=Decimal(after))

    sink = make_sink(database)
    sink.write(batch([change(1, 0, "10.00"), change(3, 20, "8.00"), change(2, 10, "9.00")]))
    sink.write(batch([change(0, -10, "11.00")], first_offset=3))  # late, older: ignored
    sink.close()
    with database.admin() as conn:
        assert conn.execute("SELECT balance, entry_id FROM billing.balances").fetchall() == [
            (Decimal("8.00"), "ACC-9:3")]
        assert conn.execute("SELECT count(*) FROM billing.balance_changes").fetchone() == (4,)


def test_every_store_matches_its_table(backend_database: DbHandle) -> None:
    database = backend_database
    """The column lists in sinks/ and the migrations describe the same tables."""
    with database.admin() as conn:
        for cls in STORES.values():
            for spec in cls(StoreContext()).tables():
                schema, table = spec.name.split(".")
                rows = conn.execute(
                    "SELECT column_name, udt_name FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s", (schema, table)).fetchall()
                columns = dict(rows)
                for column in spec.columns:
                    assert column.name in columns, f"{spec.name}.{column.name} missing"
                    expected = column.pg_type.replace("[]", "")
                    udt = columns[column.name].lstrip("_")
                    assert udt == expected, f"{spec.name}.{column.name}: {udt} != {expected}"


def test_sink_role_cannot_rewrite_raw_data(database: DbHandle) -> None:
    sink = make_sink(database)
    sink.write(batch([Reading(meter_id="M", register="volume", ts=T0, value=Decimal(1),
                              unit="m3", received_at=T0)]))
    sink.close()
    for role in ("sink", "ingest"):
        with database.connect(role) as conn:
            for statement in ("UPDATE data.raw_readings SET value = 2",
                              "DELETE FROM data.raw_readings",
                              "DELETE FROM data.device_events",
                              "UPDATE data.validated_readings SET value = 0",
                              "DELETE FROM billing.charges"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)


def test_a_new_version_delivered_twice_in_one_batch_is_stored_once(database: DbHandle) -> None:
    """Regression (fault run): a pipeline worker killed after sending replays its batch, so
    one sink batch can hold the same new version twice; projecting its hour parts twice made
    PostgreSQL refuse the batch ("ON CONFLICT DO UPDATE command cannot affect row a second
    time") and the sink crashed on it again after every restart."""
    v1 = reading(3, T0, version=1)
    v2 = reading(3, T0, version=2, volume=Decimal("1.5"))
    sink = make_sink(database)
    sink.write(batch([v1]))
    result = sink.write(batch([v2, v1, v2], first_offset=1))
    sink.close()
    assert not result.rejected
    with database.admin() as conn:
        assert conn.execute("SELECT version, volume FROM data.consumption_intervals"
                            ).fetchall() == [(2, Decimal("1.5"))]
        assert conn.execute("SELECT version FROM data.validated_readings ORDER BY 1"
                            ).fetchall() == [(1,), (2,)]
