"""The VEE engine: one reading (or edit) in, new versions of validated readings out.

Strategy: the engine is a pure function of (reading, meter, state). It places the reading
in its channel's window of recent values — appended in the common case, inserted for a late
one, or merged with a value of the same time (a duplicate is dropped; a marker of a missing
value is replaced by the actual) — and then re-derives the part of the window the reading
can change, in four passes:

A. *validate* each value from the reading on against its *anchor* (the nearest earlier
   value that passed): the rules of the meter's group run in their order; the worst action
   of the rules that fired (flag < questionable < estimate) decides what happens;
B. *estimate* each hole — a run of rejected values and markers of missing ones between two
   anchors — with the estimation group's methods in order; a register's estimates are
   scaled to its advance;
C. *derive* consumption (rollover-aware) and its UTC-hour pieces from each value and the
   one before it;
D. judge the *day rules* (spike) over the closed days that changed — a day is judged once
   it is over, on the rates of what the meter sent (:mod:`vee._day_rules`) — and repeat
   B–C if they rejected or released a value.

Every value whose result differs from what was last emitted gets the next version and is
emitted; nothing else is. The result depends only on the input and the state — "now" is
the reading's ``received_at`` — so re-processing after a restart gives the same messages.

Values older than the window (``ts`` at or before the channel's *horizon*) are not
re-validated in the stream: the engine raises a ``vee.late_beyond_window`` alert and
``unimeter vee revalidate`` re-validates them over stored data.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

import msgspec

from schemas.messages import (
    Alert,
    CommandRequest,
    Dimensions,
    EditInfo,
    IntervalConsumption,
    Reading,
    ReadingEdit,
    ValidatedReading,
)
from vee._day_rules import WINDOW, counts, day_end, day_of, judge, scope_of
from vee._num import dec, dt, epoch, prorate_hours, to_micro
from vee.context import (
    Q_ACTUAL,
    Q_EDITED,
    Q_ESTIMATED,
    Q_FINAL,
    Q_MISSING,
    Q_QUESTIONABLE,
    Q_VALIDATED,
    Hole,
    PointContext,
    register_delta,
)
from vee.groups import CompiledGroup, GroupSet, RuleSet
from vee.model import Channel, EditNote, MeterInfo, MeterState, Point
from vee.quality import METHOD_CODES, METHOD_NAMES, QUALITY_NAMES, event_flags_from_status
from vee.rules.estimation import scale_to_total

__all__ = ["OPEN_DAY_LIMIT", "StepResult", "VeeEngine"]

_CONSUMING = ("cumulative", "interval")
_POW10 = tuple(10 ** n for n in range(7))
#: Meters whose groups and dimensions the engine keeps at hand (then it starts over).
_METER_CACHE = 65536
#: The most values of one channel the engine holds while their day is still open (a
#: day-scope rule has not judged them): one day of 5-minute values fits. Beyond the cap
#: (:meth:`VeeEngine.open_day_cap`) the oldest are judged on the day so far, then leave.
OPEN_DAY_LIMIT = 400
_HISTORY_SOURCES = ("history", "meter_history", "read_history")
_COMMAND_NS = uuid.UUID("6f1c3a52-5d0e-4c33-9a56-0e1f3f7c2b10")
_SEVERITY_BY_RULE = {
    "tamper": "major", "reverse_flow": "warning", "valve_consistency": "major",
    "zero_consumption": "warning", "inactive_device": "warning",
    "prolonged_estimation": "warning", "duplicate": "warning", "leak": "major",
    "device_error": "warning", "max_flow": "warning", "sum_check": "warning",
}


@dataclass
class StepResult:
    """What one engine call produced. ``state`` is the meter's new state (write it back)."""

    outputs: list[ValidatedReading] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    commands: list[CommandRequest] = field(default_factory=list)
    state: MeterState = field(default_factory=MeterState)
    #: Why the input produced nothing: ``duplicate`` or ``late``.
    dropped: str | None = None


