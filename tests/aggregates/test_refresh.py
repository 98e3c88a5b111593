"""The aggregates on both backends: equal to an independent oracle, equal to each other, late
data folded into the right buckets at all three levels, local midnight and month ends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest

from aggregates.definitions import HIERARCHIES, LEVELS, relation_names
from aggregates.refresh import refresh_aggregates
from schemas.messages import Charge, ChargeSegment, Dimensions, Message
from schemas.settings import UtilitySettings
from sinks.postgres import PostgresSink
from tests.aggregates import oracle
from tests.plugins.services import (
    RUN_ID,
    DbHandle,
    create_database,
    drop_database,
    timescale_available,
)
from tests.sinks.fleet import HOUR, batch, dims_for, reading

pytestmark = pytest.mark.integration

ZONE = "Asia/Shanghai"
# 2026-06-30T16:00Z is midnight of 1 July in Shanghai: the data straddle a local midnight and
# a local month end.
START = datetime(2026, 6, 30, 8, tzinfo=UTC)


def dataset() -> list[Message]:
    """Two local days of a small fleet with everything the aggregates must get right."""
    messages: list[Message] = []
    for index in range(8):
        for hour in range(1, 21):
            ts = START + hour * HOUR
            if index == 3 and hour % 3:
                continue  # meter 3 reports every three hours: prorated over three hours
            span = 3 if index == 3 else 1
            dims = dims_for(index)
            if index == 5 and hour > 10:  # moved to another account and tariff mid-day
                dims = msgspec.structs.replace(dims, account_id="ACC-NEW", tariff_id="BJ-NEW")
            if index == 6:
                dims = Dimensions()  # no ledger attribution at all
            messages.append(reading(index, ts, span_hours=span, dims=dims,
                                    estimated=(index == 2 and hour in (4, 5))))
    # Corrections: version 2 replaces two readings, one with another spread.
    messages.append(reading(1, START + 9 * HOUR, version=2, volume=Decimal("2.5"),
                            span_hours=2, estimated=True, edit_user="alice"))
    messages.append(reading(4, START + 16 * HOUR, version=2, volume=Decimal("0.01")))
    messages += charges()
    return messages


def charges() -> list[Charge]:
    out = []
    for n, (hour, tiers) in enumerate([(7, [(1, "3"), (2, "1.5")]), (8, [(2, "2")]),
                                       (9, [(2, "1"), (3, "0.5")])]):
        start = START + hour * HOUR
        segments = tuple(ChargeSegment(tier=t, volume=Decimal(v), unit_price=Decimal("2.61"),
                                       amount=(Decimal(v) * Decimal("2.61")).quantize(
                                           Decimal("0.01")), tariff_id="BJ-GAS",
                                       period="peak" if t == 2 and n == 1 else "")
                         for t, v in tiers)
        out.append(Charge(charge_id=f"ACC-00001:c{n}", account_id="ACC-00001",
                          meter_id="GAS-000001", kind="consumption", period_start=start,
                          period_end=start + HOUR, volume=sum((s.volume for s in segments),
                                                              Decimal(0)),
                          amount=sum((s.amount for s in segments), Decimal(0)),
                          segments=segments, tariff_id="BJ-GAS", provisional=n == 2))
    return out


def store(db: DbHandle, messages: list[Message]) -> None:
    sink = PostgresSink(db.settings.conninfo("sink"), consumer_group="agg-test")
    result = sink.write(batch(messages))
    sink.close()
    assert not result.rejected


def stored_aggregates(db: DbHandle) -> dict[str, set[tuple[Any, ...]]]:
    out = {}
    with db.admin() as conn:
        for name in relation_names():
            out[name] = set(conn.execute(f"SELECT * FROM {name}").fetchall())
    return out


def refresh(db: DbHandle, **kwargs: Any) -> Any:
    return refresh_aggregates(db.settings, **kwargs)


def test_aggregates_equal_an_independent_reckoning(backend_database: DbHandle) -> None:
    messages = dataset()
    store(backend_database, messages)
    refresh(backend_database)
    got = stored_aggregates(backend_database)
    expected = oracle.aggregates(messages, ZONE)
    for name in relation_names():
        assert got[name] == expected[name], name
    # The data really do cover two local days and two local months.
    assert len({row[0] for row in got["agg.meter_consumption_daily"]}) == 2
    assert len({row[0] for row in got["agg.meter_consumption_monthly"]}) == 2


def test_both_backends_give_identical_aggregates(database: DbHandle,
                                                 timescale_database: DbHandle) -> None:
    messages = dataset()
    for db in (database, timescale_database):
        store(db, messages)
        refresh(db)
    plain, timescale = stored_aggregates(database), stored_aggregates(timescale_database)
    for name in relation_names():
        assert plain[name], name
        assert plain[name] == timescale[name], name
    with database.admin() as a, timescale_database.admin() as b:
        for name in relation_names():
            schema, rel = name.split(".")
            query = ("SELECT column_name, data_type FROM information_schema.columns "
                     "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position")
            cols = a.execute(query, (schema, rel)).fetchall()
            assert cols == b.execute(query, (schema, rel)).fetchall()
            hierarchy = next(h for h in HIERARCHIES if name.startswith(f"agg.{h.name}_"))
            assert tuple(cols) == hierarchy.columns()


def changed_buckets(before: dict[str, set[tuple[Any, ...]]],
                    after: dict[str, set[tuple[Any, ...]]]) -> dict[str, set[datetime]]:
    return {name: {row[0] for row in before[name] ^ after[name]} for name in before}


def test_late_data_refreshes_the_right_buckets_at_every_level(
        backend_database: DbHandle) -> None:
    db = backend_database
    messages = dataset()
    store(db, messages)
    refresh(db)
    before = stored_aggregates(db)

    # Three days late (inside the late-data window): a reading for an hour nobody reported,
    # and a new version of a reading already aggregated. Both in June, local time.
    late_ts = START - timedelta(days=3) + 2 * HOUR          # 2026-06-27T10:00Z
    corrected = reading(2, START + 3 * HOUR, version=2, volume=Decimal("9.99"))
    late = [reading(7, late_ts), corrected]
    store(db, late)
    refresh(db)
    after = stored_aggregates(db)
    assert after == oracle.aggregates(messages + late, ZONE)

    changed = changed_buckets(before, after)
    hours = {late_ts - HOUR, corrected.ts - HOUR}
    days = {oracle.local_bucket(h, "daily", oracle.ZoneInfo(ZONE)) for h in hours}
    months = {oracle.local_bucket(h, "monthly", oracle.ZoneInfo(ZONE)) for h in hours}
    assert len(days) == 2
    assert len(months) == 1
    for name in ("meter_consumption", "dimension_consumption"):
        assert changed[f"agg.{name}_hourly"] == hours
        assert changed[f"agg.{name}_daily"] == days
        assert changed[f"agg.{name}_monthly"] == months
    assert not changed["agg.tier_consumption_hourly"]


def test_local_midnight_and_month_end(backend_database: DbHandle) -> None:
    db = backend_database
    # 23:00–24:00 on 30 June local, 00:00–01:00 on 1 July local, and one reading spread over
    # both hours; one more at the end of July (31 July 23:00 local) and 1 August 00:00.
    before_midnight = reading(0, datetime(2026, 6, 30, 16, tzinfo=UTC), volume=Decimal("1"))
    after_midnight = reading(0, datetime(2026, 6, 30, 17, tzinfo=UTC), volume=Decimal("2"))
    straddling = reading(1, datetime(2026, 6, 30, 17, tzinfo=UTC), volume=Decimal("4"),
                         span_hours=2)
    july_end = reading(0, datetime(2026, 7, 31, 16, tzinfo=UTC), volume=Decimal("8"))
    august = reading(0, datetime(2026, 7, 31, 17, tzinfo=UTC), volume=Decimal("16"))
    store(db, [before_midnight, after_midnight, straddling, july_end, august])
    refresh(db)
    with db.admin() as conn:
        daily = dict(conn.execute(
            "SELECT (bucket AT TIME ZONE 'Asia/Shanghai')::date, sum(consumption) "
            "FROM agg.meter_consumption_daily GROUP BY 1").fetchall())
        monthly = dict(conn.execute(
            "SELECT (bucket AT TIME ZONE 'Asia/Shanghai')::date, sum(consumption) "
            "FROM agg.meter_consumption_monthly GROUP BY 1").fetchall())
        buckets = {r[0] for r in conn.execute("SELECT bucket FROM agg.meter_consumption_daily")}
        billing = dict(conn.execute(
            "SELECT month, sum(consumption) FROM billing.account_consumption_monthly "
            "GROUP BY 1").fetchall())
    d = datetime.fromisoformat
    assert daily == {d("2026-06-30").date(): Decimal(3), d("2026-07-01").date(): Decimal(4),
                     d("2026-07-31").date(): Decimal(8), d("2026-08-01").date(): Decimal(16)}
    assert monthly == {d("2026-06-01").date(): Decimal(3), d("2026-07-01").date(): Decimal(12),
                       d("2026-08-01").date(): Decimal(16)}
    assert billing == monthly
    # Buckets are the UTC instants of local midnight.
    assert datetime(2026, 6, 30, 16, tzinfo=UTC) in buckets


def zone_database(request: pytest.FixtureRequest, config: Any, zone: str
                  ) -> Iterator[DbHandle]:
    """A database of the backend ``request.param`` whose utility lives in ``zone``."""
    from unimeter.db.migrate import migrate

    if request.param == "timescale" and not timescale_available(config):
        pytest.skip("TimescaleDB is not installed on this PostgreSQL server")
    label = zone.rsplit("/", 1)[-1].lower()
    name = f"umt_{RUN_ID}_{label}_{request.param}_{uuid.uuid4().hex[:6]}"
    db = create_database(config, name, migrate=False)
    settings = db.settings.model_copy(update={"timescale": "on" if request.param ==
                                              "timescale" else "off"})
    migrate(settings, UtilitySettings(timezone=zone))
    yield DbHandle(settings=settings, name=name)
    drop_database(config, name)


@pytest.fixture(params=["postgres", "timescale"])
def berlin_database(request: pytest.FixtureRequest, config: Any) -> Iterator[DbHandle]:
    """A database whose utility lives in Europe/Berlin (days of 23 and 25 hours)."""
    yield from zone_database(request, config, "Europe/Berlin")


@pytest.fixture(params=["postgres", "timescale"])
def kolkata_database(request: pytest.FixtureRequest, config: Any) -> Iterator[DbHandle]:
    """A database whose utility lives in Asia/Kolkata (local midnight is 18:30 UTC)."""
    yield from zone_database(request, config, "Asia/Kolkata")


def test_days_of_23_and_25_hours(berlin_database: DbHandle) -> None:
    db = berlin_database
    # 29 March 2026 (clocks go forward) has 23 hours; 25 October 2026 has 25.
    messages: list[Message] = []
    for day_start in (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 10, 24, 22,
                                                                       tzinfo=UTC)):
        for h in range(1, 27):
            messages.append(reading(0, day_start + h * HOUR, volume=Decimal("1")))
    store(db, messages)
    refresh(db)
    with db.admin() as conn:
        days = dict(conn.execute(
            "SELECT (bucket AT TIME ZONE 'Europe/Berlin')::date, interval_count "
            "FROM agg.meter_consumption_daily").fetchall())
    d = datetime.fromisoformat
    assert days[d("2026-03-29").date()] == 23
    assert days[d("2026-10-25").date()] == 25
    assert stored_aggregates(db) == oracle.aggregates(messages, "Europe/Berlin")


def test_local_days_that_start_on_the_half_hour(kolkata_database: DbHandle) -> None:
    # Local midnight at 18:30 UTC: the UTC hour 18:00–19:00 belongs to the day before (its
    # bucket starts at 23:30 local), as TimescaleDB's time_bucket puts it. Two days, and a
    # month end (31 July → 1 August local).
    db = kolkata_database
    messages = [reading(index, datetime(2026, 7, 30, 12, tzinfo=UTC) + h * HOUR,
                        volume=Decimal(h + 1)) for index in range(2) for h in range(40)]
    store(db, messages)
    refresh(db)
    got = stored_aggregates(db)
    assert got == oracle.aggregates(messages, "Asia/Kolkata")
    days = {row[0] for row in got["agg.meter_consumption_daily"]}
    assert datetime(2026, 7, 30, 18, 30, tzinfo=UTC) in days
    assert len({row[0] for row in got["agg.meter_consumption_monthly"]}) == 2


def test_plain_refresh_is_incremental(database: DbHandle) -> None:
    store(database, dataset())
    first = refresh(database)
    assert first.buckets > 0
    assert refresh(database).buckets == 0  # nothing changed, nothing recomputed

    store(database, [reading(0, START - 40 * 24 * HOUR)])  # forty days late
    report = refresh(database)
    touched = {level.relation: level.buckets for level in report.levels}
    assert touched["agg.meter_consumption_hourly"] == 1
    assert touched["agg.meter_consumption_daily"] == 1
    # The month is recomputed whole: every meter-month of May.
    assert touched["agg.meter_consumption_monthly"] == 1
    assert "agg.tier_consumption_hourly" not in touched


def test_forced_window_repairs_a_damaged_bucket(database: DbHandle) -> None:
    store(database, dataset())
    refresh(database)
    good = stored_aggregates(database)
    with database.admin() as conn:
        conn.execute("UPDATE agg.meter_consumption_hourly SET consumption = 0")
        conn.execute("DELETE FROM agg.meter_consumption_monthly")
    report = refresh(database, start=START, end=START + 2 * 24 * HOUR, force=True)
    assert report.buckets > 0
    assert stored_aggregates(database) == good


def test_levels_are_listed_finest_first() -> None:
    assert LEVELS == ("hourly", "daily", "monthly")
    assert relation_names()[:3] == ["agg.meter_consumption_hourly",
                                    "agg.meter_consumption_daily",
                                    "agg.meter_consumption_monthly"]


def test_a_window_without_zone_is_refused(database: DbHandle) -> None:
    from aggregates.errors import AggregateError

    with pytest.raises(AggregateError, match="no time zone"):
        refresh(database, start=datetime(2026, 7, 1))
    with pytest.raises(AggregateError, match="empty"):
        refresh(database, start=START, end=START)


def test_the_refresher_acts_as_owner(database: DbHandle) -> None:
    # Nothing but the owner may change aggregates: the sink and the billing system cannot.
    for role in ("sink", "billing", "api"):
        with database.connect(role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM agg.meter_consumption_hourly")


def test_timescale_policies_cover_the_late_data_window(timescale_database: DbHandle,
                                                       config: Any) -> None:
    late = timedelta(days=config.utility.late_data_days)
    with timescale_database.admin() as conn:
        rows = conn.execute(
            "SELECT format('%I.%I', c.view_schema, c.view_name), j.config, c.materialized_only "
            "FROM timescaledb_information.continuous_aggregates c "
            "JOIN timescaledb_information.jobs j ON j.hypertable_schema = c.view_schema "
            "AND j.hypertable_name = c.view_name "
            "WHERE j.proc_name = 'policy_refresh_continuous_aggregate'").fetchall()
        compression = dict(conn.execute(
            "SELECT format('%I.%I', hypertable_schema, hypertable_name), "
            "(config ->> 'compress_after')::interval FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_compression'").fetchall())
    policies = {name: cfg for name, cfg, _ in rows}
    assert set(policies) == set(relation_names())
    assert not any(materialized_only for *_, materialized_only in rows)  # real-time
    for name, cfg in policies.items():
        start = pd_interval(cfg["start_offset"])
        assert start > late, name
        compressed_after = compression.get(name)
        if compressed_after is not None:
            assert compressed_after > start, name
    # Raw and validated data are compressed only past the late-data window too.
    assert compression["data.validated_readings"] > late
    assert compression["data.consumption_intervals"] > late
    assert compression["data.raw_readings"] > late


def pd_interval(text: str) -> timedelta:
    """'8 days', '2 mons 7 days', '01:00:00' → a lower bound as timedelta (a month ≥ 28 d)."""
    total, parts = timedelta(), text.split()
    i = 0
    while i < len(parts):
        if ":" in parts[i]:
            h, m, s = (float(x) for x in parts[i].split(":"))
            total += timedelta(hours=h, minutes=m, seconds=s)
            i += 1
            continue
        value, unit = float(parts[i]), parts[i + 1]
        total += timedelta(days=value * (28 if unit.startswith("mon") else 1)) \
            if unit.startswith(("day", "mon")) else timedelta(hours=value)
        i += 2
    return total


def test_concurrent_refreshes_wait_for_each_other_and_lose_nothing(database: DbHandle) -> None:
    # A refresh in progress (here: its advisory lock held) makes a second one wait; readings
    # stored meanwhile are folded in by the second when it gets the lock. The test waits for
    # states it observes in the server (a waiting advisory lock), never for a fixed time.
    import threading
    import time

    from aggregates import refresh as module

    first = dataset()
    store(database, first)
    holder = psycopg.connect(database.settings.conninfo("owner"), autocommit=False)
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (module._LOCK_ID,))
    outcome: dict[str, Any] = {}

    def second_refresh() -> None:
        try:
            outcome["report"] = refresh(database)
        except BaseException as exc:  # reported to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=second_refresh)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        with database.admin() as probe:
            while True:
                row = probe.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted AND objid = %s", (module._LOCK_ID,)).fetchone()
                if row and row[0]:
                    break
                assert thread.is_alive(), outcome
                assert time.monotonic() < deadline, "the second refresh never waited"
                time.sleep(0.05)
        late = [reading(7, START - 2 * 24 * HOUR)]
        store(database, late)  # logged while the second refresh waits
    finally:
        holder.rollback()
        holder.close()
        thread.join(timeout=300)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome
    assert outcome["report"].buckets > 0
    assert stored_aggregates(database) == oracle.aggregates(first + late, ZONE)
    assert refresh(database).buckets == 0  # nothing left in the log


def test_a_refresh_waits_while_another_session_holds_it(database: DbHandle) -> None:
    """Regression: `make demo` died at its last step when TimescaleDB's own refresh policy
    was refreshing the hourly aggregate at that moment (SQLSTATE 55P03, "a concurrent
    refresh is already in progress"). The refresh now waits and tries again. A row lock
    taken NOWAIT raises the same SQLSTATE on plain PostgreSQL."""
    import functools
    import threading

    from aggregates.errors import AggregateError
    from aggregates.refresh import _while_busy

    with database.admin() as setup:
        setup.execute("CREATE TABLE busy (n int)")
        setup.execute("INSERT INTO busy VALUES (1)")
    holder = database.admin(autocommit=False)
    holder.execute("SELECT n FROM busy FOR UPDATE")
    releaser = threading.Timer(1.2, holder.commit)
    releaser.start()
    notes: list[str] = []
    try:
        with database.admin() as conn:
            take = functools.partial(conn.execute, "SELECT n FROM busy FOR UPDATE NOWAIT")
            _while_busy(take, "agg.busy", notes.append, waits=(0.5, 0.5, 0.5, 0.5, 0.5))
            assert notes  # it had to wait at least once
            assert all("another refresh is in progress" in n for n in notes)
            # held for good: a clear error once the waits are spent
            holder.execute("SELECT n FROM busy FOR UPDATE")
            with pytest.raises(AggregateError) as caught:
                _while_busy(take, "agg.busy", notes.append, waits=(0.05, 0.05))
            assert "is being refreshed by another session" in str(caught.value)
            assert caught.value.hint
    finally:
        releaser.cancel()
        holder.rollback()
        holder.close()
