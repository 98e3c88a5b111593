"""The FEP's reception clock: what the FEP calls "now" for the data it receives and sends.

In production it is the real clock (UTC). A time-accelerated simulation (``unimeter demo``)
gives the FEP the simulator's time line in a small file (``fep.clock_file``, see
:mod:`schemas.timeline`): reception times, the times of frames sent, device events and the
stamps of readings whose frames carry no time then follow the simulated clock, so a meter
clock that is right is not flagged as drifting by days, and a DL/T 645 or Modbus reading
lands on the simulated day it was taken. Deadlines, retries, command expiry and the session
registry's liveness stay on the real clock.

The file is looked at when the FEP starts and then every ``check_every_s``; a change is
picked up (a new run writes a new line), a removed file returns the FEP to the real clock,
and a file that cannot be read is reported once and ignored — bad input never stops the FEP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from schemas.errors import ConfigurationError
from schemas.timeline import TimeLine

__all__ = ["ReceptionClock", "utc_now"]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The real clock (UTC): the default "now" of whatever has no reception clock."""
    return datetime.now(UTC)


class ReceptionClock:
    def __init__(self, path: Path | None = None, *, check_every_s: float = 0.5) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self.line: TimeLine | None = None
        self.error: str | None = None
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file loaded

    def now(self) -> datetime:
        line = self.line
        if line is None:
            return datetime.now(UTC)
        return line.at(time.time())

    @property
    def simulated(self) -> bool:
        return self.line is not None

    def check(self) -> None:
        """Load the file if it appeared or changed; forget it if it went away."""
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self.line is not None:
                log.warning("reception clock: %s is gone; back to the real clock", self.path)
            self.line, self._seen, self.error = None, None, None
            return
        except OSError as exc:
            self._report(f"cannot read {self.path}: {exc}")
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            line = TimeLine.from_json(self.path.read_text(encoding="utf-8"), source=str(self.path))
        except (OSError, UnicodeDecodeError) as exc:
            self._report(f"cannot read {self.path}: {exc}")
            return
        except ConfigurationError as exc:
            self._report(str(exc))
            return
        self.line, self.error = line, None
        until = f", real speed from {line.until.isoformat()}" if line.until else ""
        log.warning("reception clock: SIMULATED time from %s (%s at %s, %gx%s); not for a "
                    "real fleet", self.path, line.start.isoformat(),
                    datetime.fromtimestamp(line.anchor, UTC).isoformat(), line.speed, until)

    def _report(self, error: str) -> None:
        if error != self.error:
            log.error("reception clock: %s; keeping the %s clock", error,
                      "simulated" if self.line is not None else "real")
        self.error = error

    async def watch(self) -> None:
        """Check the file every ``check_every_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.check_every_s)
            self.check()
