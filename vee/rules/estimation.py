"""Estimation methods, tried in the order an estimation group lists them.

Each returns one consumption per piece of the hole (micro-units; see
:class:`vee.context.Hole`) or None when it does not apply. For a cumulative register with a
value after the hole, the engine then scales the pieces so they add up to the register
advance — the register is the truth, a method only gives the *shape* (flag
``scaled_to_register`` when that changed them by more than 0.1 %).

An estimate never replaces an actual, edited or final value: only values that failed
validation and markers of expected values that never arrived are estimated.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vee.context import Q_ESTIMATED, Hole
from vee.registry import Duration, EstimationMethod, MethodParams, register

__all__ = ["AverageDaily", "Flat", "LikeDay", "Linear", "ScaledToRegister", "Zero",
           "scale_to_total"]


def scale_to_total(pieces: list[int], total: int, weights: list[int]) -> list[int]:
    """Scale ``pieces`` to sum to ``total`` exactly (largest remainder); all-zero pieces are
    spread by ``weights`` (their durations) instead."""
    base = sum(pieces)
    if base <= 0:
        pieces, base = list(weights), sum(weights)
        if base <= 0:
            pieces, base = [1] * len(pieces), len(pieces)
    out, remainders, allotted = [], [], 0
    for n, piece in enumerate(pieces):
        share, rem = divmod(abs(total) * piece, base)
        out.append(share)
        remainders.append((rem, n))
        allotted += share
    left = abs(total) - allotted
    if left:
        for _, n in sorted(remainders, key=lambda r: (-r[0], r[1]))[:left]:
            out[n] += 1
    return out if total >= 0 else [-v for v in out]


class LinearParams(MethodParams):
    #: Longest hole filled by interpolation (missing values × interval).
    max_gap: Duration = 7200


@register
class Linear(EstimationMethod):
    """Linear interpolation between the valid values around a short hole (California: 2 h,
    Ontario wholesale: 1 h). For a register, a constant rate over the hole."""

    id = "linear"
    Params = LinearParams
    two_sided = True
    relative_shape = True
    params: LinearParams

    def estimate(self, hole: Hole) -> list[int] | None:
        if not hole.two_sided or hole.gap_seconds() > self.params.max_gap:
            return None
        left, right = hole.left, hole.right
        assert left is not None
        assert right is not None
        if hole.kind == "cumulative":
            return [end - start for start, end in hole.piece_spans()]
        if left.value is None or right.value is None or right.ts <= left.ts:
            return None
        span = right.ts - left.ts
        return [left.value + (right.value - left.value) * (t.ts - left.ts) // span
                for t in hole.targets]


class FlatParams(MethodParams):
    #: Longest hole filled flat.
    max_gap: Duration = 86400 * 7


@register
class Flat(EstimationMethod):
    """Flat fill of a one-sided hole: the rate of the last valid interval carries on (a
    register), or the nearest valid value is repeated (interval data)."""

    id = "flat"
    Params = FlatParams
    params: FlatParams

    def estimate(self, hole: Hole) -> list[int] | None:
        if hole.gap_seconds() > self.params.max_gap:
            return None
        left = hole.left
        if hole.kind == "cumulative":
            if left is None or left.consumption is None or left.start is None:
                return None
            duration = left.ts - left.start
            if duration <= 0 or left.consumption < 0:
                return None
            return [left.consumption * (end - start) // duration
                    for start, end in hole.piece_spans()]
        source = left if left is not None and left.value is not None else hole.right
        if source is None or source.value is None:
            return None
        return [source.value] * len(hole.targets)


class LikeDayParams(MethodParams):
    #: How many like days are averaged.
    days: int = Field(default=3, ge=1, le=10)
    #: How far back (and, in batch runs, forward) to look for like days.
    search_days: int = Field(default=28, ge=1, le=400)


@register
class LikeDay(EstimationMethod):
    """The average of the nearest days of the same type (weekday / weekend / holiday) that
    hold only valid actual data — interval by interval for interval data, day totals for a
    register (then scaled to its advance)."""

    id = "like_day"
    Params = LikeDayParams
    params: LikeDayParams

    def _like_days(self, hole: Hole, day: int, usable: set[int]) -> list[int]:
        kind = hole.calendar.day_type(day)
        found: list[int] = []
        for distance in range(1, self.params.search_days + 1):
            for candidate in (day - distance, day + distance):
                if candidate in usable and hole.calendar.day_type(candidate) == kind:
                    found.append(candidate)
                    if len(found) == self.params.days:
                        return found
        return found

    def estimate(self, hole: Hole) -> list[int] | None:
        if hole.kind == "cumulative":
            return self._register(hole)
        return self._intervals(hole)

    def _register(self, hole: Hole) -> list[int] | None:
        totals = hole.ctx.daily_totals()
        cal = hole.calendar
        bad = _bad_days(hole)
        usable = {d for d, v in totals.items() if d not in bad}
        pieces = []
        for start, end in hole.piece_spans():
            piece = 0
            day = cal.day(start)
            while True:
                day_start, day_end = cal.day_start(day), cal.day_start(day + 1)
                overlap = min(end, day_end) - max(start, day_start)
                if overlap > 0:
                    like = self._like_days(hole, day, usable - {day})
                    if len(like) < self.params.days:
                        return None
                    mean = sum(totals[d] for d in like) // len(like)
                    piece += mean * overlap // (day_end - day_start)
                if day_end >= end:
                    break
                day += 1
            pieces.append(piece)
        return pieces

    def _intervals(self, hole: Hole) -> list[int] | None:
        cal = hole.calendar
        by_ts = {p.ts: p for p in hole.channel.points}
        values = []
        for target in hole.targets:
            day = cal.day(target.ts)
            offset = target.ts - cal.day_start(day)
            candidates: set[int] = set()
            for d in range(day - self.params.search_days, day + self.params.search_days + 1):
                p = by_ts.get(cal.day_start(d) + offset)
                if (d != day and p is not None and p.value is not None and p.raw is not None
                        and p.quality != Q_ESTIMATED and "power_fail" not in p.events):
                    candidates.add(d)
            like = self._like_days(hole, day, candidates)
            if len(like) < self.params.days:
                return None
            values.append(sum(by_ts[cal.day_start(d) + offset].value or 0 for d in like)
                          // len(like))
        return values


def _bad_days(hole: Hole) -> set[int]:
    """Days not usable as like days: closed days marked so, and days holding estimates or
    power failures in the window."""
    ch = hole.channel
    first = ch.last_day - len(ch.days) + 1
    bad = {first + n for n in range(len(ch.days)) if ch.bad_days >> n & 1}
    day = hole.calendar.day
    for p in ch.points:
        if p.quality == Q_ESTIMATED or p.raw is None or "power_fail" in p.events:
            bad.add(day(p.ts - 1))
    for t in hole.targets:
        bad.add(day(t.ts - 1))
    return bad


class AverageDailyParams(MethodParams):
    #: Where the average daily use comes from.
    source: Literal["own_then_group", "own", "group"] = "own_then_group"
    #: Closed days of own history needed before the meter's own average is used.
    min_days: int = Field(default=7, ge=1, le=400)


@register
class AverageDaily(EstimationMethod):
    """Average daily use spread flat: the meter's own (closed days of its history) or its
    customer group's (``history.average_daily_use`` of the rule set)."""

    id = "average_daily"
    aliases = ("average_daily_use", "adu")
    Params = AverageDailyParams
    params: AverageDailyParams

    def estimate(self, hole: Hole) -> list[int] | None:
        adu = None
        if self.params.source in ("own_then_group", "own"):
            adu = hole.ctx.own_average_daily_use(self.params.min_days)
        if adu is None and self.params.source in ("own_then_group", "group"):
            adu = hole.ctx.group_average_daily_use()
        if adu is None:
            return None
        return [int(adu * (end - start) / 86400) for start, end in hole.piece_spans()]


@register
class ScaledToRegister(EstimationMethod):
    """Scaling to a register: estimated values are multiplied so the total equals the
    register advance (all zero: spread equally over time). Listed in a group it (1) fills a
    register hole by spreading its advance over time when no earlier method applied, and
    (2) scales an interval channel's estimates to the meter's register channel."""

    id = "scaled_to_register"
    aliases = ("scaling",)
    kinds = frozenset({"cumulative"})
    two_sided = True
    relative_shape = True

    def estimate(self, hole: Hole) -> list[int] | None:
        if not hole.two_sided or hole.advance is None:
            return None
        return [end - start for start, end in hole.piece_spans()]


@register
class Zero(EstimationMethod):
    """Zero fill while the valve is closed (a known disconnection)."""

    id = "zero"
    aliases = ("zero_fill",)

    def estimate(self, hole: Hole) -> list[int] | None:
        left = hole.left
        closed = hole.state.valve == "closed" or (
            left is not None and "valve_closed" in left.events)
        if not closed:
            return None
        if hole.kind == "cumulative" and hole.advance is not None and hole.advance > 0:
            return None  # the register moved: it was not closed all along
        n = len(hole.piece_spans())
        return [0] * n

