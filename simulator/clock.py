"""Simulated time: a start instant and a speed, so a week of meter life runs in minutes.

Strategy: simulated time is a pure function of the monotonic clock — a
:class:`~schemas.timeline.TimeLine` anchored at the clock's creation (or at a given wall-clock
instant); nothing in the simulator reads the wall clock. Meters schedule their reports in
simulated time, the fleet sleeps in real time for ``delta / speed``. ``speed=1`` is real time;
``speed=1440`` runs a day per minute. With ``until``, simulated time slows to real speed from
that instant on (the end of an accelerated run, while the platform catches up). A clock with
``speed=0`` is *manual*: it moves only when :meth:`SimClock.advance` is called (tests).

:meth:`SimClock.wall_timeline` is the same time line on the wall clock, for the FEP's
reception clock (``fep.clock_file``): the platform then says the same "now" as the meters.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.timeline import TimeLine

__all__ = ["SHARE_LEAD_S", "SimClock", "shared_clock", "write_timeline"]


class SimClock:
    def __init__(self, start: datetime | None = None, speed: float = 1.0, *,
                 until: datetime | None = None, wall_anchor: float | None = None) -> None:
        """``wall_anchor``: the wall-clock instant (``time.time()``) at which simulated time
        is ``start`` — may lie ahead (the clock then stands before ``start`` until it comes);
        by default, now."""
        if start is not None and start.tzinfo is None:
            raise ValueError("the simulation start must carry a time zone")
        if speed < 0:
            raise ValueError(f"the simulation speed must be >= 0, not {speed}")
        self.start = start or datetime.now(UTC).replace(microsecond=0)
        self.speed = speed
        self.until = until
        self._manual = timedelta(0)
        anchor = time.monotonic()
        if wall_anchor is not None:
            anchor += wall_anchor - time.time()
        self._line: TimeLine | None = (TimeLine(anchor, self.start, speed, until)
                                       if speed > 0 else None)

    def now(self) -> datetime:
        if self._line is None:
            return self.start + self._manual
        return self._line.at(time.monotonic())

    def current_speed(self) -> float:
        """Simulated seconds per real second now (1 once ``until`` has passed)."""
        if self._line is None:
            return 0.0
        return self._line.speed_at(time.monotonic())

    def set_speed(self, speed: float) -> None:
        """Change the speed of a running clock from now on; simulated time stays continuous.
        A pending ``until`` still applies."""
        if self._line is None or speed <= 0:
            raise RuntimeError("only a running clock changes speed, to a positive one")
        now = time.monotonic()
        at = self._line.at(now)
        until = self.until if self.until is not None and at < self.until else None
        self._line = TimeLine(now, at, speed, until)
        self.speed = speed

    def advance(self, delta: timedelta) -> None:
        """Move a manual clock forward (a running clock moves by itself)."""
        if self._line is not None:
            raise RuntimeError("only a manual clock (speed=0) is advanced by hand")
        self._manual += delta

    def real_seconds(self, simulated: timedelta) -> float:
        """How long to sleep in real time for ``simulated`` to pass (at the current speed)."""
        speed = self.current_speed()
        if speed == 0:
            return 0.0
        return max(0.0, simulated.total_seconds() / speed)

    def starts_in(self) -> float:
        """Real seconds until simulated time reaches ``start`` (0 once it has)."""
        if self._line is None:
            return 0.0
        return max(0.0, self._line.anchor - time.monotonic())

    def elapsed(self) -> timedelta:
        return self.now() - self.start

    def wall_timeline(self) -> TimeLine:
        """This clock's time line on the wall clock (``time.time()`` seconds), for other
        processes; a manual clock has none."""
        if self._line is None:
            raise RuntimeError("a manual clock (speed=0) has no time line to share")
        return self._line.rebased(time.time() - time.monotonic())


def write_timeline(path: Path, line: TimeLine) -> None:
    """Write ``line`` (on the wall clock) for an FEP's ``fep.clock_file``, atomically: the
    FEP never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(line.to_json(), encoding="utf-8")
    os.replace(tmp, path)


#: How long before a shared clock starts its time line is written: the FEP checks its clock
#: file twice a second, so it has the line before the fleet's first frame.
SHARE_LEAD_S = 2.0


def shared_clock(path: Path, start: datetime, speed: float, *, until: datetime | None = None,
                 lead_s: float = SHARE_LEAD_S) -> SimClock:
    """A running clock that reaches ``start`` ``lead_s`` from now, its time line written to
    ``path`` (an FEP's ``fep.clock_file``). Start the fleet after ``clock.starts_in()``."""
    clock = SimClock(start, speed, until=until, wall_anchor=time.time() + lead_s)
    write_timeline(path, clock.wall_timeline())
    return clock
