"""The engine's bookkeeping: idempotency per reading version, corrections, settlement."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from billing.engine import BillingEngine, MemoryStore
from billing.errors import BillingInputError, UnknownAccountError
from billing.state import AccountState, ReadingRecord, decode_state, encode_state
from schemas.messages import TariffTier
from tests.billing.helpers import (
    TZ,
    D,
    account,
    book,
    daily,
    engine,
    hourly,
    local,
    span,
    top_up,
)

NOW = datetime(2020, 6, 10, tzinfo=UTC)


def test_redelivered_reading_never_charges_twice() -> None:
    e = engine([account(opening_balance=D("100"))])
    e.bill_reading(daily("M", "2020-06-01", "8"), NOW)
    again = e.bill_reading(daily("M", "2020-06-01", "8"), NOW + timedelta(hours=1))
    assert again.status == "duplicate"
    assert again.messages() == []
    assert e.account_state("ACC-1").balance == D("100") - D("20.88")  # type: ignore[union-attr]


def test_a_redelivery_with_its_time_in_another_zone_is_the_same_reading() -> None:
    e = engine([account(opening_balance=D("100"))])
    first = daily("M", "2020-06-01", "8")
    e.bill_reading(first, NOW)
    e.bill_reading(daily("M", "2020-06-02", "1"), NOW)  # another timestamp in between
    shanghai = msgspec.structs.replace(first, ts=first.ts.astimezone(TZ))
    assert e.bill_reading(shanghai, NOW).status == "duplicate"
    assert e.bill_reading(first, NOW).status == "duplicate"
    assert e.account_state("ACC-1").balance == D("100") - D("20.88") - D("2.61")  # type: ignore[union-attr]


def test_with_stored_outcomes_a_redelivery_resends_the_same_messages() -> None:
    from billing.settings import BillingSettings
    e = engine([account(opening_balance=D("100"))],
               settings=BillingSettings(store_outcomes=True))
    first = e.bill_reading(daily("M", "2020-06-01", "8"), NOW)
    again = e.bill_reading(daily("M", "2020-06-01", "8"), NOW + timedelta(hours=1))
    assert again.status == "duplicate"
    assert again.messages() == first.messages()  # identical bytes downstream: idempotent
    assert e.account_state("ACC-1").balance == D("100") - D("20.88")  # type: ignore[union-attr]


def test_new_version_posts_the_difference_as_an_adjustment() -> None:
    e = engine([account(opening_balance=D("100"), opening_cycle_volume=D("340"),
                        opened_at=local("2020-06-01"))])
    v1 = e.bill_reading(daily("M", "2020-06-01", "8"), NOW)    # 340 → 348, all tier 1
    assert v1.charges[0].amount == D("20.88")
    v2 = e.bill_reading(daily("M", "2020-06-01", "12", version=2), NOW)  # +4: 348 → 352
    charge = v2.charges[0]
    assert v2.status == "adjusted"
    assert charge.kind == "adjustment"
    assert charge.corrects == v1.charges[0].charge_id
    assert charge.charge_id.endswith(":2")
    assert [(s.tier, s.volume, s.amount) for s in charge.segments] == [
        (1, D("2"), D("5.22")), (2, D("2"), D("5.66"))]
    assert v2.balances[0].kind == "adjustment"
    assert v2.balances[0].balance_after == D("100") - D("20.88") - D("10.88")
    # a lower version arriving late is ignored, the same version is a duplicate
    assert e.bill_reading(daily("M", "2020-06-01", "8"), NOW).status == "stale"
    assert e.bill_reading(daily("M", "2020-06-01", "12", version=2), NOW).status == "duplicate"
    v3 = e.bill_reading(daily("M", "2020-06-01", "7", version=3), NOW)  # -5 off the top
    assert v3.charges[0].volume == D("-5")
    assert v3.charges[0].amount == -(D("2") * D("2.83") + D("3") * D("2.61"))
    assert e.account_state("ACC-1").cycle_volumes == {"2020": D("347")}  # type: ignore[union-attr]


def test_same_consumption_in_a_new_version_posts_nothing() -> None:
    e = engine([account()])
    e.bill_reading(daily("M", "2020-06-01", "8", quality="validated"), NOW)
    out = e.bill_reading(daily("M", "2020-06-01", "8", version=2, quality="edited"), NOW)
    assert out.status == "unchanged"
    assert not out
    assert e.bill_reading(daily("M", "2020-06-01", "8", version=2), NOW).status == "duplicate"


def test_estimated_day_is_provisional_and_corrected_when_the_actual_arrives() -> None:
    e = engine([account(billing_mode="postpaid")])
    est = e.bill_reading(daily("M", "2020-06-01", "10", quality="estimated"), NOW)
    assert est.charges[0].provisional
    # the next day closes 1 June: its settlement is provisional
    nxt = e.bill_reading(daily("M", "2020-06-02", "4"), NOW)
    day1 = [s for s in nxt.settlements if s.period == "day"]
    assert [(s.period_id, s.revision, s.provisional, s.volume, s.amount) for s in day1] == [
        ("2020-06-01", 1, True, D("10"), D("26.10"))]
    actual = e.bill_reading(daily("M", "2020-06-01", "9", version=2), NOW)
    adj = actual.charges[0]
    assert (adj.kind, adj.volume, adj.amount, adj.provisional) == (
        "adjustment", D("-1"), D("-2.61"), False)
    revised = [s for s in actual.settlements if s.period == "day"]
    assert [(s.period_id, s.revision, s.provisional, s.volume, s.amount) for s in revised] == [
        ("2020-06-01", 2, False, D("9"), D("23.49"))]
    assert revised[0].estimated_volume == 0


def test_estimate_confirmed_exactly_still_posts_a_final_zero_adjustment() -> None:
    e = engine([account(billing_mode="postpaid")])
    e.bill_reading(daily("M", "2020-06-01", "10", quality="estimated"), NOW)
    out = e.bill_reading(daily("M", "2020-06-01", "10", version=2), NOW)
    assert [(c.kind, c.amount, c.provisional) for c in out.charges] == [
        ("adjustment", D("0"), False)]
    assert out.balances == []


def test_questionable_reading_is_held_until_a_billable_version_arrives() -> None:
    e = engine([account()])
    held = e.bill_reading(daily("M", "2020-06-01", "900", quality="questionable"), NOW)
    assert held.status == "held"
    assert held.charges == []
    out = e.bill_reading(daily("M", "2020-06-01", "9", version=2, quality="edited"), NOW)
    assert out.status == "charged"
    assert out.charges[0].volume == D("9")


def test_unbilled_registers_and_readings_without_account_are_skipped() -> None:
    e = engine([account()])
    assert e.bill_reading(daily("M", "2020-06-01", "8", register="flow_rate"),
                          NOW).status == "skipped"
    assert e.bill_reading(daily("M", "2020-06-01", "8", account_id=""), NOW).status == "skipped"


def test_unknown_account_and_negative_consumption_are_refused_with_reasons() -> None:
    e = engine([account()])
    with pytest.raises(UnknownAccountError, match="ACC-9"):
        e.bill_reading(daily("M", "2020-06-01", "8", account_id="ACC-9"), NOW)
    with pytest.raises(BillingInputError, match="negative consumption"):
        e.bill_reading(daily("M", "2020-06-01", "-3"), NOW)


def test_failed_pricing_changes_no_state() -> None:
    e = engine([account(tariff_id="RT-ELEC", billing_mode="postpaid")], "realtime.yaml")
    ok = hourly("E", local("2026-07-10"), ["1", "1"])
    e.bill_reading(ok, NOW)
    before = encode_state(e.account_state("ACC-1"))  # type: ignore[arg-type]
    bad = hourly("E", local("2026-07-10", 2), ["1", "1", "1", "1"])  # 03:00 has no price
    with pytest.raises(Exception, match="no real-time price"):
        e.bill_reading(bad, NOW)
    assert encode_state(e.account_state("ACC-1")) == before  # type: ignore[arg-type]


def test_intervals_are_each_priced_at_their_own_time_and_shifts_reprice() -> None:
    e = engine([account(tariff_id="ELEC-TOU", billing_mode="postpaid")],
               "tou_electricity.yaml")
    start = local("2026-03-02", 7)   # Monday: 07-08 valley, 08-09 peak
    first = e.bill_reading(hourly("E", start, ["2", "0"]), NOW)
    assert first.charges[0].amount == D("0.72")  # 2 × 0.3583
    # VEE moves the consumption into the peak hour: -2 valley, +2 peak
    moved = e.bill_reading(hourly("E", start, ["0", "2"], version=2), NOW)
    adj = moved.charges[0]
    assert adj.volume == 0
    assert {(s.period, s.amount) for s in adj.segments} == {("valley", D("-0.72")),
                                                            ("peak", D("1.12"))}


def test_intervals_must_add_up_to_the_consumption() -> None:
    e = engine([account()])
    reading = hourly("M", local("2020-06-01"), ["1", "2"])
    broken = type(reading)(**{**{f: getattr(reading, f) for f in reading.__struct_fields__},
                              "consumption": D("4")})
    with pytest.raises(BillingInputError, match="intervals sum to 3"):
        e.bill_reading(broken, NOW)


def test_daily_settlement_closes_days_months_and_years_in_order() -> None:
    e = engine([account(billing_mode="postpaid")])
    e.bill_reading(daily("M", "2020-12-30", "1"), NOW)
    e.bill_reading(daily("M", "2020-12-31", "2"), NOW)
    out = e.bill_reading(daily("M", "2021-01-01", "3"), NOW)
    assert [(s.period, s.period_id, s.revision, s.volume) for s in out.settlements] == [
        ("day", "2020-12-31", 1, D("2")), ("month", "2020-12", 1, D("3")),
        ("year", "2020", 1, D("3"))]
    year = out.settlements[-1]
    assert year.amount == D("7.83")
    assert year.charges == 2
    # a late correction of a closed day revises the day, its month and its year at once
    late = e.bill_reading(daily("M", "2020-12-31", "4", version=2), NOW)
    assert [(s.period, s.revision, s.volume, s.amount) for s in late.settlements] == [
        ("day", 2, D("4"), D("10.44")), ("month", 2, D("5"), D("13.05")),
        ("year", 2, D("5"), D("13.05"))]


def test_settlement_amount_equals_the_sum_of_its_charges() -> None:
    e = engine([account(billing_mode="postpaid", tariff_id="ELEC-TOU")],
               "tou_electricity.yaml")
    charges = D(0)
    settlements = []
    for day in range(1, 4):
        out = e.bill_reading(hourly("E", local(f"2026-07-0{day}"),
                                    [f"0.{h + 1:02d}7" for h in range(24)]), NOW)
        charges += out.charges[0].amount
        settlements += out.settlements
    settlements += e.close_due_periods("ACC-1", local("2026-07-04", 12)).settlements
    days = [s for s in settlements if s.period == "day"]
    assert [s.period_id for s in days] == ["2026-07-01", "2026-07-02", "2026-07-03"]
    assert sum(s.amount for s in days) == charges
    assert sum(seg.amount for seg in days[0].segments) == days[0].amount


def test_open_days_close_after_the_grace_time_only() -> None:
    e = engine([account(billing_mode="postpaid")])
    e.bill_reading(daily("M", "2020-06-01", "1"), NOW)
    assert e.close_due_periods("ACC-1", local("2020-06-02", 1)).settlements == []
    late = e.close_due_periods("ACC-1", local("2020-06-02", 4))
    assert [s.period_id for s in late.settlements] == ["2020-06-01"]


def test_state_round_trips_through_the_table_encoding() -> None:
    e = engine([account(opening_balance=D("10"))])
    e.bill_reading(daily("M", "2020-06-01", "8"), NOW)
    e.apply_top_up(top_up("T", "5"), NOW)
    state = e.account_state("ACC-1")
    assert state is not None
    assert decode_state(encode_state(state), AccountState) == state
    record = next(iter(e.store.readings.values()))
    assert decode_state(encode_state(record), ReadingRecord) == record


def test_state_kept_in_memory_is_left_out_of_the_cyclic_collector() -> None:
    # A memory store keeps a record per reading and an accumulator per settled day for good;
    # were they tracked, every full collection would walk all of them (see billing.state).
    e = engine([account(opening_balance=D("100"))])
    for day in ("2020-06-01", "2020-06-02", "2020-06-03"):
        e.bill_reading(daily("M", day, "8"), NOW)
    gc.collect()
    kept = [*e.store.readings.values(), *e.store.periods.values(), *e.store.accounts.values()]
    assert len(kept) == 3 + 2 + 1
    for item in kept:
        assert not gc.is_tracked(item)
        for value in msgspec.structs.astuple(item):
            assert not gc.is_tracked(value) or isinstance(value, list | dict), value


def test_a_new_tariff_version_a_changed_tier_override_and_a_new_cycle_apply_at_once() -> None:
    # What the engine looks up per reading (version in force, tiers with the account's
    # override, the cycle) must follow the ledger from one reading to the next.
    ledger = {"ACC-1": account(opening_balance=D("1000"), opening_cycle_volume=D("340"),
                               opened_at=local("2020-06-01"))}
    e = BillingEngine(tariffs=book("beijing_gas.yaml"), accounts=ledger, store=MemoryStore())

    def segments(day: str, volume: str) -> list[tuple[str, int, int, str, str]]:
        charge = e.bill_reading(daily("M", day, volume), NOW).charges[0]
        return [(charge.cycle_id, s.tariff_version, s.tier, str(s.unit_price), str(s.volume))
                for s in charge.segments]

    assert segments("2020-06-01", "8") == [("2020", 3, 1, "2.61", "8")]        # 340 → 348
    current = e.tariffs.versions("BJ-GAS-RES")[-1].message
    e.tariffs.add(msgspec.structs.replace(current, version=4, effective_from=local("2020-06-03"),
                                          tiers=(TariffTier(upper=D("350"), price=D("3.00")),
                                                 TariffTier(upper=D("500"), price=D("3.50")),
                                                 TariffTier(upper=None, price=D("5.00")))))
    assert segments("2020-06-02", "1") == [("2020", 3, 1, "2.61", "1")]        # → 349
    assert segments("2020-06-03", "2") == [("2020", 4, 1, "3.00", "1"),        # → 351
                                           ("2020", 4, 2, "3.50", "1")]
    ledger["ACC-1"] = msgspec.structs.replace(ledger["ACC-1"], tier_override={"1": D("400")})
    assert segments("2020-06-04", "2") == [("2020", 4, 1, "3.00", "2")]        # → 353 < 400
    ledger["ACC-1"] = msgspec.structs.replace(ledger["ACC-1"], tier_override={})
    assert segments("2020-06-05", "1") == [("2020", 4, 2, "3.50", "1")]        # → 354 > 350
    assert segments("2020-12-31", "1") == [("2020", 4, 2, "3.50", "1")]        # → 355
    assert segments("2021-01-01", "1") == [("2021", 4, 1, "3.00", "1")]        # new cycle: 1


def test_register_read_span_is_one_charge_settled_on_its_last_day() -> None:
    e = engine([account(billing_mode="postpaid")])
    out = e.bill_reading(span("M", local("2018-06-25"), local("2018-07-25"), "30"), NOW)
    assert out.charges[0].amount == D("73.65")
    closed = e.close_due_periods("ACC-1", local("2018-08-01"))
    assert [s.period_id for s in closed.settlements if s.period == "day"] == ["2018-07-24"]
