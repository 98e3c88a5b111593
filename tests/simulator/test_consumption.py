"""Consumption shapes: seasons, days, weekdays, determinism, register display."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from simulator.consumption import PROFILES, MeterConsumption, profile_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _meter(kind: str, medium: str, seed: int = 7, **kw: object) -> MeterConsumption:
    return MeterConsumption(profile_for(kind, medium), seed=seed, start=T0, **kw)  # type: ignore[arg-type]


def _month(m: MeterConsumption, month: int) -> float:
    start = datetime(2026, month, 1, tzinfo=UTC)
    end = datetime(2026, month + 1, 1, tzinfo=UTC)
    m.advance(start)
    return m.advance(end)


def test_every_shape_averages_one() -> None:
    for p in PROFILES.values():
        assert sum(p.daily) / 24 == pytest.approx(1.0)
        assert sum(p.weekly) / 7 == pytest.approx(1.0)


def test_residential_gas_is_a_winter_load_and_water_a_summer_one() -> None:
    gas, water = _meter("residential", "gas"), _meter("residential", "water")
    gas = _meter("residential", "gas")
    jan = _month(gas, 1)
    gas = _meter("residential", "gas")
    jul = _month(gas, 7)
    assert jan > 2.5 * jul
    wjan = _month(_meter("residential", "water"), 1)
    wjul = _month(water, 7)
    assert wjul > wjan


def test_daily_peaks_and_weekends() -> None:
    home = _meter("residential", "gas")
    # dinner (19:00 Shanghai = 11:00 UTC) is far above 03:00 local (19:00 UTC previous day)
    assert home.rate(datetime(2026, 3, 4, 11, tzinfo=UTC)) > 5 * home.rate(
        datetime(2026, 3, 3, 19, tzinfo=UTC))
    shop = _meter("commercial", "electricity")
    weekday_noon = datetime(2026, 3, 4, 4, tzinfo=UTC)  # Wednesday 12:00 local
    sunday_noon = datetime(2026, 3, 8, 4, tzinfo=UTC)
    assert shop.rate(weekday_noon) > 3 * shop.rate(sunday_noon)
    plant = _meter("industrial", "electricity")
    assert plant.rate(weekday_noon) < 1.5 * plant.rate(datetime(2026, 3, 4, 19, tzinfo=UTC))


def test_register_is_independent_of_how_it_is_advanced() -> None:
    a, b = _meter("residential", "gas", seed=3), _meter("residential", "gas", seed=3)
    end = T0 + timedelta(days=3, minutes=17)
    a.advance(end)
    t = T0
    while t < end:
        t = min(end, t + timedelta(minutes=13))
        b.advance(t)
    assert a.total == pytest.approx(b.total, rel=1e-12)
    assert _meter("residential", "gas", seed=4).advance(end) != pytest.approx(a.total)


def test_register_display_truncates_and_rolls_over() -> None:
    m = _meter("industrial", "gas", initial=999_999.987, digits=6, decimals=2)
    assert m.register_value() == Decimal("999999.98")
    m.advance(T0 + timedelta(hours=2))
    assert m.total > 1_000_000
    assert m.register_value() < Decimal("1000")  # wrapped to zero and counting again
    m.add_offset(-10 ** 9)
    assert m.total == 0.0


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="residential/gas"):
        profile_for("hospital", "gas")
