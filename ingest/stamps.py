"""Reception time stamps for readings whose frames carry no time (DL/T 645 energy reads,
Modbus polls, service points with ``reading_time: received``).

Strategy: such a reading is keyed (meter, register, *time received*). The platform keys
readings to the whole second downstream (the VEE engine's points, hence
``readings.validated`` and its table, are whole seconds), so two readings of one meter and
register received within the same second — a DTU catching up on a backlog, a poll answered
while an upload arrives, any time-accelerated run — would share a key there, and the second
would be taken for a revision of the first. :class:`ReceptionStamps` therefore stamps
whole seconds and never gives one (meter, register) the same second twice: a reading
received in a second already used for that meter and register gets the next free second
(``received_at`` keeps the true instant, microseconds included). Raw and validated
readings then have the same key, and each reading its own.

Deterministic for a given arrival order; the state is per FEP process and only the last
seconds matter (an older stamp cannot collide with a new one), so it is pruned as it goes.
A meter that moves to another FEP within the same second is not covered (no shared state).
A redelivered frame without time cannot be told from a new report of the same value: it is
stamped anew, as before (the fault oracle counts such rows as duplicates).
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["ReceptionStamps"]

_ONE_SECOND = timedelta(seconds=1)


class ReceptionStamps:
    """Distinct whole-second reception stamps per (meter, register)."""

    def __init__(self, *, prune_above: int = 50_000) -> None:
        self._last: dict[tuple[str, str], datetime] = {}
        self._prune_above = prune_above

    def __len__(self) -> int:
        return len(self._last)

    def stamp(self, meter_id: str, register: str, received_at: datetime) -> datetime:
        """The key time of a reading of ``meter_id``/``register`` received at
        ``received_at``: its whole second, or the next second not yet used for them."""
        second = received_at.replace(microsecond=0)
        key = (meter_id, register)
        last = self._last.get(key)
        if last is not None and second <= last:
            second = last + _ONE_SECOND
        self._last[key] = second
        if len(self._last) > self._prune_above:
            self._prune(received_at.replace(microsecond=0))
        return second

    def _prune(self, now: datetime) -> None:
        # stamps before the current second can never collide with a later one
        self._last = {k: v for k, v in self._last.items() if v >= now}
        if len(self._last) > self._prune_above // 2:  # a burst: keep room to grow
            self._prune_above = 2 * len(self._last)
