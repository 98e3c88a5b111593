"""Time-of-use schedules and real-time price feeds: the price of each instant.

A ``tou`` tariff (``LedgerTariff.kind == "tou"``) prices consumption by the period of the
local day it falls in; its ``tou`` mapping reads::

    periods:                    # price per period; optionally split into components
      peak:   "1.20"
      flat:   {price: "0.80", components: {energy: "0.70", network: "0.10"}}
      valley: "0.40"
    schedule:                   # local time-of-day ranges; the first matching entry wins
      - {from: "08:00", to: "12:00", period: peak, days: [mon, tue, wed, thu, fri],
         months: [6, 7, 8]}
      - {from: "22:00", to: "06:00", period: valley}      # ranges may wrap midnight
      - {from: "00:00", to: "24:00", period: flat}
    holidays: ["2026-10-01"]    # dates that match ``days: [holiday]`` entries

Every minute of every day type of every month must be covered (checked when the tariff is
loaded, so a gap is a tariff error, not a billing failure at 3 a.m.).

A ``realtime`` tariff carries a price per interval from a price feed, usually one tariff
version per published day (``effective_from``/``effective_to`` the day)::

    interval_minutes: 60
    prices: {"2026-07-10T00:00:00+08:00": "0.52", "2026-07-10T01:00:00+08:00": "0.49"}
    fallback_price: "0.60"      # optional: used for an interval without a price

Strategy: both kinds answer one question, :meth:`stretches` — the constant-price stretches
that cover ``[start, end)`` — so the pricing code splits consumption at their boundaries and
prorates it by time, whatever the schedule. TOU day tables are compiled once per
(month, day type).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from billing.money import to_decimal

__all__ = ["PeriodPrice", "RealtimePrices", "Stretch", "TouSchedule"]

_DAY_NAMES = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6,
              "holiday": 7}
_MINUTES_PER_DAY = 1440


@dataclass(frozen=True, slots=True)
class PeriodPrice:
    """The price of one period (or real-time interval) and its components (name → price)."""

    name: str
    price: Decimal
    components: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True, slots=True)
class Stretch:
    """``[start, end)`` at one constant price."""

    start: datetime
    end: datetime
    price: PeriodPrice


def _parse_price(name: str, spec: Any, where: str) -> PeriodPrice:
    if isinstance(spec, Mapping):
        if "price" not in spec:
            raise ValueError(f"{where}: period '{name}' needs a price")
        price = to_decimal(spec["price"])
        raw = spec.get("components") or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: components of period '{name}' must be a mapping")
        components = tuple((str(k), to_decimal(v)) for k, v in raw.items())
        if components and sum(p for _, p in components) != price:
            raise ValueError(f"{where}: components of period '{name}' sum to "
                             f"{sum(p for _, p in components)}, not its price {price}")
        return PeriodPrice(name, price, components)
    return PeriodPrice(name, to_decimal(spec))


_ALL_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _day_number(name: Any, where: str) -> int:
    text = str(name).lower()
    key = text if text == "holiday" else text[:3]
    if key not in _DAY_NAMES:
        raise ValueError(f"{where}: unknown day {name!r}; use mon … sun or holiday")
    return _DAY_NAMES[key]


def _parse_minute(text: Any, where: str) -> int:
    try:
        hours, minutes = str(text).split(":")
        value = int(hours) * 60 + int(minutes)
    except ValueError:
        raise ValueError(f"{where}: time {text!r} is not HH:MM") from None
    if not 0 <= value <= _MINUTES_PER_DAY or not 0 <= int(minutes) < 60:
        raise ValueError(f"{where}: time {text!r} is not between 00:00 and 24:00")
    return value


@dataclass(frozen=True, slots=True)
class _Rule:
    start_min: int
    end_min: int
    period: str
    days: frozenset[int]
    months: frozenset[int]


class TouSchedule:
    """A time-of-use schedule: periods with prices, and which local minutes they cover."""

    def __init__(self, spec: Mapping[str, Any], tz: ZoneInfo, where: str = "tou") -> None:
        self.tz = tz
        periods = spec.get("periods")
        if not isinstance(periods, Mapping) or not periods:
            raise ValueError(f"{where}: 'periods' must map period names to prices")
        self.periods = {str(n): _parse_price(str(n), p, where) for n, p in periods.items()}
        entries = spec.get("schedule")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{where}: 'schedule' must list time ranges")
        self.holidays = frozenset(date.fromisoformat(str(d)) for d in spec.get("holidays", ()))
        rules: list[_Rule] = []
        for index, entry in enumerate(entries):
            at = f"{where}.schedule[{index}]"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{at}: expected a mapping with from, to, period")
            period = str(entry.get("period", ""))
            if period not in self.periods:
                raise ValueError(f"{at}: unknown period {period!r}; known: "
                                 f"{', '.join(self.periods)}")
            start = _parse_minute(entry.get("from"), at)
            end = _parse_minute(entry.get("to"), at)
            days = frozenset(_day_number(d, at) for d in entry.get("days", _ALL_DAYS))
            months = frozenset(int(m) for m in entry.get("months", range(1, 13)))
            if not months <= frozenset(range(1, 13)):
                raise ValueError(f"{at}: months must be 1–12")
            if start == end:
                raise ValueError(f"{at}: empty range {entry.get('from')}–{entry.get('to')}")
            if start < end:
                rules.append(_Rule(start, end, period, days, months))
            else:  # wraps midnight
                rules.append(_Rule(start, _MINUTES_PER_DAY, period, days, months))
                rules.append(_Rule(0, end, period, days, months))
        self._rules = tuple(rules)
        uses_holidays = any(7 in r.days for r in rules)
        self._tables: dict[tuple[int, int], tuple[list[int], list[int], list[PeriodPrice]]] = {}
        for month in range(1, 13):
            for day_type in range(8 if uses_holidays else 7):
                self._tables[(month, day_type)] = self._compile(month, day_type, where)
        self._uses_holidays = uses_holidays

    def _compile(self, month: int, day_type: int,
                 where: str) -> tuple[list[int], list[int], list[PeriodPrice]]:
        matching = [r for r in self._rules if month in r.months and day_type in r.days]
        if day_type == 7 and not matching:
            raise ValueError(f"{where}: holidays are used but not covered in month {month}")
        cuts = sorted({0, _MINUTES_PER_DAY} | {r.start_min for r in matching}
                      | {r.end_min for r in matching})
        starts: list[int] = []
        ends: list[int] = []
        prices: list[PeriodPrice] = []
        for lo, hi in itertools.pairwise(cuts):
            rule = next((r for r in matching if r.start_min <= lo and hi <= r.end_min), None)
            if rule is None:
                day = next(n for n, i in _DAY_NAMES.items() if i == day_type)
                raise ValueError(f"{where}: no period covers {lo // 60:02d}:{lo % 60:02d}–"
                                 f"{hi // 60:02d}:{hi % 60:02d} on {day} in month {month}")
            price = self.periods[rule.period]
            if prices and prices[-1] is price:
                ends[-1] = hi
            else:
                starts.append(lo)
                ends.append(hi)
                prices.append(price)
        return starts, ends, prices

    def _table(self, day: date) -> tuple[list[int], list[int], list[PeriodPrice]]:
        day_type = 7 if self._uses_holidays and day in self.holidays else day.weekday()
        return self._tables[(day.month, day_type)]

    def price_at(self, ts: datetime) -> PeriodPrice:
        local = ts.astimezone(self.tz)
        starts, _, prices = self._table(local.date())
        minute = local.hour * 60 + local.minute
        return prices[bisect.bisect_right(starts, minute) - 1]

    def stretches(self, start: datetime, end: datetime) -> Iterator[Stretch]:
        """Constant-price stretches covering ``[start, end)`` (one, at ``start``, if empty)."""
        if end <= start:
            yield Stretch(start, end, self.price_at(start))
            return
        cursor = start
        while cursor < end:
            local = cursor.astimezone(self.tz)
            day = local.date()
            starts, ends, prices = self._table(day)
            index = bisect.bisect_right(starts, local.hour * 60 + local.minute) - 1
            stop_min = ends[index]
            stop = (datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.tz)
                    if stop_min == _MINUTES_PER_DAY
                    else datetime.combine(day, time(stop_min // 60, stop_min % 60),
                                          tzinfo=self.tz))
            stop = min(stop, end)
            yield Stretch(cursor, stop, prices[index])
            cursor = stop


def _iso_utc(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


class RealtimePrices:
    """Interval prices from a price feed, aligned on the UTC epoch."""

    def __init__(self, spec: Mapping[str, Any], where: str = "tou") -> None:
        minutes = spec.get("interval_minutes", 60)
        if not isinstance(minutes, int) or minutes <= 0 or 1440 % minutes:
            raise ValueError(f"{where}: interval_minutes must divide a day, not {minutes!r}")
        self.interval_s = minutes * 60
        raw = spec.get("prices")
        if isinstance(raw, list):
            try:
                raw = {item["start"]: item["price"] for item in raw}
            except (TypeError, KeyError):
                raise ValueError(f"{where}: prices as a list need start and price") from None
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: 'prices' must map interval starts to prices")
        self.prices: dict[int, PeriodPrice] = {}
        for key, value in raw.items():
            start = key if isinstance(key, datetime) else datetime.fromisoformat(str(key))
            if start.tzinfo is None:
                raise ValueError(f"{where}: interval start {key!r} needs a UTC offset")
            epoch = int(start.timestamp())
            if epoch % self.interval_s:
                raise ValueError(f"{where}: interval start {key!r} is not on a "
                                 f"{minutes}-minute boundary")
            self.prices[epoch] = PeriodPrice(_iso_utc(start), to_decimal(value))
        fallback = spec.get("fallback_price")
        self.fallback = None if fallback is None else to_decimal(fallback)

    def price_at(self, ts: datetime) -> PeriodPrice | None:
        epoch = int(ts.timestamp()) // self.interval_s * self.interval_s
        found = self.prices.get(epoch)
        if found is None and self.fallback is not None:
            return PeriodPrice(_iso_utc(datetime.fromtimestamp(epoch, UTC)), self.fallback)
        return found

    def stretches(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime,
                                                                          PeriodPrice | None]]:
        """Interval stretches covering ``[start, end)``; the price is None where the feed has
        none (the caller raises :class:`~billing.errors.NoPriceError` with its context)."""
        if end <= start:
            yield start, end, self.price_at(start)
            return
        step = timedelta(seconds=self.interval_s)
        epoch = int(start.timestamp()) // self.interval_s * self.interval_s
        cursor = start
        boundary = datetime.fromtimestamp(epoch, UTC) + step
        while cursor < end:
            stop = min(boundary, end)
            yield cursor, stop, self.price_at(cursor)
            cursor = stop
            boundary += step
