"""Daily settlement and the monthly and yearly bills built from it.

Every charge and adjustment of an account is settled on one local day (the utility's time
zone): the day that contains the last instant of its consumption period (a daily read for
10 July, ``[10 Jul 00:00, 11 Jul 00:00)``, settles on 10 July). Days roll up into calendar
months and years — the monthly and yearly bills of meters without billing functions.

A period stays *open* while its consumption can still grow in the normal course: it is
closed, and its first revision published, when the account's first charge for a later day
arrives (every period ending by that day's start closes) or when the clock passes its end
plus a grace time (:meth:`Settler.close_due`, called by the agent's timer). A charge that
lands in an already closed period — a late reading, a new version of a reading, an actual
read replacing an estimate — publishes the period's next revision at once: corrections
revise, they never rewrite. A period is ``provisional`` while it holds estimated volume.

Settlement amounts are sums of the charges' rounded segments, never re-rounded, so a bill
always equals the charges it settles.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from billing.cycles import local_midnight as _local_midnight
from billing.state import AccountState, PeriodAccumulator, SegmentTotal
from schemas.messages import Charge, ChargeSegment, Settlement

__all__ = ["Settler"]

_EPSILON = timedelta(microseconds=1)
Period = Literal["day", "month", "year"]


@dataclass(frozen=True, slots=True)
class _PeriodRef:
    period: Period
    period_id: str
    start: datetime
    end: datetime


class Settler:
    """Keeps the open settlement periods of accounts and publishes their revisions."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._days: dict[date, tuple[_PeriodRef, _PeriodRef, _PeriodRef]] = {}
        self._last: tuple[_PeriodRef, _PeriodRef, _PeriodRef] | None = None

    def periods_of(self, ts: datetime) -> tuple[_PeriodRef, _PeriodRef, _PeriodRef]:
        """The local day, month and year that contain instant ``ts``."""
        last = self._last
        if last is not None and last[0].start <= ts < last[0].end:
            return last
        day = ts.astimezone(self.tz).date()
        found = self._days.get(day)
        if found is None:
            tz = self.tz

            def local_midnight(day: date, tz: ZoneInfo = tz) -> datetime:
                return _local_midnight(day, tz).astimezone(UTC)

            next_day = day + timedelta(days=1)
            month = date(day.year, day.month, 1)
            next_month = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            found = (
                _PeriodRef("day", day.isoformat(), local_midnight(day, tz),
                           local_midnight(next_day, tz)),
                _PeriodRef("month", f"{day.year}-{day.month:02d}", local_midnight(month, tz),
                           local_midnight(next_month, tz)),
                _PeriodRef("year", str(day.year), local_midnight(date(day.year, 1, 1), tz),
                           local_midnight(date(day.year + 1, 1, 1), tz)),
            )
            if len(self._days) > 4096:
                self._days.clear()
            self._days[day] = found
        self._last = found
        return found

    def settlement_instant(self, charge: Charge) -> datetime:
        """The instant whose local day a charge settles on."""
        end = charge.period_end
        return end - _EPSILON if end > charge.period_start else end

    def post(self, state: AccountState, charge: Charge, estimated_volume: Decimal,
             balance_after: Decimal | None, closed: MutableMapping[str, PeriodAccumulator],
             now: datetime) -> tuple[str, list[Settlement]]:
        """Add ``charge`` to its day; returns the day's key and the settlements to publish
        (periods it closed, and revisions of closed periods).

        An open day alone takes the charge — its month and year receive the day's totals
        when it closes. A charge for an already closed day goes to the day, its month and
        its year at once, publishing a revision of each closed one."""
        day_ref, month_ref, year_ref = self.periods_of(self.settlement_instant(charge))
        out: list[Settlement] = []
        boundary = day_ref.start
        for open_acc in state.open_periods.values():
            if open_acc.end <= boundary:  # something ended: close all that did
                out = self.close_before(state, boundary, closed, now)
                break
        account_id = state.account_id
        day_key = f"{account_id}|day|{day_ref.period_id}"
        day = state.open_periods.get(day_key)
        if day is not None:
            _add_charge(day, charge, estimated_volume, balance_after)
            return day_key, out
        day = closed.get(day_key)
        if day is None:  # a new open day (and its month and year, if not yet open)
            day = self._new(state, day_ref, charge.currency)
            state.open_periods[day_key] = day
            for ref in (month_ref, year_ref):
                key = f"{account_id}|{ref.period}|{ref.period_id}"
                if key not in state.open_periods and key not in closed:
                    state.open_periods[key] = self._new(state, ref, charge.currency)
            _add_charge(day, charge, estimated_volume, balance_after)
            return day_key, out
        # a correction or late charge for a settled day: revise the day, month and year
        for ref in (day_ref, month_ref, year_ref):
            key = f"{account_id}|{ref.period}|{ref.period_id}"
            acc = state.open_periods.get(key) or closed.get(key) or self._new(
                state, ref, charge.currency)
            _add_charge(acc, charge, estimated_volume, balance_after)
            if acc.closed or key not in state.open_periods:
                acc.closed = True
                acc.revision += 1
                closed[key] = acc
                out.append(_settlement(acc, now))
        return day_key, out

    @staticmethod
    def _new(state: AccountState, ref: _PeriodRef, currency: str) -> PeriodAccumulator:
        return PeriodAccumulator(account_id=state.account_id, period=ref.period,
                                 period_id=ref.period_id, start=ref.start, end=ref.end,
                                 currency=currency)

    def close_before(self, state: AccountState, boundary: datetime,
                     closed: MutableMapping[str, PeriodAccumulator],
                     now: datetime) -> list[Settlement]:
        """Close every open period of the account that ends by ``boundary``: days first (each
        rolled into its month and year), then months, then years, each in time order."""
        ended = [acc for acc in state.open_periods.values() if acc.end <= boundary]
        if len(ended) > 1:
            ended.sort(key=_closing_order)
        out: list[Settlement] = []
        for acc in ended:
            key = acc.key
            del state.open_periods[key]
            acc.closed = True
            acc.revision += 1
            closed[key] = acc
            out.append(_settlement(acc, now))
            if acc.period == "day":
                out.extend(self._roll_up(state, acc, closed, now))
        return out

    def _roll_up(self, state: AccountState, day: PeriodAccumulator,
                 closed: MutableMapping[str, PeriodAccumulator],
                 now: datetime) -> list[Settlement]:
        """Add a closed day's totals to its month and year (revising them if closed)."""
        out = []
        month_id = day.period_id[:7]  # "2026-07-10" -> "2026-07", "2026"
        for period, period_id in (("month", month_id), ("year", month_id[:4])):
            key = f"{day.account_id}|{period}|{period_id}"
            acc = state.open_periods.get(key)
            if acc is None:
                acc = closed.get(key)
            if acc is None:
                ref = self.periods_of(day.start)[1 if period == "month" else 2]
                acc = self._new(state, ref, day.currency)
                state.open_periods[key] = acc
            _add_totals(acc, day)
            if acc.closed:
                acc.revision += 1
                closed[key] = acc
                out.append(_settlement(acc, now))
        return out

    def close_due(self, state: AccountState, now: datetime, grace: timedelta,
                  closed: MutableMapping[str, PeriodAccumulator]) -> list[Settlement]:
        """Close the periods whose end plus ``grace`` has passed (the agent's daily timer)."""
        return self.close_before(state, now - grace, closed, now)


