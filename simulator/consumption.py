"""Realistic consumption: customer type × medium → daily, weekly and seasonal shapes.

Strategy: a meter's consumption rate is piecewise constant per local hour,

    rate(h) = base × daily[hour] × weekly[weekday] × seasonal(day of year) × noise(h),

with ``base`` drawn once per meter (a lognormal spread around the class mean, so a street has
small and large consumers) and ``noise`` drawn per hour from a per-meter seeded generator.
Integrating the hourly rates gives the register, which is therefore a deterministic function
of (seed, meter, time): the simulator can advance a meter to any instant, and the oracle can
recompute true consumption from the log alone.

Shapes (utility zone, default Asia/Shanghai):

* residential gas — breakfast and dinner peaks, heating makes January ~3× July;
* residential water — morning and evening peaks, summer ~1.3× winter;
* residential electricity — evening peak, summer air-conditioning and winter heating humps;
* commercial — business hours on weekdays, a quarter of that at weekends;
* industrial — two or three shifts, nearly flat, a Sunday dip, little season.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

__all__ = ["PROFILES", "ConsumptionProfile", "MeterConsumption", "profile_for"]


def _norm(values: list[float]) -> tuple[float, ...]:
    mean = sum(values) / len(values)
    return tuple(v / mean for v in values)


@dataclass(frozen=True)
class ConsumptionProfile:
    """Mean hourly consumption of a customer class and its shapes (each averaging 1)."""

    name: str
    medium: str
    unit: str
    mean_per_hour: float  # in ``unit`` per hour, yearly average
    daily: tuple[float, ...]  # 24 local hours
    weekly: tuple[float, ...]  # Monday..Sunday
    winter_summer: tuple[float, float]  # factor in mid-January, factor in mid-July
    summer_bump: float = 0.0  # extra factor in mid-summer (air conditioning)
    noise: float = 0.25  # relative hourly variation
    spread: float = 0.5  # lognormal sigma of a meter's base around the class mean

    def seasonal(self, day_of_year: int) -> float:
        # cosine between January (winter) and July (summer), plus an optional summer hump
        winter, summer = self.winter_summer
        phase = math.cos(2 * math.pi * (day_of_year - 15) / 365.25)  # 1 mid-Jan, -1 mid-Jul
        base = (winter + summer) / 2 + (winter - summer) / 2 * phase
        hump = self.summer_bump * max(0.0, -phase) ** 3
        return base + hump


_RES_GAS_DAY = [0.2, 0.15, 0.1, 0.1, 0.15, 0.4, 1.4, 2.2, 1.6, 0.8, 0.6, 1.2, 1.8, 1.0, 0.5,
                0.5, 0.7, 1.6, 2.6, 2.4, 1.6, 1.0, 0.6, 0.3]
_RES_WATER_DAY = [0.15, 0.1, 0.08, 0.08, 0.15, 0.6, 1.8, 2.3, 1.6, 1.0, 0.9, 1.1, 1.3, 1.0,
                  0.8, 0.8, 0.9, 1.2, 1.7, 2.0, 2.1, 1.8, 1.0, 0.4]
_RES_ELEC_DAY = [0.5, 0.4, 0.35, 0.35, 0.35, 0.45, 0.8, 1.1, 0.9, 0.8, 0.8, 0.9, 1.0, 0.9,
                 0.8, 0.8, 0.9, 1.2, 1.8, 2.1, 2.0, 1.7, 1.2, 0.8]
_COMMERCIAL_DAY = [0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.3, 0.8, 1.6, 1.9, 2.0, 2.1, 2.0, 1.9, 2.0,
                   2.0, 1.9, 1.7, 1.3, 0.9, 0.6, 0.3, 0.15, 0.1]
_INDUSTRIAL_DAY = [0.8, 0.8, 0.8, 0.8, 0.8, 0.85, 1.0, 1.1, 1.15, 1.15, 1.15, 1.1, 1.0, 1.1,
                   1.15, 1.15, 1.15, 1.1, 1.0, 0.95, 0.9, 0.9, 0.85, 0.8]
_HOME_WEEK = [1.0, 1.0, 1.0, 1.0, 1.02, 1.08, 1.1]
_WORK_WEEK = [1.15, 1.15, 1.15, 1.15, 1.1, 0.3, 0.25]
_PLANT_WEEK = [1.05, 1.05, 1.05, 1.05, 1.05, 0.95, 0.75]

PROFILES: dict[tuple[str, str], ConsumptionProfile] = {
    ("residential", "gas"): ConsumptionProfile(
        "residential", "gas", "m3", 0.055, _norm(_RES_GAS_DAY), _norm(_HOME_WEEK), (1.9, 0.55)),
    ("residential", "water"): ConsumptionProfile(
        "residential", "water", "m3", 0.012, _norm(_RES_WATER_DAY), _norm(_HOME_WEEK),
        (0.85, 1.15)),
    ("residential", "electricity"): ConsumptionProfile(
        "residential", "electricity", "kWh", 0.35, _norm(_RES_ELEC_DAY), _norm(_HOME_WEEK),
        (1.15, 0.9), summer_bump=0.6),
    ("residential", "heat"): ConsumptionProfile(
        "residential", "heat", "kWh", 1.2, _norm(_RES_GAS_DAY), _norm(_HOME_WEEK), (2.6, 0.05),
        noise=0.15),
    ("commercial", "gas"): ConsumptionProfile(
        "commercial", "gas", "m3", 0.9, _norm(_COMMERCIAL_DAY), _norm(_WORK_WEEK), (1.5, 0.7)),
    ("commercial", "water"): ConsumptionProfile(
        "commercial", "water", "m3", 0.15, _norm(_COMMERCIAL_DAY), _norm(_WORK_WEEK),
        (0.9, 1.1)),
    ("commercial", "electricity"): ConsumptionProfile(
        "commercial", "electricity", "kWh", 6.0, _norm(_COMMERCIAL_DAY), _norm(_WORK_WEEK),
        (1.05, 0.95), summer_bump=0.5),
    ("industrial", "gas"): ConsumptionProfile(
        "industrial", "gas", "m3", 25.0, _norm(_INDUSTRIAL_DAY), _norm(_PLANT_WEEK), (1.15, 0.9),
        noise=0.1, spread=0.8),
    ("industrial", "water"): ConsumptionProfile(
        "industrial", "water", "m3", 3.0, _norm(_INDUSTRIAL_DAY), _norm(_PLANT_WEEK),
        (0.95, 1.05), noise=0.1, spread=0.8),
    ("industrial", "electricity"): ConsumptionProfile(
        "industrial", "electricity", "kWh", 120.0, _norm(_INDUSTRIAL_DAY), _norm(_PLANT_WEEK),
        (1.0, 1.05), noise=0.08, spread=0.8),
}


def profile_for(customer_type: str, medium: str) -> ConsumptionProfile:
    try:
        return PROFILES[(customer_type, medium)]
    except KeyError:
        known = ", ".join(f"{c}/{m}" for c, m in sorted(PROFILES))
        raise KeyError(f"no consumption profile for {customer_type}/{medium}; known: {known}"
                       ) from None


_MASK = (1 << 64) - 1


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _hour_noise(seed: int, hour_index: int) -> float:
    """A standard-normal draw that depends only on (seed, hour): advancing in any steps
    gives the same register."""
    h = _splitmix((seed * 1_000_003) ^ hour_index)
    u1 = ((h >> 11) + 1) / float(1 << 53)
    u2 = (_splitmix(h) >> 11) / float(1 << 53)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)


@dataclass
class MeterConsumption:
    """The true register of one meter, advanced hour by hour from its profile.

    ``register`` is exact (a float integral, quantised only when read); ``value_at`` returns
    the register as the meter displays it — truncated to ``decimals`` and wrapped at
    ``10**digits`` (a mechanical or LCD register rolls over to zero).
    """

    profile: ConsumptionProfile
    seed: int
    start: datetime
    initial: float = 0.0
    digits: int = 6
    decimals: int = 2
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    _at: datetime = field(init=False)
    _total: float = field(init=False)
    _base: float = field(init=False)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        sigma = self.profile.spread
        # lognormal with mean 1: exp(N(-σ²/2, σ))
        self._base = self.profile.mean_per_hour * math.exp(self._rng.gauss(-sigma * sigma / 2,
                                                                           sigma))
        self._at = self.start
        self._total = self.initial

    @property
    def base_per_hour(self) -> float:
        return self._base

    def rate(self, at: datetime) -> float:
        """Consumption per hour in the local hour containing ``at`` (noise not included)."""
        local = at.astimezone(self.zone)
        p = self.profile
        return (self._base * p.daily[local.hour] * p.weekly[local.weekday()]
                * p.seasonal(local.timetuple().tm_yday))

    def advance(self, to: datetime) -> float:
        """Integrate up to ``to``; returns the consumption added (never negative)."""
        if to <= self._at:
            return 0.0
        added = 0.0
        at = self._at
        while at < to:
            hour_end = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            step_end = min(hour_end, to)
            fraction = (step_end - at).total_seconds() / 3600.0
            hour_index = int(at.timestamp()) // 3600
            noise = max(0.0, 1.0 + _hour_noise(self.seed, hour_index) * self.profile.noise)
            added += self.rate(at) * noise * fraction
            at = step_end
        self._at = to
        self._total += added
        return added

    def skip(self, to: datetime) -> None:
        """Move to ``to`` without consumption (the supply is shut off meanwhile)."""
        if to > self._at:
            self._at = to

    @property
    def at(self) -> datetime:
        return self._at

    @property
    def total(self) -> float:
        """True cumulative consumption since installation (never wraps)."""
        return self._total

    def register_value(self, total: float | None = None) -> Decimal:
        """The displayed register: truncated to ``decimals``, wrapped at ``10**digits``."""
        value = Decimal(repr(self._total if total is None else total))
        value = value.quantize(Decimal(1).scaleb(-self.decimals), rounding=ROUND_DOWN)
        return value % (Decimal(10) ** self.digits)

    def add_offset(self, amount: float) -> None:
        """Jump the true register (a rollback is negative: meter swapped or tampered)."""
        self._total = max(0.0, self._total + amount)
