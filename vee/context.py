"""What a rule or an estimation method sees: the value under test in its channel, or a hole.

Strategy: one :class:`PointContext` per engine call is re-pointed at each value to check
(no allocation per rule), and exposes the facts rules share — the previous *anchor* (the
nearest earlier value that passed validation), the consumption and elapsed time since it,
daily totals and average daily use — computed lazily and cached for the call.

A :class:`Hole` is a run of values to estimate between two anchors (or after the last one).
For a cumulative register its *pieces* are the spans ``left→t1, t1→t2, …, tn→right`` (one
more than the targets when the right anchor is known, which fixes the total: the register
advance); for an interval channel there is one piece per target value.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from schemas.messages import Reading
from vee.calendar import DayCalendar
from vee.model import Channel, MeterInfo, MeterState, Point

if TYPE_CHECKING:
    from vee.groups import RuleSet

__all__ = ["Hole", "PointContext", "register_delta"]

# quality codes used on the hot path (vee.quality.QUALITY_CODES)
Q_ACTUAL, Q_VALIDATED, Q_ESTIMATED, Q_EDITED, Q_MISSING, Q_QUESTIONABLE, Q_FINAL = range(7)


def register_delta(prev: int, cur: int, meter: MeterInfo, elapsed: int, *,
                   allow_rollover: bool, tolerance: float = 0.1,
                   max_fraction: float = 0.01) -> tuple[int, bool]:
    """Consumption between two register values (micro-units) and whether it wrapped.

    A decrease is a rollover when the register can wrap there and the implied volume
    (to the maximum and on from zero) is plausible: within Qmax × elapsed hours (plus
    ``tolerance``), or — for a meter without a known Qmax — under ``max_fraction`` of the
    register range. Otherwise it is a rollback (negative consumption).
    """
    delta = cur - prev
    if delta >= 0 or not allow_rollover:
        return delta, False
    span = meter.register_range_micro()
    implied = span - prev + cur
    if implied <= 0 or prev >= span:
        return delta, False
    qmax = meter.qmax_micro()
    if qmax is not None:
        limit = qmax * max(elapsed, 1) / 3600 * (1 + tolerance)
    else:
        limit = span * max_fraction
    if implied <= limit:
        return implied, True
    return delta, False


class PointContext:
    """The value under test and its surroundings (re-pointed per value, cached per call)."""

    __slots__ = (
        "_daily",
        "_own_adu",
        "anchor",
        "calendar",
        "channel",
        "consumption",
        "elapsed",
        "i",
        "initial",
        "meter",
        "pending_rank",
        "point",
        "points",
        "reading",
        "rollover",
        "ruleset",
        "state",
        "valve_closed",
    )

    def __init__(self, meter: MeterInfo, state: MeterState, channel: Channel,
                 calendar: DayCalendar, ruleset: RuleSet) -> None:
        self.calendar = calendar
        self.ruleset = ruleset
        self.reset(meter, state, channel)

    def reset(self, meter: MeterInfo, state: MeterState, channel: Channel) -> None:
        """Point the context at another meter and channel (one context serves many calls)."""
        self.meter = meter
        self.state = state
        self.channel = channel
        self.points = channel.points
        self.reading: Reading | None = None
        self.valve_closed = state.valve == "closed"
        self.i = 0
        self.point: Point | None = None
        self.anchor: Point | None = None
        self.consumption: int | None = None
        self.elapsed = 0
        self.rollover = False
        self.initial = False
        self.pending_rank = 0
        self._daily: dict[int, int] | None = None
        self._own_adu: float | bool | None = False

    # ------------------------------------------------------------------ shared facts

    def rate_per_hour(self) -> float | None:
        """Consumption per hour of the value under test (micro-units), if known."""
        if self.consumption is None or self.elapsed <= 0:
            return None
        return self.consumption * 3600 / self.elapsed

    def previous_rate(self) -> float | None:
        """Consumption per hour of the anchor's own interval (the last valid one)."""
        a = self.anchor
        if a is None or a.consumption is None or a.start is None or a.ts <= a.start:
            return None
        return a.consumption * 3600 / (a.ts - a.start)

    def daily_totals(self) -> dict[int, int]:
        """Local day -> consumption (micro-units): closed days of the state plus the window."""
        if self._daily is None:
            totals: dict[int, int] = {}
            ch = self.channel
            first = ch.last_day - len(ch.days) + 1
            for offset, total in enumerate(ch.days):
                if total >= 0:
                    totals[first + offset] = total
            day = self.calendar.day
            for p in ch.points:
                if p.consumption is not None and p.start is not None:
                    d = day(p.ts - 1 if p.ts > p.start else p.ts)
                    totals[d] = totals.get(d, 0) + p.consumption
            self._daily = totals
        return self._daily

    def own_average_daily_use(self, min_days: int = 7) -> float | None:
        """Mean daily consumption over the channel's closed days (None with too few days)."""
        if self._own_adu is False:
            values = [v for v in self.channel.days if v >= 0]
            self._own_adu = sum(values) / len(values) if len(values) >= min_days else None
        return self._own_adu if self._own_adu is not False else None

    def group_average_daily_use(self) -> float | None:
        """The rule set's average daily use of the meter's customer group (micro-units), in
        the month of the value under test where the medium has month factors."""
        month = None
        if self.point is not None and self.ruleset.seasonal_by_medium:
            calendar = self.calendar
            month = calendar.date(calendar.day(self.point.ts)).month
        return self.ruleset.average_daily_use(self.meter.customer_type, self.meter.medium,
                                              month)

    def expected_interval(self) -> int:
        return self.channel.interval_s


class Hole:
    """A run of values to estimate, with its anchors and what methods need to fill it."""

    __slots__ = ("advance", "calendar", "channel", "ctx", "kind", "left", "meter", "right",
                 "state", "targets")

    def __init__(self, ctx: PointContext, left: Point | None, targets: list[Point],
                 right: Point | None, advance: int | None) -> None:
        self.ctx = ctx
        self.channel = ctx.channel
        self.kind = ctx.channel.kind
        self.meter = ctx.meter
        self.state = ctx.state
        self.calendar = ctx.calendar
        self.left = left
        self.targets = targets
        self.right = right
        #: Cumulative two-sided holes: the register advance from left to right (micro-units).
        self.advance = advance

    @property
    def two_sided(self) -> bool:
        return self.left is not None and self.right is not None

    def bounds(self) -> list[int]:
        """Cumulative: the piece boundaries ``[left, t1, …, tn(, right)]`` (epoch seconds)."""
        out = [self.left.ts] if self.left is not None else []
        out.extend(t.ts for t in self.targets)
        if self.right is not None:
            out.append(self.right.ts)
        return out

    def piece_spans(self) -> list[tuple[int, int]]:
        """``(start, end)`` of each piece to estimate."""
        if self.kind == "cumulative":
            b = self.bounds()
            return list(itertools.pairwise(b))
        step = self.channel.interval_s or 0
        return [(t.ts - step, t.ts) for t in self.targets]

    def gap_seconds(self) -> int:
        """How long the hole is: its values × the expected interval (time span if unknown)."""
        step = self.channel.interval_s
        if step:
            return len(self.targets) * step
        b = self.bounds()
        return b[-1] - b[0] if len(b) > 1 else 0

    def anchor_value(self, point: Point | None) -> int | None:
        return None if point is None else point.value

    def extra(self) -> dict[str, Any]:  # pragma: no cover - debugging aid
        return {"left": self.left, "targets": len(self.targets), "right": self.right}
