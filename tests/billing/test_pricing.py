"""Pricing: the worked examples of the reference, to the cent, and the splitting rules."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import timedelta
from decimal import Decimal

import pytest

from billing.errors import NoPriceError, TariffError
from billing.pricing import Piece, Pricer, PricingResult
from tests.billing.helpers import D, book, local


def _price(tariff_id: str, pieces: list[Piece], positions: dict[str, Decimal] | None = None,
           override: dict[str, Decimal] | None = None, files: tuple[str, ...] = (
               "beijing_gas.yaml",)) -> tuple[Decimal, list[tuple[int, str, str, str]],
                                              dict[str, Decimal]]:
    positions = {} if positions is None else positions
    result = Pricer(book(*files)).price(tariff_id, pieces, positions, override)
    rows = [(s.tier, str(s.volume), str(s.unit_price), str(s.amount)) for s in result.segments]
    assert result.amount == sum(s.amount for s in result.segments)
    return result.amount, rows, positions


def test_year_with_620_m3_is_1845_60() -> None:
    piece = Piece(local("2020-01-01"), local("2021-01-01"), D("620"))
    amount, rows, positions = _price("BJ-GAS-RES", [piece])
    assert amount == D("1845.60")
    assert rows == [(1, "350", "2.61", "913.50"), (2, "150", "2.83", "424.50"),
                    (3, "120", "4.23", "507.60")]
    assert positions == {"2020": D("620")}


def test_tier_crossing_inside_one_reading_cycle_at_330_month_60_is_165_40() -> None:
    piece = Piece(local("2020-05-01"), local("2020-06-01"), D("60"))
    amount, rows, positions = _price("BJ-GAS-RES", [piece], {"2020": D("330")})
    assert amount == D("165.40")
    assert rows == [(1, "20", "2.61", "52.20"), (2, "40", "2.83", "113.20")]
    assert positions["2020"] == D("390")


def test_half_up_per_segment_not_binary_floats() -> None:
    amount, _rows, _ = _price("BJ-GAS-RES", [Piece(local("2020-05-01"), local("2020-05-02"),
                                                  D("5"))])
    assert amount == D("13.05")  # 5 * 2.61 in binary floats rounds to 13.04


def test_price_change_mid_period_is_prorated_by_days() -> None:
    # 25 June – 24 July 2018, 30 m³, only two register reads; 2.28 → 2.63 on 10 July.
    piece = Piece(local("2018-06-25"), local("2018-07-25"), D("30"))
    amount, rows, positions = _price("BJ-GAS-RES", [piece])
    assert rows == [(1, "15.000", "2.28", "34.20"), (1, "15.000", "2.63", "39.45")]
    assert amount == D("73.65")
    assert positions["2018"] == D("30")


def test_price_change_mid_period_with_daily_reads_prices_each_day() -> None:
    before = Piece(local("2018-06-25"), local("2018-07-10"), D("12"))
    after = Piece(local("2018-07-10"), local("2018-07-25"), D("18"))
    amount, _, _ = _price("BJ-GAS-RES", [before, after])
    assert amount == D("74.70")


def test_tier_position_keeps_accumulating_across_a_price_change() -> None:
    # 340 m³ used under the old price; 20 m³ after the rise: 10 in tier 1, 10 in tier 2,
    # both at the new version's prices.
    piece = Piece(local("2018-07-10"), local("2018-07-20"), D("20"))
    amount, rows, positions = _price("BJ-GAS-RES", [piece], {"2018": D("340")})
    assert rows == [(1, "10", "2.63", "26.30"), (2, "10", "2.85", "28.50")]
    assert amount == D("54.80")
    assert positions["2018"] == D("360")


def test_cycle_reset_at_new_year() -> None:
    # 9 days in 2020 at tier 3 (the year is past 500 m³), 10 days in 2021 from tier 1 again.
    piece = Piece(local("2020-12-23"), local("2021-01-11"), D("19"))
    amount, rows, positions = _price("BJ-GAS-RES", [piece], {"2020": D("600")})
    assert rows == [(3, "9.000", "4.23", "38.07"), (1, "10.000", "2.61", "26.10")]
    assert positions == {"2020": D("609"), "2021": D("10")}
    assert amount == D("64.17")


def test_tier_override_for_a_large_household() -> None:
    piece = Piece(local("2020-01-01"), local("2021-01-01"), D("460"))
    _amount, rows, _ = _price("BJ-GAS-RES", [piece], override={"1": D("450")})
    assert rows == [(1, "450", "2.61", "1174.50"), (2, "10", "2.83", "28.30")]


def test_bad_tier_override_is_a_tariff_error() -> None:
    piece = Piece(local("2020-01-01"), local("2021-01-01"), D("460"))
    with pytest.raises(TariffError, match="not above"):
        _price("BJ-GAS-RES", [piece], override={"1": D("600")})


def test_heating_households_have_wider_tiers() -> None:
    _amount, rows, _ = _price("BJ-GAS-HEAT", [Piece(local("2020-01-01"), local("2021-01-01"),
                                                   D("1600"))])
    assert rows == [(1, "1500", "2.61", "3915.00"), (2, "100", "2.83", "283.00")]


@pytest.mark.parametrize(("volume", "expected"), [("200", "1040.00"), ("300", "1820.00")])
def test_beijing_water_per_year(volume: str, expected: str) -> None:
    result = Pricer(book("beijing_water.yaml")).price(
        "BJ-WATER-RES", [Piece(local("2020-01-01"), local("2021-01-01"), D(volume))], {})
    assert result.amount == D(expected)
    # Each tier is split into the parties' components, which sum to the tier price.
    components = {s.component for s in result.segments}
    assert components == {"tap_water", "water_resource_fee", "sewage_fee"}
    tier1 = {s.component: s.amount for s in result.segments if s.tier == 1}
    assert tier1 == {"tap_water": D("372.60"), "water_resource_fee": D("282.60"),
                     "sewage_fee": D("244.80")}


def test_a_correction_takes_volume_off_the_top() -> None:
    # cycle at 360 (10 m³ into tier 2); removing 15 m³ credits 10 at tier 2 and 5 at tier 1
    piece = Piece(local("2020-05-01"), local("2020-05-02"), D("-15"))
    amount, rows, positions = _price("BJ-GAS-RES", [piece], {"2020": D("360")})
    assert sorted(rows) == [(1, "-5", "2.61", "-13.05"), (2, "-10", "2.83", "-28.30")]
    assert amount == D("-41.35")
    assert positions["2020"] == D("345")


def test_prorated_parts_always_sum_to_the_volume() -> None:
    # 10 m³ over three unequal parts of a period crossing a price change and a new year.
    piece = Piece(local("2018-07-03", 7), local("2018-07-17", 19), D("10.001"))
    result = Pricer(book("beijing_gas.yaml")).price("BJ-GAS-RES", [piece], {})
    assert sum(s.volume for s in result.segments) == D("10.001")


# ---------------------------------------------------------------- time of use


def test_tou_prices_each_interval_by_its_local_period() -> None:
    # Friday 10 July 2026: 07:00-08:00 valley, 10:00-11:00 peak, 11:00-12:00 summer peak.
    start = local("2026-07-10", 7)
    pieces = [Piece(start + timedelta(hours=h), start + timedelta(hours=h + 1), D("1"))
              for h in (0, 3, 4)]
    amount, rows, _ = _price("ELEC-TOU", pieces, files=("tou_electricity.yaml",))
    assert sorted(rows) == sorted([
        (1, "1", "0.3583", "0.36"), (1, "1", "0.5583", "0.56"),   # valley, peak
        (1, "1", "0.5583", "0.56"), (1, "1", "0.15", "0.15")])    # summer peak components
    assert amount == D("1.63")


def test_tou_register_read_without_intervals_is_prorated_over_periods() -> None:
    # Saturday 11 July 2026 06:00-10:00: 2 h valley + 2 h peak, 8 kWh.
    piece = Piece(local("2026-07-11", 6), local("2026-07-11", 10), D("8"))
    result = Pricer(book("tou_electricity.yaml")).price("ELEC-TOU", [piece], {})
    by_period = {s.period: (s.volume, s.amount) for s in result.segments}
    assert by_period == {"valley": (D("4.000"), D("1.43")), "peak": (D("4.000"), D("2.23"))}


def test_tou_step_adders_apply_above_the_monthly_tier() -> None:
    piece = Piece(local("2026-03-02", 9), local("2026-03-02", 10), D("20"))
    _amount, rows, _ = _price("ELEC-TOU", [piece], {"2026-03": D("230")},
                             files=("tou_electricity.yaml",))
    assert rows == [(1, "10", "0.5583", "5.58"), (2, "10", "0.6083", "6.08")]


def test_tou_schedule_with_a_gap_is_refused_when_loaded() -> None:
    from billing.tariffs import TariffVersion
    from schemas.messages import LedgerTariff
    message = LedgerTariff(tariff_id="T", version=1, kind="tou", effective_from=local(
        "2026-01-01"), updated_at=local("2026-01-01"), tou={
        "periods": {"peak": "1"}, "schedule": [{"from": "08:00", "to": "22:00",
                                               "period": "peak"}]})
    with pytest.raises(TariffError, match="no period covers 00:00–08:00"):
        TariffVersion.compile(message, book().tz)


# ---------------------------------------------------------------- real time


def test_realtime_prices_each_hour_from_the_feed() -> None:
    start = local("2026-07-10")
    pieces = [Piece(start + timedelta(hours=h), start + timedelta(hours=h + 1), D("2"))
              for h in range(3)]
    amount, rows, _ = _price("RT-ELEC", pieces, files=("realtime.yaml",))
    assert [r[2] for r in rows] == ["0.31", "0.29", "0.27"]
    assert amount == D("1.74")


def test_realtime_without_a_price_is_refused_with_the_interval() -> None:
    piece = Piece(local("2026-07-10", 5), local("2026-07-10", 6), D("1"))
    with pytest.raises(NoPriceError, match=r"2026-07-10T05:00:00\+08:00"):
        _price("RT-ELEC", [piece], files=("realtime.yaml",))


def test_realtime_fallback_price_fills_missing_intervals() -> None:
    piece = Piece(local("2026-07-11", 0), local("2026-07-11", 2), D("4"))
    _, rows, _ = _price("RT-ELEC", [piece], files=("realtime.yaml",))
    assert [(r[1], r[2]) for r in rows] == [("2.000", "0.33"), ("2.000", "0.50")]


class _GeneralOnly(Pricer):
    """The general splitter alone: the short path declines every piece."""

    def _price_simple(self, tariff_id: str, piece: Piece, positions: MutableMapping[str, Decimal],
                      override: dict[str, Decimal] | None) -> PricingResult | None:
        return None


@pytest.mark.parametrize("tariff_id", ["BJ-GAS-RES", "BJ-WATER-RES"])
def test_short_path_prices_exactly_as_the_general_splitter(tariff_id: str) -> None:
    tariffs = book("beijing_gas.yaml", "beijing_water.yaml")
    short, general = Pricer(tariffs), _GeneralOnly(tariffs)
    for day in ("2018-07-09", "2020-05-01", "2020-12-31"):
        piece_start = local(day)
        for position in ("0", "179.999", "180", "349.995", "350", "499.5", "620"):
            for volume in ("0.001", "1.005", "150.5", "400"):
                for override in (None, {"1": D("200")}):
                    piece = Piece(piece_start, piece_start + timedelta(days=1), D(volume))
                    cycle = {str(piece_start.astimezone(book().tz).year): D(position)}
                    a_positions, b_positions = dict(cycle), dict(cycle)
                    assert short._price_simple(tariff_id, piece, dict(cycle), override)
                    a = short.price(tariff_id, [piece], a_positions, override)
                    b = general.price(tariff_id, [piece], b_positions, override)
                    assert (a.segments, a.amount, a.volume, a.cycle_id, a.cycle_volume_after,
                            a.tariff_version) == (b.segments, b.amount, b.volume, b.cycle_id,
                                                  b.cycle_volume_after, b.tariff_version)
                    assert a_positions == b_positions
