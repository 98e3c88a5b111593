"""Fixed-point values and the proration of consumption into UTC hours."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from vee._num import dec, prorate_hours, to_micro


def test_micro_round_trip_and_half_up() -> None:
    assert to_micro(Decimal("12345.678")) == 12_345_678_000
    assert to_micro(Decimal("0.0000005")) == 1
    assert to_micro(Decimal("-0.0000005")) == -1
    assert dec(12_345_678_000, 3) == Decimal("12345.678")
    assert dec(1_500, 3) == Decimal("0.002")  # half-up
    assert dec(-1_500, 3) == Decimal("-0.002")


def test_a_day_read_is_spread_over_24_hours() -> None:
    pieces = prorate_hours(0, 86400, 2_400_000)
    assert len(pieces) == 24
    assert {v for _, _, v in pieces} == {100_000}


def test_partial_hours_are_clipped() -> None:
    pieces = prorate_hours(1800, 9000, 4_000_000)  # 00:30 to 02:30
    assert [(a, b) for a, b, _ in pieces] == [(1800, 3600), (3600, 7200), (7200, 9000)]
    assert [v for _, _, v in pieces] == [1_000_000, 2_000_000, 1_000_000]


@given(st.integers(0, 10**9), st.integers(1, 10 * 86400), st.integers(-10**12, 10**12))
def test_pieces_always_sum_to_the_volume(start: int, span: int, volume: int) -> None:
    pieces = prorate_hours(start, start + span, volume)
    assert sum(v for _, _, v in pieces) == volume
    assert pieces[0][0] == start
    assert pieces[-1][1] == start + span
    assert all(a // 3600 == (b - 1) // 3600 for a, b, _ in pieces)
