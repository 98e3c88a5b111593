"""Tariff versions: which is in force when, and what a valid version is."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from billing.cycles import CycleRule
from billing.errors import NoTariffInForceError, TariffError, UnknownTariffError
from billing.tariffs import TariffBook
from schemas.messages import LedgerTariff, TariffTier
from tests.billing.helpers import TZ, D, book, local


def _tariff(version: int, start: datetime, price: str, end: datetime | None = None,
            **kw: Any) -> LedgerTariff:
    data: dict[str, Any] = {"tiers": (TariffTier(upper=None, price=Decimal(price)),),
                            "kind": "flat"}
    data.update(kw)
    return LedgerTariff(tariff_id="T", version=version, effective_from=start,
                        effective_to=end, updated_at=start, **data)


def test_version_in_force_is_the_latest_started() -> None:
    b = book("beijing_gas.yaml")
    assert b.version_at("BJ-GAS-RES", local("2018-07-09", 23, 59)).version == 1
    assert b.version_at("BJ-GAS-RES", local("2018-07-10")).version == 2
    assert b.version_at("BJ-GAS-RES", local("2030-01-01")).version == 3


def test_a_temporary_version_ends_and_the_one_below_applies_again() -> None:
    b = TariffBook(TZ, [_tariff(1, local("2026-01-01"), "3"),
                        _tariff(2, local("2026-07-01"), "2", end=local("2026-08-01"))])
    assert b.version_at("T", local("2026-07-15")).version == 2
    assert b.version_at("T", local("2026-08-01")).version == 1
    spans = b.spans("T", local("2026-06-30"), local("2026-08-02"))
    assert [(s[2].version, s[0], s[1]) for s in spans] == [
        (1, local("2026-06-30"), local("2026-07-01")), (2, local("2026-07-01"),
                                                        local("2026-08-01")),
        (1, local("2026-08-01"), local("2026-08-02"))]


def test_a_republished_version_with_the_same_start_wins_by_number() -> None:
    b = TariffBook(TZ, [_tariff(1, local("2026-01-01"), "3"), _tariff(2, local("2026-01-01"),
                                                                      "4")])
    assert b.version_at("T", local("2026-03-01")).version == 2


def test_replacing_a_version_rebuilds_the_timeline() -> None:
    b = TariffBook(TZ, [_tariff(1, local("2026-01-01"), "3")])
    assert b.version_at("T", local("2026-03-01")).tiers[0].price == 3
    b.add(_tariff(1, local("2026-01-01"), "5"))
    assert b.version_at("T", local("2026-03-01")).tiers[0].price == 5


def test_unknown_tariff_and_time_before_any_version_are_explained() -> None:
    b = TariffBook(TZ, [_tariff(1, local("2026-01-01"), "3")])
    with pytest.raises(UnknownTariffError, match="known: T"):
        b.version_at("X", local("2026-03-01"))
    with pytest.raises(NoTariffInForceError, match="first version starts"):
        b.version_at("T", local("2025-12-31"))
    gap = TariffBook(TZ, [_tariff(1, local("2026-01-01"), "3", end=local("2026-02-01")),
                          _tariff(2, local("2026-03-01"), "3")])
    with pytest.raises(NoTariffInForceError):
        gap.spans("T", local("2026-01-15"), local("2026-03-15"))


@pytest.mark.parametrize(("tiers", "message"), [
    ((TariffTier(upper=D("350"), price=D("2")), TariffTier(upper=D("300"), price=D("3")),
      TariffTier(upper=None, price=D("4"))), "not above"),
    ((TariffTier(upper=D("350"), price=D("2")),), "must be open"),
    ((TariffTier(upper=None, price=D("2")), TariffTier(upper=None, price=D("3"))),
     "not the last tier"),
    ((TariffTier(upper=None, price=D("5"), components={"a": D("2"), "b": D("2")}),),
     "sum to 4"),
    ((TariffTier(upper=None, price=D("-1")),), "negative price"),
    ((), "at least one tier"),
])
def test_invalid_tiers_are_refused_with_the_reason(tiers: tuple[TariffTier, ...],
                                                   message: str) -> None:
    bad = _tariff(1, local("2026-01-01"), "1", kind="step", tiers=tiers)
    with pytest.raises(TariffError, match=message) as info:
        TariffBook(TZ, [bad])
    assert info.value.where == "tariff T v1"


def test_cycle_start_day_must_exist_in_every_month() -> None:
    with pytest.raises(TariffError, match="1–28"):
        TariffBook(TZ, [_tariff(1, local("2026-01-01"), "1", cycle_start_day=30)])


@pytest.mark.parametrize(("kind", "month", "day", "ts", "cycle_id", "start"), [
    ("year", 1, 1, local("2026-01-01"), "2026", local("2026-01-01")),
    ("year", 1, 1, local("2025-12-31", 23, 59), "2025", local("2025-01-01")),
    ("year", 4, 15, local("2026-04-14"), "2025-04-15", local("2025-04-15")),
    ("month", 1, 1, local("2026-02-28"), "2026-02", local("2026-02-01")),
    ("month", 1, 10, local("2026-01-05"), "2025-12-10", local("2025-12-10")),
])
def test_cycles_start_at_local_midnight(kind: str, month: int, day: int, ts: datetime,
                                        cycle_id: str, start: datetime) -> None:
    cycle = CycleRule(kind, month, day, TZ).cycle_at(ts)  # type: ignore[arg-type]
    assert cycle.cycle_id == cycle_id
    assert cycle.start == start
    assert cycle.start.astimezone(UTC).hour == 16  # local midnight in Asia/Shanghai
