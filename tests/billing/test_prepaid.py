"""Prepayment: the daily-settlement worked example, alarm edges, cut-off, reconnect, safety."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.engine import BillingEngine
from billing.errors import TopUpRefusedError
from billing.state import Outcome
from tests.billing.helpers import D, account, daily, engine, local, top_up

NOW = datetime(2020, 6, 10, tzinfo=UTC)


def _example_account(**kw: object) -> BillingEngine:
    acc = account(opening_balance=D("50.00"), opening_cycle_volume=D("345"),
                  opened_at=local("2020-06-01"), alarm1=D("30.00"), alarm2=D("10.00"),
                  overdraft_limit=D("20.00"), reconnect_limit=D("0"), **kw)
    return engine([acc])


def _codes(out: Outcome) -> list[tuple[str, str]]:
    return [(a.code, a.state) for a in out.alerts]


def test_daily_settlement_worked_example_to_the_cent() -> None:
    e = _example_account()
    day1 = e.bill_reading(daily("GAS-1", "2020-06-01", "8"), NOW)
    assert [b.kind for b in day1.balances] == ["opening", "charge"]
    charge = day1.charges[0]
    assert [(s.tier, s.volume, s.amount) for s in charge.segments] == [
        (1, D("5"), D("13.05")), (2, D("3"), D("8.49"))]
    assert charge.amount == D("21.54")
    assert day1.balances[-1].balance_after == D("28.46")
    assert _codes(day1) == [("billing.alarm1", "raised")]
    assert day1.balances[-1].alarm_state == "alarm1"

    day2 = e.bill_reading(daily("GAS-1", "2020-06-02", "10"), NOW)
    assert day2.charges[0].amount == D("28.30")
    assert day2.balances[-1].balance_after == D("0.16")
    assert _codes(day2) == [("billing.alarm2", "raised")]

    day3 = e.bill_reading(daily("GAS-1", "2020-06-03", "5"), NOW)
    assert day3.charges[0].amount == D("14.15")
    assert day3.balances[-1].balance_after == D("-13.99")
    assert _codes(day3) == [("billing.overdraft", "raised")]
    assert day3.commands == []  # the overdraft is in use: the valve stays open

    day4 = e.bill_reading(daily("GAS-1", "2020-06-04", "3"), NOW)
    assert day4.charges[0].amount == D("8.49")
    assert day4.balances[-1].balance_after == D("-22.48")
    assert _codes(day4) == [("billing.cut_off", "raised")]
    assert [(c.command, c.device_id, c.params) for c in day4.commands] == [
        ("valve_close", "GAS-1", {"cause": "debt"})]
    assert day4.commands[0].origin == "billing"

    paid = e.apply_top_up(top_up("CIS-1", "100.00"), NOW)
    assert paid.balances[0].balance_after == D("77.52")
    assert [(c.command, c.device_id) for c in paid.commands] == [("valve_arm_open", "GAS-1")]
    assert sorted(_codes(paid)) == [("billing.alarm1", "cleared"), ("billing.alarm2", "cleared"),
                                    ("billing.overdraft", "cleared"),
                                    ("billing.reconnect", "raised")]
    state = e.account_state("ACC-1")
    assert state is not None
    assert (state.alarm1_armed, state.alarm2_armed, state.overdraft_armed) == (True,) * 3
    assert state.supply == "on"
    assert state.cycle_volumes == {"2020": D("371")}


def test_alarm_fires_once_on_crossing_not_at_the_level_and_not_again_below() -> None:
    e = engine([account(opening_balance=D("40"), alarm1=D("30"), tariff_id="BJ-GAS-RES")])
    at_level = e.bill_reading(daily("M", "2020-06-01", "3.831"), NOW)  # 10.00 → exactly 30.00
    assert at_level.balances[-1].balance_after == D("30.00")
    assert at_level.alerts == []
    below = e.bill_reading(daily("M", "2020-06-02", "1"), NOW)
    assert _codes(below) == [("billing.alarm1", "raised")]
    again = e.bill_reading(daily("M", "2020-06-03", "1"), NOW)
    assert again.alerts == []


def test_alarm_rearms_only_when_a_top_up_lifts_the_balance_back_to_its_level() -> None:
    e = engine([account(opening_balance=D("40"), alarm1=D("30"), alarm2=D("10"))])
    e.bill_reading(daily("M", "2020-06-01", "13"), NOW)  # 40 - 33.93 = 6.07: both fire
    partial = e.apply_top_up(top_up("T1", "10"), NOW)   # 16.07: alarm 2 re-armed only
    assert _codes(partial) == [("billing.alarm2", "cleared")]
    refire = e.bill_reading(daily("M", "2020-06-02", "3"), NOW)  # 16.07 - 7.83 = 8.24
    assert _codes(refire) == [("billing.alarm2", "raised")]


def test_a_single_large_charge_crosses_every_level_at_once() -> None:
    e = engine([account(opening_balance=D("50"), alarm1=D("30"), alarm2=D("10"),
                        overdraft_limit=D("20"))])
    out = e.bill_reading(daily("M", "2020-06-01", "30"), NOW)  # 78.30 → -28.30
    assert _codes(out) == [("billing.alarm1", "raised"), ("billing.alarm2", "raised"),
                           ("billing.cut_off", "raised")]
    assert [c.command for c in out.commands] == ["valve_close"]


def test_cut_off_closes_every_valve_meter_of_the_account_once() -> None:
    e = BillingEngine(tariffs=engine([]).tariffs,
                      accounts={"ACC-1": account(opening_balance=D("5"))},
                      meter_has_valve=lambda m: m != "NO-VALVE")
    e.bill_reading(daily("A", "2020-06-01", "1"), NOW)
    e.bill_reading(daily("NO-VALVE", "2020-06-01", "0"), NOW)
    out = e.bill_reading(daily("B", "2020-06-01", "2"), NOW)
    assert sorted(c.device_id for c in out.commands) == ["A", "B"]
    assert len({c.command_id for c in out.commands}) == 2
    later = e.bill_reading(daily("A", "2020-06-02", "2"), NOW)
    assert later.commands == []
    assert later.alerts == []


def test_top_up_not_above_the_reconnect_limit_keeps_the_valve_closed() -> None:
    e = engine([account(opening_balance=D("0"), reconnect_limit=D("10"))])
    cut = e.bill_reading(daily("M", "2020-06-01", "2"), NOW)  # -5.22
    assert [c.command for c in cut.commands] == ["valve_close"]
    small = e.apply_top_up(top_up("T1", "15.22"), NOW)     # 10.00: not above 10
    assert small.commands == []
    enough = e.apply_top_up(top_up("T2", "0.01"), NOW)
    assert [c.command for c in enough.commands] == ["valve_arm_open"]


def test_safety_close_is_never_reopened_by_billing() -> None:
    e = engine([account(opening_balance=D("5"))])
    leak = daily("M", "2020-06-01", "1", flags=("valve_closed", "leak"))
    e.bill_reading(leak, NOW)
    state = e.account_state("ACC-1")
    assert state is not None
    assert state.safety_lock == "leak"
    cut = e.bill_reading(daily("M", "2020-06-02", "2"), NOW)  # debt close is still requested
    assert [c.command for c in cut.commands] == ["valve_close"]
    paid = e.apply_top_up(top_up("T1", "100"), NOW)
    assert paid.commands == []
    blocked = [a for a in paid.alerts if a.code == "billing.reconnect_blocked"]
    assert len(blocked) == 1
    assert "leak" in blocked[0].reason
    # A person clears the lock; billing still opens nothing by itself.
    assert e.clear_safety_lock("ACC-1", NOW).status == "cleared"
    assert e.account_state("ACC-1").safety_lock is None  # type: ignore[union-attr]


def test_protected_customer_is_not_cut_off_for_debt() -> None:
    e = engine([account(opening_balance=D("1"), protected=True)])
    out = e.bill_reading(daily("M", "2020-06-01", "2"), NOW)
    assert out.commands == []
    assert _codes(out) == [("billing.cut_off_blocked", "raised")]
    paid = e.apply_top_up(top_up("T1", "50"), NOW)
    assert paid.commands == []
    assert _codes(paid) == [("billing.overdraft", "cleared"),
                            ("billing.cut_off_blocked", "cleared")]


def test_postpaid_accounts_accumulate_debt_without_alarms_or_valves() -> None:
    e = engine([account(billing_mode="postpaid", alarm1=D("30"))])
    out = e.bill_reading(daily("M", "2020-06-01", "100"), NOW)
    assert out.balances[-1].balance_after == D("-261.00")
    assert out.alerts == []
    assert out.commands == []


def test_max_balance_refuses_a_hoarding_top_up_and_applies_nothing() -> None:
    e = engine([account(opening_balance=D("900"), max_balance=D("1000"))])
    with pytest.raises(TopUpRefusedError, match="above the account's maximum 1000"):
        e.apply_top_up(top_up("T1", "200"), NOW)
    assert e.account_state("ACC-1") is None or e.account_state("ACC-1").balance == D("900")  # type: ignore[union-attr]
    ok = e.apply_top_up(top_up("T2", "100"), NOW)
    assert ok.balances[-1].balance_after == D("1000")


@pytest.mark.parametrize(("kind", "amount"), [("top_up", "-5"), ("refund", "5")])
def test_amount_sign_must_match_the_kind(kind: str, amount: str) -> None:
    e = engine([account()])
    with pytest.raises(TopUpRefusedError):
        e.apply_top_up(top_up("T1", amount, kind=kind), NOW)


def test_refund_and_adjustment_move_the_balance_and_are_applied_once() -> None:
    e = engine([account(opening_balance=D("100"), alarm1=D("30"))])
    refund = e.apply_top_up(top_up("R1", "-80", kind="refund"), NOW)
    assert refund.balances[-1].balance_after == D("20")
    assert refund.balances[-1].kind == "refund"
    assert _codes(refund) == [("billing.alarm1", "raised")]
    again = e.apply_top_up(top_up("R1", "-80", kind="refund"), NOW)
    assert again.status == "duplicate"
    assert again.balances == []  # not applied twice
    assert e.account_state("ACC-1").balance == D("20")  # type: ignore[union-attr]
    adj = e.apply_top_up(top_up("A1", "12.5", kind="adjustment"), NOW)
    assert adj.balances[-1].balance_after == D("32.5")


def test_identifiers_are_deterministic_for_the_same_inputs() -> None:
    def run() -> list[bytes]:
        from schemas.codec import encode_payload
        e = _example_account()
        outs = [e.bill_reading(daily("GAS-1", f"2020-06-0{d}", v), NOW)
                for d, v in ((1, "8"), (2, "10"), (3, "5"), (4, "3"))]
        outs.append(e.apply_top_up(top_up("CIS-1", "100.00"), NOW))
        return [encode_payload(m) for o in outs for m in o.messages()]

    assert run() == run()


def test_balance_is_exact_over_many_movements() -> None:
    e = engine([account(billing_mode="postpaid")])
    total = Decimal(0)
    for day in range(1, 29):
        out = e.bill_reading(daily("M", f"2020-02-{day:02d}", f"{day}.125"), NOW)
        total += out.charges[0].amount
    assert e.account_state("ACC-1").balance == -total  # type: ignore[union-attr]


def test_a_debt_closed_meter_with_a_low_battery_is_not_safety_locked() -> None:
    e = engine([account(opening_balance=D("5"))])
    e.bill_reading(daily("M", "2020-06-01", "5"), NOW)  # cut off for debt
    e.bill_reading(daily("M", "2020-06-02", "0", flags=("valve_closed", "battery_low")), NOW)
    assert e.account_state("ACC-1").safety_lock is None  # type: ignore[union-attr]
    paid = e.apply_top_up(top_up("T1", "100"), NOW)
    assert [c.command for c in paid.commands] == ["valve_arm_open"]
