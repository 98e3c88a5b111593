"""Volume mode: pre-purchased m³ drawn first in, first out; under-recovery as a receivable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.errors import TopUpRefusedError
from tests.billing.helpers import D, account, daily, engine, local, top_up

NOW = datetime(2018, 8, 1, tzinfo=UTC)


def _volume_account(**kw: object):  # type: ignore[no-untyped-def]
    return engine([account(billing_mode="prepaid_volume", alarm1=D("20"), **kw)])


def test_price_rise_after_purchase_is_recorded_as_a_receivable() -> None:
    e = _volume_account()
    bought = e.apply_top_up(top_up("T1", "228.00", ts=local("2018-07-01")), NOW)
    entry = bought.balances[-1]
    assert (entry.volume, entry.volume_after, entry.balance_after) == (
        D("100.000"), D("100.000"), D("228.00"))   # sold at the day's 2.28

    before_rise = e.bill_reading(daily("M", "2018-07-05", "40"), NOW)
    assert [c.kind for c in before_rise.charges] == ["consumption"]   # no under-recovery
    assert before_rise.balances[-1].amount == D("-91.20")

    after_rise = e.bill_reading(daily("M", "2018-07-15", "50"), NOW)
    consumption, receivable = after_rise.charges
    assert consumption.amount == D("131.50")                        # 50 × 2.63
    assert (receivable.kind, receivable.volume, receivable.amount) == (
        "receivable", D("50"), D("17.50"))                          # 50 × (2.63 − 2.28)
    assert after_rise.balances[-1].volume_after == D("10.000")
    assert [(a.code, a.state) for a in after_rise.alerts] == [("billing.alarm1", "raised")]

    beyond = e.bill_reading(daily("M", "2018-07-20", "20"), NOW)
    consumption, receivable = beyond.charges
    assert receivable.volume == D("10.000")
    assert receivable.amount == D("3.50")
    assert beyond.balances[-1].volume_after == D("-10.000")
    assert beyond.balances[-1].balance_after == D("-26.30")  # 10 m³ overdraft at 2.63


def test_a_purchase_repays_overdraft_volume_first() -> None:
    e = _volume_account()
    e.apply_top_up(top_up("T1", "26.10", volume="10", ts=local("2020-05-01")), NOW)
    e.bill_reading(daily("M", "2020-05-02", "15"), NOW)  # 5 m³ beyond the lot
    state = e.account_state("ACC-1")
    assert state is not None
    assert state.volume_balance == D("-5")
    e.apply_top_up(top_up("T2", "52.20", volume="20", ts=local("2020-05-03")), NOW)
    assert state.volume_balance == D("15")
    assert [(lot.top_up_id, lot.volume, lot.amount) for lot in state.lots] == [
        ("T2", D("15"), D("39.15"))]
    assert state.balance == D("39.15")


def test_volume_refund_needs_the_volume() -> None:
    e = _volume_account()
    with pytest.raises(TopUpRefusedError, match="must say how many m³"):
        e.apply_top_up(top_up("R1", "-10", kind="refund"), NOW)
    e.apply_top_up(top_up("T1", "52.20", volume="20", ts=local("2020-05-01")), NOW)
    refund = e.apply_top_up(top_up("R2", "-26.10", kind="refund", volume="-10"), NOW)
    assert refund.balances[-1].volume_after == D("10")
    assert refund.balances[-1].balance_after == D("26.10")


def test_corrections_give_volume_back() -> None:
    e = _volume_account()
    e.apply_top_up(top_up("T1", "52.20", volume="20", ts=local("2020-05-01")), NOW)
    e.bill_reading(daily("M", "2020-05-02", "8"), NOW)
    fixed = e.bill_reading(daily("M", "2020-05-02", "5", version=2), NOW)
    assert fixed.balances[-1].volume_after == D("15")
    assert fixed.balances[-1].balance_after == D("39.15")
