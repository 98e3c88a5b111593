"""A simulated time line: how a time-accelerated run maps real time to simulated time.

A demo runs days of meter life in minutes. The simulated meters stamp their readings with
their own (simulated) clocks; the platform, left alone, would stamp reception with the real
clock — days apart from the meters' clocks. Every meter clock would then be flagged as
drifting by days, and readings whose frames carry no time (DL/T 645 energy registers, Modbus
polls) would all land in the few real minutes the run took, with days of consumption in one
hour. So the simulator and the FEP share one time line: the simulator's clock follows it, and
the FEP's reception clock (``fep.clock_file``) follows it, and both say the same "now".

The time line is linear: at real instant ``anchor`` (seconds in some time base — the wall
clock, ``time.time()``, in a file; the monotonic clock inside the simulator), simulated time
is ``start``, and it runs ``speed`` times faster than real time. From simulated instant
``until`` on (if set), it runs at real speed: the end of an accelerated run slows down while
the platform catches up, so no meter clock runs ahead into the real future.

Pure: :meth:`TimeLine.at` is given the real instant; nothing here reads a clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.errors import ConfigurationError

__all__ = ["TimeLine"]


@dataclass(frozen=True, slots=True)
class TimeLine:
    #: real instant (seconds, in the time base of whoever evaluates :meth:`at`)
    anchor: float
    #: simulated time at ``anchor`` (time-zone aware)
    start: datetime
    #: simulated seconds per real second, > 0
    speed: float
    #: from this simulated instant on, simulated time runs at real speed
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("the time line's start must carry a time zone")
        if not self.speed > 0:
            raise ValueError(f"the time line's speed must be > 0, not {self.speed}")
        if self.until is not None:
            if self.until.tzinfo is None:
                raise ValueError("the time line's 'until' must carry a time zone")
            if self.until < self.start:
                raise ValueError("the time line's 'until' lies before its start")

    def at(self, real: float) -> datetime:
        """Simulated time at real instant ``real`` (same time base as ``anchor``)."""
        return self.start + timedelta(seconds=self.simulated_seconds(real))

    def simulated_seconds(self, real: float) -> float:
        """Simulated seconds from ``start`` to real instant ``real``."""
        elapsed = real - self.anchor
        simulated = elapsed * self.speed
        if self.until is not None:
            cap = (self.until - self.start).total_seconds()
            if simulated > cap:  # past `until`: the rest runs at real speed
                simulated = cap + (elapsed - cap / self.speed)
        return simulated

    def speed_at(self, real: float) -> float:
        """Simulated seconds per real second at real instant ``real``."""
        if self.until is not None and self.at(real) >= self.until:
            return 1.0
        return self.speed

    def rebased(self, offset: float) -> TimeLine:
        """The same time line in another time base: ``offset`` = other base − this base
        (e.g. ``time.time() - time.monotonic()`` from monotonic to wall-clock seconds)."""
        return TimeLine(anchor=self.anchor + offset, start=self.start, speed=self.speed,
                        until=self.until)

    # ------------------------------------------------------------------ file form

    def to_json(self) -> str:
        """The file form; ``anchor`` must then be wall-clock seconds (``time.time()``)."""
        return json.dumps({"anchor_unix_s": self.anchor, "start": self.start.isoformat(),
                           "speed": self.speed,
                           "until": self.until.isoformat() if self.until else None}) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "time line") -> TimeLine:
        """Parse :meth:`to_json`'s form; raises :class:`ConfigurationError` naming what is
        wrong and where."""
        hint = ("the file is written by `unimeter demo` for its FEP; delete it (or unset "
                "fep.clock_file) to stamp reception with the real clock")
        try:
            doc: Any = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
            missing = {"anchor_unix_s", "start", "speed"} - doc.keys()
            if missing:
                raise ValueError(f"missing {', '.join(sorted(missing))}")
            until = doc.get("until")
            return cls(anchor=float(doc["anchor_unix_s"]),
                       start=datetime.fromisoformat(str(doc["start"])),
                       speed=float(doc["speed"]),
                       until=datetime.fromisoformat(str(until)) if until else None)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"not a simulated time line: {exc}", where=source,
                                     hint=hint) from exc