class VeeEngine:
    """Validation, estimation and editing over per-meter state (pure: no I/O)."""

    def __init__(self, ruleset: RuleSet, *, window_points: int | None = None,
                 window_s: int = 7 * 86400, history_days: int | None = None,
                 producer: str = "vee", alerts: bool = True,
                 open_day_limit: int = OPEN_DAY_LIMIT) -> None:
        self.ruleset = ruleset
        self.calendar = ruleset.calendar
        self.window_points = window_points or ruleset.window_points
        self.window_s = window_s
        self.history_days = ruleset.history_days if history_days is None else history_days
        self.producer = producer
        self.raise_alerts = alerts
        self.open_day_limit = max(open_day_limit, 3)
        #: open_day_cap is never below this (a cheap test before computing it)
        self._cap_floor = min(4 * self.window_points, self.open_day_limit)
        self._uses_history_classes = ruleset.uses_history_classes
        self._ctx: PointContext | None = None
        self._by_meter: dict[str, tuple[MeterInfo, Dimensions, GroupSet, Dimensions]] = {}

    def open_day_cap(self, interval_s: int) -> int:
        """How many values of a channel with this interval the window may hold while a
        day-scope rule waits for their day to be over: the larger of 4 × ``window_points``
        and one local day of values (+ the value before the day, + one for a 25-hour day),
        never more than ``open_day_limit``."""
        day = 86400 // interval_s + 2 if interval_s > 0 else 0
        return min(max(4 * self.window_points, day), self.open_day_limit)

    def _context(self, meter: MeterInfo, state: MeterState, ch: Channel) -> PointContext:
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = PointContext(meter, state, ch, self.calendar, self.ruleset)
        else:
            ctx.reset(meter, state, ch)
        return ctx

    # ------------------------------------------------------------------ groups

    def groups_for(self, meter: MeterInfo, state: MeterState | None = None) -> GroupSet:
        history_class = None
        if self._uses_history_classes and state is not None:
            for ch in state.channels.values():
                values = [v for v in ch.days if v >= 0]
                if values:
                    history_class = self.ruleset.history_class(sum(values) / len(values),
                                                               meter.medium)
                    break
        return self.ruleset.resolve(meter, history_class)

    def _groups_and_dims(self, meter: MeterInfo, state: MeterState,
                         dims: Dimensions | None) -> tuple[GroupSet, Dimensions]:
        """The meter's groups and its dimensions with the validation group applied, cached
        per meter while the same ``MeterInfo`` (and dimensions) come back."""
        base = dims or meter.dims
        if self._uses_history_classes:
            groups = self.groups_for(meter, state)
            return groups, _with_group(base, groups.validation.id)
        cache = self._by_meter
        held = cache.get(meter.meter_id)
        if held is not None and held[0] is meter and held[1] is base:
            return held[2], held[3]
        groups = self.ruleset.resolve(meter, None)
        out = _with_group(base, groups.validation.id)
        if len(cache) >= _METER_CACHE:
            cache.clear()
        cache[meter.meter_id] = (meter, base, groups, out)
        return groups, out

    # ------------------------------------------------------------------ readings

    def process(self, reading: Reading, meter: MeterInfo, state: MeterState | None = None, *,
                dims: Dimensions | None = None, initial_load: bool = False) -> StepResult:
        """Validate one reading; returns the new versions, alerts, commands and new state."""
        state = state if state is not None else MeterState()
        result = StepResult(state=state)
        ch = state.channels.get(reading.register)
        if ch is None:
            kind = reading.kind if reading.kind in _CONSUMING else "instantaneous"
            ch = Channel(register=reading.register, unit=reading.unit, kind=kind,
                         interval_s=reading.interval_s or 0,
                         places=max(meter.register_decimals, 0))
            state.channels[reading.register] = ch
        ts = int(reading.ts.timestamp())
        raw = to_micro(reading.value)
        received = int(reading.received_at.timestamp())
        if raw % _POW10[6 - ch.places]:
            exponent = reading.value.as_tuple().exponent
            if isinstance(exponent, int) and -exponent > ch.places:
                ch.places = min(-exponent, 6)
        if reading.interval_s and ch.kind == "interval" and not ch.interval_s:
            ch.interval_s = reading.interval_s
        events: tuple[str, ...] = ()
        if reading.status:
            events = event_flags_from_status(reading.status)
            if "valve_closed" in events:
                state.valve = "closed"
            elif any(t.lower() in ("valve_state:open", "valve:open", "valve_open")
                     for t in reading.status):
                state.valve = "open"
        groups, dims = self._groups_and_dims(meter, state, dims)
        points = ch.points
        if ts <= ch.horizon:
            result.dropped = "late"
            if self.raise_alerts:
                result.alerts.append(self._late_alert(meter, ch, ts, received))
            return result

        j = len(points)
        while j > 0 and points[j - 1].ts >= ts:
            j -= 1
        point: Point
        forced = None
        first = j
        if j < len(points) and points[j].ts == ts:
            point = forced = points[j]
            merged = self._merge(point, raw, received, events, reading, groups, meter, ch,
                                 result)
            if merged is None:
                return result
        else:
            point = Point(ts=ts, value=raw, raw=raw, quality=Q_ACTUAL, method=0, version=0,
                          received=received, events=events, source=reading.source)
            points.insert(j, point)
            if j > 0 and ch.kind in _CONSUMING:
                step = ch.interval_s
                gap = ts - points[j - 1].ts
                if not step or abs(gap - step) * 10 > step:
                    self._learn_interval(ch, groups.validation)
                    step = ch.interval_s
                tolerance = groups.validation.gap_tolerance_pct
                if tolerance is not None and step and gap * 100 > step * (100 + tolerance):
                    markers = self._insert_markers(ch, j, groups.validation, received, meter,
                                                   result)
                    first, j = j, j + markers
        first_ever = ch.horizon == 0 and points[0] is point
        group = groups.initial_load if (initial_load or first_ever) else groups.validation
        if group is groups.initial_load and not group.rules:
            group = groups.validation
        ctx = self._context(meter, state, ch)
        ctx.reading = reading
        ctx.point = point
        ctx.i = j
        flags = self._input_flags(ctx, group, bool(point.events))
        if flags:
            added = [f for f in flags if f not in point.events]
            if added:
                point.events = (*point.events, *added)
        ctx.reading = None
        if reading.interval_s and ch.kind == "interval" and reading.interval_s != ch.interval_s:
            ch.interval_s = reading.interval_s  # flagged once by interval_unit, then followed
        if not (forced is None and first == j and j == len(points) - 1 and j > 0
                and group is groups.validation
                and self._append(ctx, groups, point, received, meter, dims,
                                 reading.frame_id, result)):
            self._revalidate(ctx, groups, first, received, meter, dims, result,
                             frame_id=(point.ts, reading.frame_id),
                             initial_load=initial_load, forced=forced)
        if len(state.channels) > 1 and ch.kind in _CONSUMING and any(
                m.id == "scaled_to_register" for m in groups.estimation.methods):
            self._rescale_intervals(state, ch, ts, groups, received, meter, dims, result)
        return result

    def _rescale_intervals(self, state: MeterState, ch: Channel, ts: int, groups: GroupSet,
                           trigger: int, meter: MeterInfo, dims: Dimensions,
                           result: StepResult) -> None:
        """Re-estimate interval holes of the register period around ``ts`` once the register
        reads and the interval values that bound it are known (scaling to the register)."""
        if not any(c.kind == "interval" for c in state.channels.values()):
            return  # nothing to rescale (a register and its settlement value: both cumulative)
        register = next((c for c in state.channels.values() if c.kind == "cumulative"), None)
        if register is None:
            return
        anchors = [p.ts for p in register.points if _is_anchor(p)]
        lo = max((t for t in anchors if t < ts), default=None)
        hi = min((t for t in anchors if t >= ts), default=None)
        if ch.kind == "cumulative":
            hi, lo = ts, lo
        if lo is None or hi is None:
            return
        for other in state.channels.values():
            if other.kind != "interval":
                continue
            k = next((n for n, p in enumerate(other.points)
                      if lo < p.ts <= hi and _needs_estimate(p, None)), None)
            if k is None:
                continue
            ctx = self._context(meter, state, other)
            self._revalidate(ctx, groups, k, trigger, meter, dims, result, frame_id=None,
                             initial_load=False)

    def _append(self, ctx: PointContext, groups: GroupSet, point: Point, trigger: int,
                meter: MeterInfo, dims: Dimensions, frame_id: str | None,
                result: StepResult) -> bool:
        """The common case, fast: an in-order value after a valid one that passes. Returns
        False (having changed nothing older) when the general passes are needed: a rejected
        value, a decrease, or a day rule that changes another value.

        Event flags (status tags, input rules' flags such as ``clock_back``) are the value's
        own: they set its starting rank as pass A does, and select the rules that need
        them; one that rejects the value leaves it to the general passes."""
        ch = ctx.channel
        kind = ch.kind
        if kind not in _CONSUMING:
            return False
        points = ch.points
        prev = points[-2]
        anchor_value = prev.value
        if anchor_value is None or (prev.quality != Q_EDITED and prev.quality != Q_FINAL and (
                prev.raw is None or prev.rejected or prev.quality == Q_ESTIMATED)):
            return False  # not an anchor (see _is_anchor)
        raw = point.raw
        assert raw is not None
        if kind == "cumulative":
            consumption = raw - anchor_value
            if consumption < 0:
                return False
            start: int | None = prev.ts
            elapsed = point.ts - prev.ts
        else:
            consumption = raw
            elapsed = ch.interval_s
            start = point.ts - elapsed if elapsed else None
        ctx.i = len(points) - 1
        ctx.point = point
        ctx.anchor = prev
        ctx.consumption = consumption
        ctx.elapsed = elapsed
        ctx.rollover = False
        group = groups.validation
        events = point.events
        rank = _events_rank(events, group.flag_ranks) if events else 0
        if rank == 2:
            return False
        ctx.pending_rank = rank
        fired: list[str] = []
        for rule in group.append_rules[bool(events), kind]:
            outcome = rule.check(ctx)
            if outcome:
                if rule.rank == 2:
                    return False
                fired.append(rule.id if outcome is True else str(outcome))
                if rule.rank > rank:
                    rank = ctx.pending_rank = rule.rank
        point.flags = tuple(fired)
        point.value = raw
        point.quality = Q_QUESTIONABLE if rank else Q_VALIDATED
        point.consumption = consumption
        point.start = start
        holds_days = _holds_days(group, ch)
        if holds_days and len(points) > self._cap_floor and \
                len(points) > self.open_day_cap(ch.interval_s):
            return False  # an open day's oldest values must be judged before they leave
        if group.day_rules:
            fixed = self.calendar._fixed
            if fixed is None or ch.interval_s >= 6 * 3600 or "window" in group.day_scopes:
                if not self._day_verdicts_hold(ctx, group):
                    return False
            else:
                # inline for the common case: does the previous value's day close now?
                prev_ts = prev.ts
                prev_end = ((prev_ts - 1 + fixed) // 86400 + 1) * 86400 - fixed
                if prev_ts < prev_end <= point.ts and not self._day_verdicts_hold(ctx, group):
                    return False
        point.version = 1
        result.outputs.append(self._output(point, ch, meter, dims, trigger, frame_id))
        if (fired or events) and self.raise_alerts:
            self._alerts_for(point, (), ch, meter, groups, trigger, result)
        self._evict(ch, holds_days)
        return True

    def _day_verdicts_hold(self, ctx: PointContext, group: CompiledGroup) -> bool:
        """True when appending the newest value changes no day rule's verdict: it closes no
        day (or the day it closes keeps the verdicts its values carry), and on a window
        scope the new value is no spike of the window before it."""
        ch = ctx.channel
        points = ch.points
        n = len(points)
        if n < 3:
            return True
        cal = self.calendar
        new_ts = points[-1].ts
        prev_ts = points[-2].ts
        prev_day = day_of(cal, prev_ts)
        prev_end = day_end(cal, prev_day)
        # the day of the previous value closes now (a new value alone in a later day, even
        # at its end, has nothing to be compared with)
        closes = prev_ts < prev_end <= new_ts
        if not closes and ch.interval_s < 6 * 3600 and "window" not in group.day_scopes:
            return True  # the common case: nothing closes, no window scope
        day_ids, flag_ranks = group.day_ids, group.flag_ranks
        allow_rollover = group.rule("rollover") is not None
        first = -1
        for rule in group.day_rules:
            if scope_of(rule, ch) == "window":
                if n - 1 in judge(rule, ctx, points, max(0, n - WINDOW), n, day_ids,
                                  flag_ranks, allow_rollover):
                    return False
                continue
            if not closes:
                continue
            end = n if new_ts == prev_end else n - 1
            if first < 0:
                first = end - 1
                while first > 0 and day_of(cal, points[first - 1].ts) == prev_day:
                    first -= 1
            rule_id = rule.id
            fired = judge(rule, ctx, points, first, end, day_ids, flag_ranks, allow_rollover)
            if fired != {k for k in range(first, end) if rule_id in points[k].flags}:
                return False
        return True

    def _merge(self, point: Point, raw: int, received: int, events: tuple[str, ...],
               reading: Reading, groups: GroupSet, meter: MeterInfo, ch: Channel,
               result: StepResult) -> Point | None:
        """A value for a time the channel already holds; None when it is a dropped duplicate."""
        if point.raw is None or (point.quality == Q_ESTIMATED and point.raw is None):
            # an actual for a marker: the late read replaces the estimate
            previous = point.value
            point.raw = point.value = raw
            point.quality, point.method, point.forward = Q_ACTUAL, 0, False
            point.received, point.events, point.source = received, events, reading.source
            if reading.source in _HISTORY_SOURCES:
                point.edit = EditNote(user=self.producer, at=received,
                                      reason_code="METER_HISTORY", previous_value=previous,
                                      previous_version=point.version or None,
                                      note="value read back from the meter's stored history")
                point.method = METHOD_CODES["meter_history"]
            return point
        rule = groups.validation.rule("duplicate")
        tolerance = int(getattr(rule.params, "value_tolerance", 0) * 1_000_000) if rule else 0
        if abs(point.raw - raw) <= tolerance:
            result.dropped = "duplicate"
            return None
        if point.quality in (Q_EDITED, Q_FINAL):
            result.dropped = "duplicate"
            if self.raise_alerts:
                result.alerts.append(self._alert(meter, ch, point.ts, "duplicate", received,
                                                 f"a device value {dec(raw, ch.places)} for an "
                                                 "edited value was ignored"))
            return None
        keep_last = rule is not None and getattr(rule.params, "keep", "first") == "last"
        if "duplicate" not in point.events:
            point.events = (*point.events, "duplicate")
        if keep_last:
            point.raw = point.value = raw
            point.received = received
        if self.raise_alerts:
            kept = "the last" if keep_last else "the first"
            result.alerts.append(self._alert(
                meter, ch, point.ts, "duplicate", received,
                f"two different values for one time: {dec(raw, ch.places)} received after "
                f"{dec(point.raw if not keep_last else raw, ch.places)}; {kept} is kept"))
        return point

    # ------------------------------------------------------------------ edits

    def apply_edit(self, edit: ReadingEdit, meter: MeterInfo, state: MeterState | None = None,
                   *, dims: Dimensions | None = None) -> StepResult:
        """A manual edit or finalisation: a new version with who, when, why and how."""
        from vee.errors import EditError

        state = state if state is not None else MeterState()
        result = StepResult(state=state)
        ch = state.channels.get(edit.register)
        ts = epoch(edit.ts)
        where = f"{edit.meter_id}/{edit.register}@{edit.ts.isoformat()}"
        if ch is None:
            raise EditError("no value of this register is held", where=where,
                            hint="edit values inside the stream's window, or stored values "
                                 "with `unimeter vee revalidate`")
        j = next((n for n, p in enumerate(ch.points) if p.ts == ts), None)
        if j is None:
            if ts <= ch.horizon or not ch.points or ts < ch.points[0].ts:
                raise EditError("the value is older than the stream's window", where=where,
                                hint="re-validate stored data with `unimeter vee revalidate`")
            if edit.value is None:
                raise EditError("there is no value at this time to finalise", where=where,
                                hint="give a value to add one")
            point = Point(ts=ts, value=None, raw=None, quality=Q_MISSING, method=0, version=0,
                          received=epoch(edit.at), source="edit")
            j = len(ch.points)
            while j > 0 and ch.points[j - 1].ts > ts:
                j -= 1
            ch.points.insert(j, point)
        point = ch.points[j]
        if point.edit is not None and point.edit.reason_code == edit.reason_code and \
                point.edit.at == epoch(edit.at) and point.edit.user == edit.user:
            result.dropped = "duplicate"  # the same edit delivered again
            return result
        value = to_micro(edit.value) if edit.value is not None else point.value
        if value is None:
            raise EditError("the value is missing: give one", where=where,
                            hint="a missing value can only be finalised with a value")
        point.edit = EditNote(user=edit.user, at=epoch(edit.at), reason_code=edit.reason_code,
                              previous_value=point.value, previous_version=point.version or None,
                              note=edit.note)
        point.value = value
        point.quality = Q_FINAL if edit.final else Q_EDITED
        point.method = METHOD_CODES.get(edit.method, METHOD_CODES["manual"]) \
            if edit.value is not None else point.method
        point.forward = False
        groups = self.groups_for(meter, state)
        ctx = self._context(meter, state, ch)
        dims = _with_group(dims or meter.dims, groups.validation.id)
        self._revalidate(ctx, groups, j, epoch(edit.at), meter, dims, result,
                         frame_id=None, initial_load=False, forced=point)
        return result

    def close(self, meter: MeterInfo, state: MeterState | None = None, *,
              dims: Dimensions | None = None) -> StepResult:
        """Judge the days still open as if they were over: the end of a batch run, whose
        input holds everything there is. (The stream never calls it: a day closes when a
        value at or after its end arrives.) Returns the new versions that changes."""
        state = state if state is not None else MeterState()
        result = StepResult(state=state)
        groups = self.groups_for(meter, state)
        if not groups.validation.day_rules:
            return result
        dims = _with_group(dims or meter.dims, groups.validation.id)
        for ch in list(state.channels.values()):
            points = ch.points
            if ch.kind not in _CONSUMING or len(points) < 3:
                continue
            ctx = self._context(meter, state, ch)
            self._revalidate(ctx, groups, len(points), max(p.received for p in points), meter,
                             dims, result, frame_id=None, initial_load=False, close=True)
        return result

    # ------------------------------------------------------------------ the passes

    def _revalidate(self, ctx: PointContext, groups: GroupSet, start: int, trigger: int,
                    meter: MeterInfo, dims: Dimensions, result: StepResult, *,
                    frame_id: tuple[int, str | None] | None, initial_load: bool,
                    forced: Point | None = None, close: bool = False) -> None:
        ch = ctx.channel
        points = ch.points
        # the part of the window this call may change: from the anchor before the first
        # value re-validated (its hole may need re-estimating) to the end
        lo = _region_start(points, start)
        # scaling to a register may change estimates anywhere in the register period
        watch = 0 if (ch.kind == "interval" and len(ctx.state.channels) > 1) else lo
        snap = {id(p): _signature(p) for p in points[watch:] if p.version}
        consuming = ch.kind in _CONSUMING
        day_rules = groups.validation.day_rules if consuming else ()
        # the newest time this channel held before this call (every value held before has
        # been published, so has a version): a day over by then was judged already
        seen = 0
        if day_rules:
            for p in reversed(points):
                if p.version:
                    seen = p.ts
                    break
        ranks = self._validate(ctx, groups, start, initial_load)
        # a day rule's verdict does not depend on the estimates it causes, but a value it
        # rejects or releases must be (re-)estimated and its neighbours derived again: a
        # second round does that and confirms the verdicts; the last one only re-estimates
        for round_ in range(4):
            self._estimate(ctx, groups, lo, ranks)
            self._derive(ctx, lo, groups.validation)
            if not day_rules or round_ == 3:
                break
            earliest = self._day_pass(ctx, groups, day_rules, lo, ranks, snap, close=close,
                                      changed=start, seen=seen)
            if earliest is None:
                break
            new_lo = _region_start(points, earliest)
            for p in points[new_lo:lo]:
                if p.version:
                    snap.setdefault(id(p), _signature(p))
            lo = min(lo, new_lo)
        self._finish(ctx, lo, ranks)
        for p in points[min(lo, watch):]:
            if p.version and p is not forced:
                old = snap.get(id(p))
                if old is None or old == _signature(p):
                    continue
            old_flags = snap[id(p)][3] if id(p) in snap else ()
            p.version += 1
            frame = frame_id[1] if frame_id is not None and frame_id[0] == p.ts else None
            result.outputs.append(self._output(p, ch, meter, dims, trigger, frame))
            if self.raise_alerts:
                self._alerts_for(p, old_flags, ch, meter, groups, trigger, result)
        self._evict(ch, consuming and _holds_days(groups.validation, ch))

    def _validate(self, ctx: PointContext, groups: GroupSet, start: int,
                  initial_load: bool) -> dict[int, int]:
        """Pass A: run the point rules; returns point index -> worst action rank."""
        ch = ctx.channel
        points = ch.points
        kind = ch.kind
        rollover_rule = groups.validation.rule("rollover")
        rollover_tolerance = (getattr(rollover_rule.params, "tolerance_pct", 10) / 100
                              if rollover_rule else 0.1)
        rollover_fraction = (getattr(rollover_rule.params, "max_fraction", 0.01)
                             if rollover_rule else 0.01)
        anchor = None
        for k in range(start - 1, -1, -1):
            if _is_anchor(points[k]):
                anchor = points[k]
                break
        ranks: dict[int, int] = {}
        interval = ch.interval_s
        meter = ctx.meter
        day_ids = groups.validation.day_ids if kind in _CONSUMING else frozenset()
        day_ranks = groups.validation.flag_ranks
        for k in range(start, len(points)):
            p = points[k]
            edited = p.quality in (Q_EDITED, Q_FINAL)
            if edited:
                group = groups.manual_override
            elif initial_load or (ch.horizon == 0 and anchor is None):
                group = groups.initial_load if groups.initial_load.rules else groups.validation
            else:
                group = groups.validation
            ctx.i, ctx.point, ctx.anchor = k, p, anchor
            ctx.rollover = False
            base = p.value if edited else p.raw
            if base is None:
                ctx.consumption, ctx.elapsed = None, 0
            elif kind == "cumulative":
                if anchor is not None and anchor.value is not None:
                    ctx.elapsed = p.ts - anchor.ts
                    delta = base - anchor.value
                    if delta >= 0:
                        ctx.consumption = delta
                    else:
                        ctx.consumption, ctx.rollover = register_delta(
                            anchor.value, base, meter, ctx.elapsed,
                            allow_rollover=rollover_rule is not None,
                            tolerance=rollover_tolerance, max_fraction=rollover_fraction)
                else:
                    ctx.consumption, ctx.elapsed = None, 0
            elif kind == "interval":
                ctx.consumption, ctx.elapsed = base, interval
            else:
                ctx.consumption, ctx.elapsed = None, 0
            events = p.events
            rank = _events_rank(events, group.flag_ranks) if events else 0
            ctx.pending_rank = rank
            fired: list[str] = []
            marker = p.raw is None and not edited
            for rule in group.point_subsets[marker, bool(events),
                                            ctx.consumption is not None]:
                if kind not in rule.kinds:
                    continue
                outcome = rule.check(ctx)
                if outcome:
                    fired.append(rule.id if outcome is True else str(outcome))
                    if rule.rank > rank:
                        rank = rule.rank
                        ctx.pending_rank = rank
            if p.flags and day_ids and not edited:
                # a day rule's verdict stays until the pass over its (closed) day changes it
                for flag in p.flags:
                    if flag in day_ids:
                        fired.append(flag)
                        rank = max(rank, day_ranks.get(flag, 0))
            if marker:
                rank = 2
            p.flags = tuple(fired)
            p.rejected = rank == 2 and not edited and not marker
            if rank < 2 and p.quality == Q_ESTIMATED and p.raw is not None and not edited:
                # no longer rejected: the raw value is back, and anchors the holes around it
                p.value, p.quality, p.method, p.forward = p.raw, Q_ACTUAL, 0, False
            ranks[k] = rank
            if base is not None and (edited or rank < 2):
                anchor = p
        return ranks

    def _estimate(self, ctx: PointContext, groups: GroupSet, lo: int,
                  ranks: dict[int, int]) -> None:
        """Pass B: fill each hole (rejected values and markers between anchors)."""
        ch = ctx.channel
        points = ch.points
        k = lo
        n = len(points)
        while k < n:
            if not _needs_estimate(points[k], ranks.get(k)):
                k += 1
                continue
            first = k
            while k < n and _needs_estimate(points[k], ranks.get(k)):
                k += 1
            targets = points[first:k]
            left = points[first - 1] if first > 0 else _base_point(ch)
            right = points[k] if k < n else None
            self._fill(ctx, groups, left, targets, right)

    def _fill(self, ctx: PointContext, groups: GroupSet, left: Point | None,
              targets: list[Point], right: Point | None) -> None:
        ch = ctx.channel
        cumulative = ch.kind == "cumulative"
        advance = None
        if cumulative and left is not None and right is not None and \
                left.value is not None and right.value is not None:
            advance, _ = register_delta(left.value, right.value, ctx.meter, right.ts - left.ts,
                                        allow_rollover=groups.validation.rule("rollover")
                                        is not None)
        hole = Hole(ctx, left, targets, right, advance)
        values: list[int] | None = None
        method_id = "none"
        relative = False
        if ch.kind in _CONSUMING and not (cumulative and left is None):
            for method in groups.estimation.methods:
                if ch.kind not in method.kinds:
                    continue
                if method.two_sided and not hole.two_sided:
                    continue
                values = method.estimate(hole)
                if values is not None:
                    method_id = method.id
                    relative = method.relative_shape and cumulative
                    break
        flags: tuple[str, ...] = ()
        if values is not None and cumulative:
            assert left is not None
            assert left.value is not None
            if advance is not None:
                if advance < 0:
                    values = None
                else:
                    spans = [end - start for start, end in hole.piece_spans()]
                    scaled = scale_to_total(values, advance, spans)
                    if not relative and _changed_much(values, scaled):
                        flags = ("scaled_to_register",)
                    values = scaled
            if values is not None:
                # a register shows whole units of its last digit: round the estimates to
                # it, so every value and consumption is what the register could show
                step = _POW10[6 - ch.places]
                running = left.value
                for t, piece in zip(targets, values, strict=False):
                    running += piece
                    t.value = (running + step // 2) // step * step if step > 1 else running
        elif values is not None:
            scaled_values = self._scale_intervals(ctx, groups, targets, values)
            if scaled_values is not None:
                values, method_id = scaled_values, "scaled_to_register"
            for t, v in zip(targets, values, strict=False):
                t.value = v
        forward = right is None
        for t in targets:
            if values is None:
                if t.raw is None:
                    t.value, t.quality, t.method = None, Q_MISSING, 0
                else:
                    t.value, t.quality, t.method = t.raw, Q_QUESTIONABLE, 0
                t.forward = False
            else:
                t.quality, t.method, t.forward = Q_ESTIMATED, METHOD_CODES[method_id], forward
                if flags:
                    t.flags = (*t.flags, *(f for f in flags if f not in t.flags))

    def _scale_intervals(self, ctx: PointContext, groups: GroupSet, targets: list[Point],
                         values: list[int]) -> list[int] | None:
        """Scale an interval channel's estimates to the meter's register advance."""
        if not any(m.id == "scaled_to_register" for m in groups.estimation.methods):
            return None
        ch = ctx.channel
        step = ch.interval_s
        register = next((c for c in ctx.state.channels.values() if c.kind == "cumulative"),
                        None)
        if register is None or not step:
            return None
        first, last = targets[0].ts - step, targets[-1].ts
        r0 = next((p for p in reversed(register.points)
                   if p.ts <= first and _is_anchor(p)), None)
        r1 = next((p for p in register.points if p.ts >= last and _is_anchor(p)), None)
        if r0 is None or r1 is None or r0.value is None or r1.value is None:
            return None
        inside = [p for p in ch.points if r0.ts < p.ts <= r1.ts]
        if len(inside) * step != r1.ts - r0.ts:
            return None
        # every estimate of the register period is scaled together (there may be several
        # holes in one period): anchors are fixed, the rest shares what they leave
        target_ids = {id(t) for t in targets}
        others = [p for p in inside if id(p) not in target_ids and not _is_anchor(p)]
        actual = sum(p.value or 0 for p in inside if _is_anchor(p))
        wanted = r1.value - r0.value - actual
        if wanted < 0:
            return None
        shape = [*values, *(p.value or 0 for p in others)]
        scaled = scale_to_total(shape, wanted, [step] * len(shape))
        for p, v in zip(others, scaled[len(values):], strict=True):
            if p.value is not None:
                p.value = v
        return scaled[:len(values)]

    def _derive(self, ctx: PointContext, lo: int, group: CompiledGroup) -> None:
        """Pass C: consumption and interval start of each value from ``lo`` on."""
        ch = ctx.channel
        points = ch.points
        kind = ch.kind
        if kind == "interval":
            step = ch.interval_s
            for p in points[lo:]:
                p.consumption = p.value
                p.start = p.ts - step if step and p.value is not None else None
            return
        if kind != "cumulative":
            for p in points[lo:]:
                p.consumption = p.start = None
            return
        allow_rollover = group.rule("rollover") is not None
        # the value before: in the window, else the newest that left it (re-deriving from
        # the window's start must not drop the oldest value's consumption)
        prev_ts, prev_value = ch.base_ts, ch.base_value
        for k in range(lo - 1, -1, -1):
            if points[k].value is not None:
                prev_ts, prev_value = points[k].ts, points[k].value
                break
        meter = ctx.meter
        for p in points[lo:]:
            value = p.value
            if value is None:
                p.consumption = p.start = None
                continue
            if prev_value is None:
                p.consumption = p.start = None
            else:
                delta = value - prev_value
                if delta < 0:
                    delta, _ = register_delta(prev_value, value, meter, p.ts - prev_ts,
                                              allow_rollover=allow_rollover)
                p.consumption = delta
                p.start = prev_ts
            prev_ts, prev_value = p.ts, value
        ctx._daily = None

    def _day_pass(self, ctx: PointContext, groups: GroupSet, day_rules: tuple[Any, ...],
                  lo: int, ranks: dict[int, int], snap: dict[int, tuple[Any, ...]], *,
                  close: bool = False, changed: int, seen: int) -> int | None:
        """Pass D: day-scope rules over the days this call closed (with ``close``, the open
        day too) and over the closed days whose evidence changed — a value of theirs (or the
        value before their first) at index ``changed`` or later — as long as that evidence
        is still whole in the window; window-scope rules over each value from ``changed``
        on (:mod:`vee._day_rules`). ``seen`` is the newest time held before this call.
        Returns the earliest index whose fate (rejected or not) changed, or None."""
        ch = ctx.channel
        points = ch.points
        n = len(points)
        if n < 3:
            return None
        cal = self.calendar
        validation = groups.validation
        flag_ranks, day_ids = validation.flag_ranks, validation.day_ids
        allow_rollover = validation.rule("rollover") is not None
        newest = points[-1].ts
        # the days touched: from the value before the first one this call added or changed
        # (its day may have been closed by this call) to the newest. Not from ``lo``: a day
        # over before this call whose values did not change keeps its verdicts — judged
        # again on what is left of it in the window (its first values or the value before
        # them gone) it would release a spike it flagged (validated -> estimated ->
        # validated); a long window is never scanned whole either
        first = max(min(changed, n) - 1, 0)
        first_day = day_of(cal, points[first].ts)
        while first > 0 and day_of(cal, points[first - 1].ts) == first_day:
            first -= 1
        days = [day_of(cal, p.ts) for p in points[first:]]
        # the values the window's cap makes leave before their day is over: judged now, once,
        # on the day so far (they are the oldest of the open day, the newest day)
        leaving = (0 if close or not _holds_days(validation, ch)
                   else self._evict_count(ch, True))
        earliest: int | None = None
        for rule in day_rules:
            verdicts: list[tuple[int, bool]] = []
            if scope_of(rule, ch) == "window":
                # each value is judged against the values before it: those from the first
                # this call added or changed on (a value before it keeps its verdict: its
                # evidence is what it was; judged again on a window that has moved on since,
                # a spike was released or a value flagged after the fact)
                for k in range(min(changed, n), n):
                    fired = judge(rule, ctx, points, max(0, k - WINDOW + 1), k + 1, day_ids,
                                  flag_ranks, allow_rollover)
                    verdicts.append((k, k in fired))
            else:
                k = first
                while k < n:
                    d = days[k - first]
                    end = k + 1
                    while end < n and days[end - first] == d:
                        end += 1
                    if close or newest >= day_end(cal, d):
                        # judged already (over before this call): again only when its
                        # evidence changed; what is left of it in the window may judge the
                        # values that changed, never re-judge the others on less evidence
                        from_ = k
                        if day_end(cal, d) <= seen:
                            if end <= changed:
                                k = end
                                continue
                            if not self._whole(ch, points, k, d, day_ids, flag_ranks):
                                from_ = max(k, changed)
                        fired = judge(rule, ctx, points, k, end, day_ids, flag_ranks,
                                      allow_rollover)
                        verdicts.extend((m, m in fired) for m in range(from_, end))
                    elif k < leaving:
                        fired = judge(rule, ctx, points, k, end, day_ids, flag_ranks,
                                      allow_rollover)
                        verdicts.extend((m, m in fired) for m in range(k, min(end, leaving)))
                    k = end
            rule_id = rule.id
            for k, fires in verdicts:
                p = points[k]
                if (rule_id in p.flags) == fires or p.quality in (Q_EDITED, Q_FINAL):
                    continue
                if p.version:
                    snap.setdefault(id(p), _signature(p))
                was_rejected = _needs_estimate(p, ranks.get(k))
                if fires:
                    p.flags = (*p.flags, rule_id)
                else:
                    p.flags = tuple(f for f in p.flags if f != rule_id)
                ranks[k] = max((flag_ranks.get(f, 0) for f in (*p.flags, *p.events)),
                               default=0)
                rejected = ranks[k] == 2
                p.rejected = rejected and p.raw is not None
                if rejected != was_rejected:
                    if not rejected and p.raw is not None:
                        p.value, p.quality, p.method, p.forward = p.raw, Q_ACTUAL, 0, False
                    earliest = k if earliest is None else min(earliest, k)
        return earliest

    def _whole(self, ch: Channel, points: list[Point], first: int, day: int,
               day_ids: frozenset[str], flag_ranks: dict[str, int]) -> bool:
        """Whether the evidence of the closed ``day`` whose first value held is
        ``points[first]`` is still all in the window: none of its values has left, and the
        value before its first is held (or is the channel's base, what the meter sent)."""
        if not ch.horizon:
            return True  # nothing has left the window
        if day_of(self.calendar, ch.horizon) >= day:
            return False  # some of its values have left
        if ch.kind == "interval" or not ch.estimated_run:
            return True
        return any(counts(points[k], day_ids, flag_ranks) is not None
                   for k in range(first - 1, -1, -1))

    def _finish(self, ctx: PointContext, lo: int, ranks: dict[int, int]) -> None:
        """The quality of each value that was not estimated."""
        points = ctx.channel.points
        for k in range(lo, len(points)):
            p = points[k]
            if p.quality in (Q_EDITED, Q_FINAL, Q_ESTIMATED, Q_MISSING):
                if p.quality == Q_ESTIMATED and p.raw is not None and ranks.get(k, 2) < 2:
                    p.value, p.method = p.raw, 0
                    p.quality = Q_QUESTIONABLE if ranks[k] == 1 else Q_VALIDATED
                continue
            if p.raw is None:
                continue
            rank = ranks.get(k)
            if rank is None:
                continue  # not re-validated in this call: keeps its result
            if rank == 2:
                continue  # rejected but not estimable: _fill made it questionable
            p.value = p.raw
            p.quality = Q_QUESTIONABLE if rank == 1 else Q_VALIDATED

    # ------------------------------------------------------------------ window upkeep

    def _learn_interval(self, ch: Channel, group: CompiledGroup) -> None:
        rule = group.rule("missing")
        configured = getattr(rule.params, "interval", 0) if rule else 0
        if configured:
            ch.interval_s = configured
            return
        if ch.kind == "interval" and ch.interval_s:
            return
        deltas = []
        previous = None
        for p in ch.points[-8:]:
            if p.raw is None:
                continue
            if previous is not None and p.ts > previous:
                deltas.append(p.ts - previous)
            previous = p.ts
        if len(deltas) >= 3:
            deltas.sort()
            ch.interval_s = deltas[len(deltas) // 2]

    def _insert_markers(self, ch: Channel, j: int, group: CompiledGroup, received: int,
                        meter: MeterInfo, result: StepResult) -> int:
        """Markers for the expected values in a gap before the new value; returns how many."""
        rule = group.rule("missing")
        step = ch.interval_s
        if rule is None or not step or j == 0:
            return 0
        params: Any = rule.params
        points = ch.points
        prev, new = points[j - 1], points[j]
        gap = new.ts - prev.ts
        if gap * 100 <= step * (100 + params.tolerance_pct):
            return 0
        count = round(gap / step) - 1
        if count <= 0:
            return 0
        if params.read_history and gap >= params.read_history_min_gap:
            result.commands.append(self._history_request(meter, ch, prev.ts, new.ts, received))
        if count > params.max_markers:
            return 0
        markers = [Point(ts=prev.ts + step * n, value=None, raw=None, quality=Q_MISSING,
                         method=0, version=0, received=received)
                   for n in range(1, count + 1) if prev.ts + step * n < new.ts]
        points[j:j] = markers
        return len(markers)

    def _evict_count(self, ch: Channel, holds_days: bool) -> int:
        """How many of the oldest values leave the window now. Beyond ``window_points`` (or
        ``window_s``) a value leaves — but while a day-scope rule applies to the channel
        (``holds_days``), only once the day of the value after it is over (judged), so the
        open day stays whole with the value before it; beyond :meth:`open_day_cap` the
        oldest leave anyway (:meth:`_day_pass` judges them on the day so far first)."""
        points = ch.points
        n = len(points)
        if n <= 2:
            return 0
        oldest_kept = points[-1].ts - self.window_s
        window_points = self.window_points
        k = 0
        if not holds_days:
            while n - k > 2 and (n - k > window_points or points[k].ts < oldest_kept):
                k += 1
            return k
        if n <= window_points and points[0].ts >= oldest_kept:
            return 0
        newest = points[-1].ts
        cal = self.calendar
        fixed = cal._fixed
        cap = self.open_day_cap(ch.interval_s) if n > self._cap_floor else n
        while n - k > 2:
            if n - k > cap or points[k].ts < oldest_kept:
                k += 1
                continue
            if n - k <= window_points:
                break
            ts = points[k + 1].ts
            if fixed is not None:
                end = ((ts - 1 + fixed) // 86400 + 1) * 86400 - fixed
            else:
                end = day_end(cal, day_of(cal, ts))
            if end > newest:
                break  # the next value's day is still open
            k += 1
        return k

    def _evict(self, ch: Channel, holds_days: bool) -> None:
        points = ch.points
        n = len(points)
        if n <= self.window_points and (n <= 2 or points[0].ts >= points[-1].ts - self.window_s):
            return  # the common case: nothing leaves
        count = self._evict_count(ch, holds_days)
        if not count:
            return
        fixed = self.calendar._fixed
        for _ in range(count):
            old = points.pop(0)
            ch.horizon = old.ts
            if old.value is not None:
                ch.base_ts, ch.base_value = old.ts, old.value
            estimated = old.quality in (Q_ESTIMATED, Q_MISSING)
            ch.estimated_run = ch.estimated_run + 1 if estimated else 0
            start, amount = old.start, old.consumption
            if amount is None or start is None or not self.history_days:
                continue
            bad = estimated or "power_fail" in old.events
            if amount < 0:
                # a register that went back and stayed (questionable, nothing could estimate
                # it) used nothing, and its day is never a like day; a negative total would
                # also read as "no data" once encoded
                amount, bad = 0, True
            if fixed is not None:
                day = (start + fixed) // 86400
                day_end_ = (day + 1) * 86400 - fixed
            else:
                day = self.calendar.day(start)
                day_end_ = self.calendar.day_start(day + 1)
            if start < old.ts <= day_end_:
                # the common case: the value's interval lies in one local day
                days = ch.days
                if days and day == ch.last_day:
                    total = days[-1]
                    days[-1] = (total if total > 0 else 0) + amount
                    if bad:
                        ch.bad_days |= 1 << (len(days) - 1)
                else:
                    self._add_day(ch, day, amount, bad)
                continue
            for day, share in self._by_day(start, old.ts, amount):
                self._add_day(ch, day, share, bad)

    def _by_day(self, start: int, end: int, amount: int) -> list[tuple[int, int]]:
        cal = self.calendar
        if end <= start:
            return [(cal.day(end - 1), amount)]
        out = []
        day = cal.day(start)
        allotted = 0
        while True:
            day_end = cal.day_start(day + 1)
            if day_end >= end:
                out.append((day, amount - allotted))
                return out
            share = amount * (day_end - max(start, cal.day_start(day))) // (end - start)
            out.append((day, share))
            allotted += share
            day += 1

    def _add_day(self, ch: Channel, day: int, amount: int, bad: bool) -> None:
        if not ch.days:
            ch.days, ch.last_day, ch.bad_days = [-1], day, 0
        if day > ch.last_day:
            grow = day - ch.last_day
            if grow >= self.history_days:
                ch.days, ch.bad_days = [-1], 0
            else:
                ch.days.extend([-1] * grow)
            ch.last_day = day
            excess = len(ch.days) - self.history_days
            if excess > 0:
                del ch.days[:excess]
                ch.bad_days >>= excess
        index = len(ch.days) - 1 - (ch.last_day - day)
        if index < 0:
            return  # older than the history kept
        ch.days[index] = max(ch.days[index], 0) + amount
        if bad:
            ch.bad_days |= 1 << index

    # ------------------------------------------------------------------ messages

    def _input_flags(self, ctx: PointContext, group: CompiledGroup,
                     has_events: bool) -> list[str]:
        flags = []
        for rule in group.input_events if has_events else group.input_plain:
            outcome = rule.check(ctx)
            if outcome:
                flags.append(rule.id if outcome is True else str(outcome))
        return flags

    def _output(self, p: Point, ch: Channel, meter: MeterInfo, dims: Dimensions, trigger: int,
                frame_id: str | None) -> ValidatedReading:
        places = ch.places
        factor = _POW10[6 - places]
        ts = p.ts
        start = p.start
        consumption = p.consumption
        intervals: tuple[IntervalConsumption, ...] = ()
        consumption_dec = None
        if consumption is not None:
            consumption_dec = (Decimal(consumption // factor).scaleb(-places)
                               if consumption % factor == 0 else dec(consumption, 6))
            if start is not None:
                estimated = p.quality == Q_ESTIMATED
                if start < ts <= (start // 3600 + 1) * 3600:  # within one UTC hour
                    intervals = (IntervalConsumption(start=dt(start), end=dt(ts),
                                                     volume=dec(consumption, 6),
                                                     estimated=estimated),)
                else:
                    intervals = tuple(
                        IntervalConsumption(start=dt(a), end=dt(b), volume=dec(v, 6),
                                            estimated=estimated)
                        for a, b, v in prorate_hours(start, ts, consumption))
        value = p.value
        value_dec = None
        if value is not None:
            value_dec = (Decimal(value // factor).scaleb(-places) if value % factor == 0
                         else dec(value, 6))
        # only what differs from the message's defaults is passed: a ValidatedReading with
        # every field given costs several times as much to build
        extra: dict[str, Any] = {}
        flags = p.flags
        if p.events:
            flags = (*flags, *(e for e in p.events if e not in flags))
        if p.forward and "forward" not in flags:
            flags = (*flags, "forward")
        if flags:
            extra["flags"] = flags
        if p.method:
            extra["method"] = METHOD_NAMES[p.method]
        if ch.kind != "cumulative":
            extra["kind"] = ch.kind if ch.kind in _CONSUMING else "instantaneous"
        if p.raw is not None and p.raw != value:
            extra["original_value"] = _exact(p.raw, places)
        if p.edit is not None:
            e = p.edit
            extra["edit"] = EditInfo(user=e.user, at=dt(e.at), reason_code=e.reason_code,
                                     previous_value=None if e.previous_value is None
                                     else dec(e.previous_value, places),
                                     previous_version=e.previous_version, note=e.note)
        if frame_id is not None:
            extra["frame_id"] = frame_id
        return ValidatedReading(
            meter_id=meter.meter_id, register=ch.register, ts=dt(ts), value=value_dec,
            unit=ch.unit, version=p.version,
            quality=QUALITY_NAMES[p.quality],  # type: ignore[arg-type]
            consumption=consumption_dec,
            interval_start=None if start is None else dt(start), intervals=intervals,
            received_at=dt(p.received), validated_at=dt(trigger), dims=dims,
            source=p.source or "vee", **extra)

    def _alerts_for(self, p: Point, old_flags: tuple[str, ...], ch: Channel, meter: MeterInfo,
                    groups: GroupSet, trigger: int, result: StepResult) -> None:
        for flag in p.flags:
            if flag in old_flags:
                continue
            severity = _SEVERITY_BY_RULE.get(flag)
            if severity is None:
                continue
            result.alerts.append(self._alert(meter, ch, p.ts, flag, trigger,
                                             f"rule {flag} fired", severity=severity))
        for flag in p.events:
            if flag in ("tamper", "reverse_flow", "leak") and flag not in p.flags and \
                    not p.version > 1:
                result.alerts.append(self._alert(meter, ch, p.ts, flag, trigger,
                                                 f"the meter reports {flag}",
                                                 severity=_SEVERITY_BY_RULE[flag]))

    def _alert(self, meter: MeterInfo, ch: Channel, ts: int, code: str, at: int, reason: str,
               *, severity: str = "warning") -> Alert:
        return Alert(alert_id=f"vee/{meter.meter_id}/{ch.register}/{ts}/{code}",
                     object_type="meter", object_id=meter.meter_id,
                     severity=severity,  # type: ignore[arg-type]
                     code=f"vee.{code}", reason=reason, ts=dt(at), source=self.producer,
                     attributes={"register": ch.register, "reading_ts": dt(ts).isoformat(),
                                 "account_id": meter.account_id})

    def _late_alert(self, meter: MeterInfo, ch: Channel, ts: int, received: int) -> Alert:
        return self._alert(
            meter, ch, ts, "late_beyond_window", received,
            f"a value for {dt(ts).isoformat()} arrived after the stream's window moved past "
            f"it (horizon {dt(ch.horizon).isoformat()}); run `unimeter vee revalidate` over "
            "its period")

    def _history_request(self, meter: MeterInfo, ch: Channel, start: int, end: int,
                         at: int) -> CommandRequest:
        client_id = f"vee-gap:{meter.meter_id}:{ch.register}:{start}:{end}"
        granularity = "hour" if 0 < ch.interval_s < 86400 else "day"
        return CommandRequest(
            command_id=str(uuid.uuid5(_COMMAND_NS, client_id)), device_id=meter.meter_id,
            command="read_history", requested_by=self.producer, requested_at=dt(at),
            params={"start": dt(start).isoformat(), "end": dt(end).isoformat(),
                    "granularity": granularity},
            client_command_id=client_id, origin="pipeline",
            reason=f"gap in {ch.register} from {dt(start).isoformat()} to "
                   f"{dt(end).isoformat()}: recover the values from the meter's memory")


@lru_cache(maxsize=4096)
def _with_group(dims: Dimensions, group_id: str) -> Dimensions:
    """The dimensions with the VEE group that was applied."""
    if dims.vee_group == group_id:
        return dims
    return msgspec.structs.replace(dims, vee_group=group_id)


def _exact(micro: int | None, places: int) -> Decimal | None:
    """A value with the channel's decimals, or with six when it has more (estimates of
    interval values keep their precision, so they add up exactly)."""
    if micro is None:
        return None
    return dec(micro, places if micro % _POW10[6 - places] == 0 else 6)


def _holds_days(group: CompiledGroup, ch: Channel) -> bool:
    """Whether a day-scope rule applies to the channel (its open day must stay whole)."""
    scopes = group.day_scopes
    if not scopes or ch.kind not in _CONSUMING:
        return False
    return "day" in scopes or ("auto" in scopes and ch.interval_s < 6 * 3600)


def _events_rank(events: tuple[str, ...], flag_ranks: Mapping[str, int]) -> int:
    """The worst action rank among a value's event flags (0 when none has one)."""
    rank = 0
    for flag in events:
        r = flag_ranks.get(flag)
        if r is not None and r > rank:
            rank = r
    return rank


def _region_start(points: list[Point], start: int) -> int:
    """The anchor before ``start`` (or 0): where re-estimation of a hole must begin."""
    lo = start
    while lo > 0 and not _is_anchor(points[lo - 1]):
        lo -= 1
    return max(lo - 1, 0)


def _base_point(ch: Channel) -> Point | None:
    """The newest value that left the window, as the left end of a hole at the window's
    start: it no longer changes, so estimates after it continue from it."""
    if ch.base_value is None:
        return None
    return Point(ts=ch.base_ts, value=ch.base_value, raw=ch.base_value, quality=Q_VALIDATED,
                 method=0, version=0, received=ch.base_ts)


def _is_anchor(p: Point) -> bool:
    if p.value is None:
        return False
    if p.quality in (Q_EDITED, Q_FINAL):
        return True
    return p.raw is not None and not p.rejected and p.quality != Q_ESTIMATED


def _needs_estimate(p: Point, rank: int | None) -> bool:
    if p.quality in (Q_EDITED, Q_FINAL):
        return False
    if p.raw is None:
        return True
    if rank is not None:
        return rank == 2
    return p.rejected or p.quality == Q_ESTIMATED


def _signature(p: Point) -> tuple[Any, ...]:
    return (p.value, p.quality, p.method, p.flags, p.events, p.consumption, p.start,
            p.forward, p.edit, p.rejected)


def _changed_much(before: list[int], after: list[int]) -> bool:
    total = sum(abs(v) for v in before) or 1
    return sum(abs(a - b) for a, b in zip(before, after, strict=True)) * 1000 > total

