"""Tier cycles: the year or month over which step-tariff volume accumulates.

A step tariff's tier position is the account's volume since the start of the current cycle
(Beijing gas: per household per calendar year). The cycle is annual or monthly and starts on
a configured month and day (``cycle_start_month``/``cycle_start_day``, day 1–28 so that every
month has it), at local midnight in the utility's time zone.

Strategy: :class:`CycleRule` finds the cycle that contains an instant by converting it to
local time once; the last cycle found is cached, because consecutive readings of an account
almost always fall in the same cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = ["Cycle", "CycleRule", "local_midnight"]


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The instant local ``day`` starts in ``tz`` (an aware datetime)."""
    return datetime.combine(day, time(0), tzinfo=tz)


@dataclass(frozen=True, slots=True)
class Cycle:
    """One tier cycle ``[start, end)``; ``cycle_id`` names it (``2026``, ``2026-07``,
    ``2026-04-15``)."""

    cycle_id: str
    start: datetime
    end: datetime


@dataclass(eq=False)
class CycleRule:
    """Annual or monthly cycles starting on ``start_month``/``start_day`` at local midnight."""

    kind: Literal["year", "month"]
    start_month: int
    start_day: int
    tz: ZoneInfo
    _last: Cycle | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("year", "month"):
            raise ValueError(f"cycle must be 'year' or 'month', not {self.kind!r}")
        if not 1 <= self.start_month <= 12:
            raise ValueError(f"cycle start month {self.start_month} is not 1–12")
        if not 1 <= self.start_day <= 28:
            raise ValueError(f"cycle start day {self.start_day} is not 1–28 (every month must "
                             "have it)")

    def same_as(self, other: CycleRule) -> bool:
        return (self.kind, self.start_month, self.start_day, self.tz.key) == (
            other.kind, other.start_month, other.start_day, other.tz.key)

    def cycle_at(self, ts: datetime) -> Cycle:
        """The cycle that contains instant ``ts``."""
        last = self._last
        if last is not None and last.start <= ts < last.end:
            return last
        local = ts.astimezone(self.tz).date()
        if self.kind == "year":
            start = date(local.year, self.start_month, self.start_day)
            if local < start:
                start = date(local.year - 1, self.start_month, self.start_day)
            end = date(start.year + 1, self.start_month, self.start_day)
            cycle_id = (str(start.year) if (self.start_month, self.start_day) == (1, 1)
                        else start.isoformat())
        else:
            start = date(local.year, local.month, self.start_day)
            if local < start:
                start = _add_months(start, -1)
            end = _add_months(start, 1)
            cycle_id = (f"{start.year}-{start.month:02d}" if self.start_day == 1
                        else start.isoformat())
        # Bounds in UTC: comparing aware datetimes of one fixed zone is far cheaper than
        # asking a ZoneInfo for its offset on every comparison.
        cycle = Cycle(cycle_id, local_midnight(start, self.tz).astimezone(UTC),
                      local_midnight(end, self.tz).astimezone(UTC))
        self._last = cycle
        return cycle


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, day.day)
