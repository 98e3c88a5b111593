"""Day rules in the stream: when a day (or a value's window) is judged, and on what evidence.

Strategy: a day rule (the spike check: the highest values of a day against the third
highest) is a statement about a whole day, so the engine judges a day only once it is
*over* — the channel holds a value at or after the day's end (a register read at local
midnight closes the hour before it, so it is the day's last member) — and not at every
arrival. Judging the growing day made values flip: three quiet night hours are enough for a
"spike" of a few register digits, the next hours released it again, and every morning's
first peak was estimated until the next hour made it ordinary — each flip a new version on
``readings.validated`` and a billing difference. (``scope: window`` — daily reads — judges
each value on arrival against the values before it: its evidence is complete then.)

The verdict is a function of the day's *evidence* only: the rates of what the meter sent
(raw values; edited values as edited), between the values no point rule rejected. A value
the day rule itself rejected still counts with what the meter sent, and the estimates the
verdict causes never feed back into it. So a value released as validated (or estimated
away) changes only when the evidence changes *materially*: a late value, an edit or a
re-validation changes the day's rates so that the value's relation to the day's third
highest rate crosses the tolerance. Another value becoming the day's highest does not
release a spike that is still more than the tolerance above the third highest.

So that no value goes unjudged, the window keeps a day that is still open whole (with the
value before it) beyond ``window_points`` while a day-scope rule applies to the channel, up
to :meth:`vee.engine.VeeEngine.open_day_cap`; beyond the cap the oldest values of the open
day are judged once, on the day so far, just before they leave. A day's first value whose
predecessor has left is rated against the channel's base when that was what the meter sent.

A batch run (``unimeter vee run``, ``vee revalidate``) has all its data at once: it closes
the days still open at its end with :meth:`vee.engine.VeeEngine.close`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vee.calendar import DayCalendar
from vee.context import Q_EDITED, Q_FINAL, PointContext, register_delta
from vee.model import Channel, Point

__all__ = ["WINDOW", "counts", "day_end", "day_of", "judge", "scope_of"]

#: How many values a window-scope day rule compares: the value and the 15 before it.
WINDOW = 16


def scope_of(rule: Any, ch: Channel) -> str:
    """``day`` or ``window`` for this rule on this channel (``auto``: by the interval)."""
    scope = getattr(rule.params, "scope", "day")
    if scope == "auto":
        return "window" if ch.interval_s >= 6 * 3600 else "day"
    return str(scope)


def day_of(cal: DayCalendar, ts: int) -> int:
    """The local day of the value at ``ts``: the day of the interval that ends at ``ts``
    (a read at midnight belongs to the day before)."""
    fixed = cal._fixed
    if fixed is not None:
        return (ts - 1 + fixed) // 86400
    return cal.day(ts - 1)


def day_end(cal: DayCalendar, day: int) -> int:
    """The epoch second at which local day ``day`` ends (a value there is its last)."""
    fixed = cal._fixed
    if fixed is not None:
        return (day + 1) * 86400 - fixed
    return cal.day_start(day + 1)


def counts(p: Point, day_ids: frozenset[str], flag_ranks: dict[str, int]) -> int | None:
    """The value ``p`` adds to the day's evidence, or None when it adds none (a marker, an
    estimate of one, or a value a point rule rejected)."""
    if p.quality in (Q_EDITED, Q_FINAL):
        return p.value
    if p.raw is None:
        return None
    if p.rejected:
        for flag in p.flags:
            if flag not in day_ids and flag_ranks.get(flag, 0) == 2:
                return None
        for flag in p.events:
            if flag_ranks.get(flag, 0) == 2:
                return None
    return p.raw


def _rates(ctx: PointContext, points: Sequence[Point], first: int, end: int,
           day_ids: frozenset[str], flag_ranks: dict[str, int],
           allow_rollover: bool) -> list[tuple[float, int]]:
    """``(rate, index - first)`` of each value of ``points[first:end]`` that counts: per hour
    since the previous value that counts for a register, the value itself for intervals."""
    out: list[tuple[float, int]] = []
    if ctx.channel.kind == "interval":
        for k in range(first, end):
            v = counts(points[k], day_ids, flag_ranks)
            if v is not None:
                out.append((float(v), k - first))
        return out
    # the value before: in the window, else the newest that left it (the channel's base)
    # when that was what the meter sent (not an estimate: estimated_run counts those)
    ch = ctx.channel
    prev_ts, prev_value = (ch.base_ts, ch.base_value) if not ch.estimated_run else (0, None)
    k = first - 1
    while k >= 0:
        v = counts(points[k], day_ids, flag_ranks)
        if v is not None:
            prev_ts, prev_value = points[k].ts, v
            break
        k -= 1
    for k in range(first, end):
        p = points[k]
        v = counts(p, day_ids, flag_ranks)
        if v is None:
            continue
        if prev_value is not None and p.ts > prev_ts:
            delta = v - prev_value
            if delta < 0:
                delta, _ = register_delta(prev_value, v, ctx.meter, p.ts - prev_ts,
                                          allow_rollover=allow_rollover)
            out.append((delta * 3600 / (p.ts - prev_ts), k - first))
        prev_ts, prev_value = p.ts, v
    return out


def judge(rule: Any, ctx: PointContext, points: list[Point], first: int, end: int,
          day_ids: frozenset[str], flag_ranks: dict[str, int],
          allow_rollover: bool) -> set[int]:
    """The indexes in ``points[first:end]`` the day rule flags, judged on their evidence."""
    rates = _rates(ctx, points, first, end, day_ids, flag_ranks, allow_rollover)
    if len(rates) < 3:
        return set()
    members = points[first:end]
    fired = rule.check_day(ctx, members, rates)
    if not fired:
        return set()
    ids = {id(p) for p in fired}
    return {first + n for n, p in enumerate(members) if id(p) in ids}
