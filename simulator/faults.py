"""Fault injection: what goes wrong in a real meter network, on demand or at random rates.

Strategy: a :class:`FaultPlan` holds a probability per fault kind (applied per report, per
frame or per link step as the kind says) and a queue of *forced* faults (``inject``), which
tests and the simulator's control port use to make one thing happen to one target now. The
fleet asks the plan at each decision point (``should(kind, target)``); every fault that fires
is written to the simulator log, so the oracle knows what was done on purpose.

=============  ==========================================================================
kind           effect
=============  ==========================================================================
missing        a meter skips a report (the reading is never sent)
spike          one report carries a value far above the true register (then back)
rollback       one report carries a value below the previous report
rollover       the register is put just below its maximum, so it wraps to zero soon
clock_drift    the meter's clock runs away (minutes per day) — reported times drift
duplicate      an upload is sent twice
garbage        random bytes are written into the link between frames
corrupt        a frame is sent with a flipped bit (bad checksum: it must be rejected)
disconnect     the link is dropped (sometimes in the middle of a frame) and comes back
=============  ==========================================================================
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["FAULT_KINDS", "FaultPlan", "parse_fault_spec"]

FAULT_KINDS = ("missing", "spike", "rollback", "rollover", "clock_drift", "duplicate",
               "garbage", "corrupt", "disconnect")


def parse_fault_spec(text: str) -> dict[str, float]:
    """``"spike=0.001,disconnect=0.0005"`` → rates; raises ``ValueError`` naming the problem."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if name not in FAULT_KINDS:
            raise ValueError(f"unknown fault '{name}' (known: {', '.join(FAULT_KINDS)})")
        try:
            rate = float(value) if sep else 0.01
        except ValueError:
            raise ValueError(f"fault rate '{value}' of {name} is not a number") from None
        if not 0 <= rate <= 1:
            raise ValueError(f"fault rate of {name} must be between 0 and 1, not {rate}")
        rates[name] = rate
    return rates


@dataclass
class FaultPlan:
    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 1
    fired: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _forced: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def inject(self, kind: str, target: str = "*", count: int = 1) -> None:
        """Make ``kind`` happen to ``target`` (a meter id, link id, or ``*`` for the next one)
        at its next opportunity, ``count`` times."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault '{kind}' (known: {', '.join(FAULT_KINDS)})")
        self._forced[(kind, target)] += count

    def set_rate(self, kind: str, rate: float) -> None:
        parse_fault_spec(f"{kind}={rate}")
        self.rates[kind] = rate

    def should(self, kind: str, *targets: str) -> bool:
        for target in (*targets, "*"):
            key = (kind, target)
            if self._forced.get(key):
                self._forced[key] -= 1
                if not self._forced[key]:
                    del self._forced[key]
                self.fired[kind] += 1
                return True
        rate = self.rates.get(kind, 0.0)
        if rate and self._rng.random() < rate:
            self.fired[kind] += 1
            return True
        return False

    def pending(self) -> dict[str, int]:
        return {f"{k}:{t}": n for (k, t), n in self._forced.items()}

    @property
    def rng(self) -> random.Random:
        return self._rng
