"""Simulated time: a start instant and a speed, so a week of meter life runs in minutes.

Strategy: simulated time is a pure function of the monotonic clock,
``start + (monotonic() - t0) * speed``; nothing in the simulator reads the wall clock. Meters
schedule their reports in simulated time, the fleet sleeps in real time for
``delta / speed``. ``speed=1`` is real time; ``speed=1440`` runs a day per minute. A clock
with ``speed=0`` is *manual*: it moves only when :meth:`SimClock.advance` is called (tests).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

__all__ = ["SimClock"]


class SimClock:
    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("the simulation start must carry a time zone")
        self.start = start or datetime.now(UTC).replace(microsecond=0)
        self.speed = speed
        self._t0 = time.monotonic()
        self._manual = timedelta(0)
        self._offset = timedelta(0)  # simulated time passed before the last speed change

    def now(self) -> datetime:
        if self.speed == 0:
            return self.start + self._manual
        return self.start + self._offset + timedelta(
            seconds=(time.monotonic() - self._t0) * self.speed)

    def set_speed(self, speed: float) -> None:
        """Change the speed of a running clock from now on; simulated time stays continuous
        (the end of an accelerated run slows to real time while the platform catches up)."""
        if self.speed == 0 or speed <= 0:
            raise RuntimeError("only a running clock changes speed, to a positive one")
        self._offset = self.now() - self.start
        self._t0 = time.monotonic()
        self.speed = speed

    def advance(self, delta: timedelta) -> None:
        """Move a manual clock forward (a running clock moves by itself)."""
        if self.speed != 0:
            raise RuntimeError("only a manual clock (speed=0) is advanced by hand")
        self._manual += delta

    def real_seconds(self, simulated: timedelta) -> float:
        """How long to sleep in real time for ``simulated`` to pass."""
        if self.speed == 0:
            return 0.0
        return max(0.0, simulated.total_seconds() / self.speed)

    def elapsed(self) -> timedelta:
        return self.now() - self.start
