"""Local days and day types (weekday, weekend, holiday) in the utility's time zone.

Like-day estimation averages the nearest days *of the same type*; daily checks (spike per
day, high/low, zero consumption) work on local days. Public holidays come from the rule
set's calendar, and so do adjusted working days — in China a weekend day before or after a
long holiday is often a working day (调休), and counts as a weekday here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = ["DayCalendar", "day_of"]

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def day_of(d: date) -> int:
    """A date as a day number (days since 1970-01-01)."""
    return d.toordinal() - _EPOCH_ORDINAL


class DayCalendar:
    """Day numbers and day types in one time zone."""

    def __init__(self, timezone: str = "Asia/Shanghai", holidays: frozenset[int] = frozenset(),
                 workdays: frozenset[int] = frozenset()) -> None:
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self.holidays = holidays
        self.workdays = workdays
        fixed = self._fixed_offset()
        self._fixed = fixed
        self._offset_at = lru_cache(maxsize=65536)(self._offset_uncached)

    def _fixed_offset(self) -> int | None:
        """The zone's offset if it has not changed since 2000 (no DST): the fast path."""
        offsets = set()
        for year in range(2000, 2041, 5):
            for month in (1, 7):
                moment = datetime(year, month, 1, tzinfo=UTC).astimezone(self.zone)
                offset = moment.utcoffset()
                offsets.add(int(offset.total_seconds()) if offset is not None else 0)
        return offsets.pop() if len(offsets) == 1 else None

    def _offset_uncached(self, hour: int) -> int:
        offset = datetime.fromtimestamp(hour * 3600, UTC).astimezone(self.zone).utcoffset()
        return int(offset.total_seconds()) if offset is not None else 0

    def offset(self, ts: int) -> int:
        """UTC offset in seconds at epoch second ``ts``."""
        if self._fixed is not None:
            return self._fixed
        return int(self._offset_at(ts // 3600))

    def day(self, ts: int) -> int:
        """The local day number of epoch second ``ts``."""
        return (ts + self.offset(ts)) // 86400

    def day_start(self, day: int) -> int:
        """Epoch second at which local day ``day`` begins."""
        guess = day * 86400
        return guess - self.offset(guess - 43200)

    def seconds_into_day(self, ts: int) -> int:
        return (ts + self.offset(ts)) % 86400

    def date(self, day: int) -> date:
        return date(1970, 1, 1) + timedelta(days=day)

    def day_type(self, day: int) -> str:
        """``holiday``, ``weekend`` or ``weekday`` (adjusted working days are weekdays)."""
        if day in self.holidays:
            return "holiday"
        if day in self.workdays:
            return "weekday"
        # 1970-01-01 was a Thursday (weekday() == 3)
        return "weekend" if (day + 3) % 7 >= 5 else "weekday"
