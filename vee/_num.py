"""Exact fixed-point arithmetic and epoch times for the engine's hot path.

Register values are exact decimals (a BCD register of 12345.678 m³ is exactly that). The
engine works on integers of micro-units (value × 10⁶) — exact for every register with up to
six decimals, and an order of magnitude faster than ``Decimal`` arithmetic — and on UTC
epoch seconds. Conversions back to ``Decimal`` and ``datetime`` happen only when a message
is built; hour boundaries repeat, so their ``datetime`` objects are cached.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

__all__ = ["MICRO", "dec", "dt", "epoch", "prorate_hours", "to_micro"]

MICRO = 1_000_000
_SCALE = Decimal(MICRO)
_POW10 = tuple(10 ** n for n in range(7))


def to_micro(value: Decimal) -> int:
    """``Decimal('12.5')`` -> ``12500000`` (half-up beyond six decimals)."""
    scaled = value * _SCALE
    whole = int(scaled)
    if scaled == whole:
        return whole
    return int(scaled.to_integral_value(ROUND_HALF_UP))


def dec(micro: int, places: int = 3) -> Decimal:
    """Micro-units back to a ``Decimal`` with ``places`` decimals (half-up, away from 0)."""
    factor = _POW10[6 - places]
    if factor == 1:
        return Decimal(micro).scaleb(-6)
    q = (micro + factor // 2) // factor if micro >= 0 else -((-micro + factor // 2) // factor)
    return Decimal(q).scaleb(-places)


def epoch(value: datetime) -> int:
    """A timezone-aware datetime as whole UTC epoch seconds."""
    return int(value.timestamp())


@lru_cache(maxsize=131072)
def dt(seconds: int) -> datetime:
    """UTC epoch seconds as an aware datetime (cached: hour boundaries repeat)."""
    return datetime.fromtimestamp(seconds, UTC)


def prorate_hours(start: int, end: int, volume: int) -> list[tuple[int, int, int]]:
    """Split ``volume`` (micro-units) consumed over ``[start, end)`` into UTC-hour pieces.

    Each piece is ``(piece_start, piece_end, micro)``, clipped to one UTC hour, with a share
    proportional to its duration; shares are rounded by largest remainder so they sum to
    ``volume`` exactly. An empty or reversed span gives one zero-length piece at ``end``
    carrying the whole volume, so nothing is ever lost.
    """
    if end <= start:
        return [(end, end, volume)]
    first_hour_end = (start // 3600 + 1) * 3600
    if end <= first_hour_end:
        return [(start, end, volume)]
    span = end - start
    bounds = [start]
    edge = first_hour_end
    while edge < end:
        bounds.append(edge)
        edge += 3600
    bounds.append(end)
    pieces = []
    allotted = 0
    remainders = []
    sign = -1 if volume < 0 else 1
    magnitude = volume * sign
    for i in range(len(bounds) - 1):
        share, rem = divmod(magnitude * (bounds[i + 1] - bounds[i]), span)
        pieces.append([bounds[i], bounds[i + 1], share])
        remainders.append((rem, i))
        allotted += share
    left = magnitude - allotted
    if left:
        remainders.sort(key=lambda r: (-r[0], r[1]))
        for _, i in remainders[:left]:
            pieces[i][2] += 1
    return [(p[0], p[1], p[2] * sign) for p in pieces]