_RANK = {"day": 0, "month": 1, "year": 2}


def _closing_order(acc: PeriodAccumulator) -> tuple[int, datetime]:
    return _RANK[acc.period], acc.end


def _add_charge(acc: PeriodAccumulator, charge: Charge, estimated_volume: Decimal,
                balance_after: Decimal | None) -> None:
    acc.volume += charge.volume
    acc.amount += charge.amount
    if estimated_volume:
        acc.estimated_volume += estimated_volume
    acc.charges += 1
    if charge.meter_id and charge.meter_id not in acc.meters:
        acc.meters = (*acc.meters, charge.meter_id)
    if charge.tariff_id:
        acc.tariff_id = charge.tariff_id
    if charge.cycle_id:
        acc.cycle_id = charge.cycle_id
        acc.cycle_volume_after = charge.cycle_volume_after
    if balance_after is not None:
        acc.balance_after = balance_after
    if charge.segments:
        acc.segments = _add_segments(acc.segments, charge.segments)


def _add_totals(acc: PeriodAccumulator, day: PeriodAccumulator) -> None:
    acc.volume += day.volume
    acc.amount += day.amount
    acc.estimated_volume += day.estimated_volume
    acc.charges += day.charges
    for meter_id in day.meters:
        if meter_id not in acc.meters:
            acc.meters = (*acc.meters, meter_id)
    if day.tariff_id:
        acc.tariff_id = day.tariff_id
    if day.cycle_id:
        acc.cycle_id, acc.cycle_volume_after = day.cycle_id, day.cycle_volume_after
    if day.balance_after is not None:
        acc.balance_after = day.balance_after
    acc.segments = _add_segments(acc.segments, day.segments)


def _add_segments(totals: tuple[SegmentTotal, ...],
                  segments: Iterable[ChargeSegment | SegmentTotal]) -> tuple[SegmentTotal, ...]:
    """Add segments into running totals: in place for a key already there, a longer tuple
    for a new one (a period holds a handful of keys)."""
    for s in segments:
        for t in totals:
            if (t.tier == s.tier and t.unit_price == s.unit_price and t.component == s.component
                    and t.period == s.period and t.tariff_version == s.tariff_version
                    and t.tariff_id == s.tariff_id):
                t.volume += s.volume
                t.amount += s.amount
                break
        else:
            totals = (*totals, SegmentTotal(s.tariff_id, s.tariff_version, s.tier, s.component,
                                            s.period, s.unit_price, s.volume, s.amount))
    return totals


def _settlement(acc: PeriodAccumulator, now: datetime) -> Settlement:
    """The next revision of a period, as published (segments merged)."""
    return Settlement(
        settlement_id=f"{acc.account_id}:{acc.period}:{acc.period_id}",
        account_id=acc.account_id, period=acc.period, period_id=acc.period_id,
        period_start=acc.start, period_end=acc.end, revision=acc.revision, volume=acc.volume,
        amount=acc.amount, currency=acc.currency, estimated_volume=acc.estimated_volume,
        provisional=acc.estimated_volume > 0,
        segments=tuple(ChargeSegment(tier=t.tier, volume=t.volume, unit_price=t.unit_price,
                                     amount=t.amount, component=t.component,
                                     tariff_id=t.tariff_id, tariff_version=t.tariff_version,
                                     period=t.period)
                       for t in acc.segments if t.volume or t.amount),
        charges=acc.charges, meters=acc.meters, tariff_id=acc.tariff_id,
        cycle_id=acc.cycle_id, cycle_volume_after=acc.cycle_volume_after,
        balance_after=acc.balance_after, created_at=now)
