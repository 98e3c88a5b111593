"""Tariffs: effective-dated versions, their tiers and schedules, and which one is in force.

A tariff (``BJ-GAS-RES``) is a series of versions (:class:`~schemas.messages.LedgerTariff`
messages, from the ledger sync or a tariff file). Consumption is priced by its own timestamp:
the version in force at an instant is the one with the latest ``effective_from`` not after it
(ties: the higher version number — a corrected republication), among versions whose
``effective_to``, if any, is still ahead. A version with an ``effective_to`` thus ends early
and the version under it applies again (a temporary price), and a real-time feed is one
version per published day.

Kinds:

* ``step`` — tiers with upper volumes per cycle and a price each, charged progressively;
* ``flat`` — one open tier;
* ``tou`` — a time-of-use schedule (:class:`~billing.schedules.TouSchedule`); tiers, if any,
  are *adders* on top of the period price (step-plus-TOU electricity tariffs);
* ``realtime`` — interval prices from a feed (:class:`~billing.schedules.RealtimePrices`);
  tiers, if any, are adders too.

A tier's price may be split into ``components`` (water: tap water, resource fee, sewage fee)
that sum to it. An account's ``tier_override`` replaces tier uppers (``{"1": "450"}``).

Strategy: each :class:`~schemas.messages.LedgerTariff` is compiled once into a
:class:`TariffVersion` (validated, schedules compiled); :class:`TariffBook` keeps per tariff a
*timeline* — non-overlapping stretches each with the version in force — built by a sweep over
the versions' boundaries, so "which version at t" is one bisect and "which versions over
[start, end)" is a slice.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from zoneinfo import ZoneInfo

from billing.cycles import CycleRule
from billing.errors import NoTariffInForceError, TariffError, UnknownTariffError
from billing.schedules import RealtimePrices, TouSchedule
from schemas.messages import LedgerTariff

__all__ = ["TariffBook", "TariffVersion", "Tier", "TimelineEntry"]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Tier:
    """Tier ``number`` (1-based) holds the cycle volume up to ``upper`` (None: no limit)."""

    number: int
    upper: Decimal | None
    price: Decimal
    components: tuple[tuple[str, Decimal], ...] = ()


@dataclass(eq=False)
class TariffVersion:
    """One compiled, validated tariff version."""

    message: LedgerTariff
    cycle: CycleRule
    tiers: tuple[Tier, ...]
    tou: TouSchedule | None = None
    realtime: RealtimePrices | None = None
    _overridden: dict[tuple[tuple[str, Decimal], ...], tuple[Tier, ...]] = field(
        default_factory=dict, repr=False)

    @property
    def tariff_id(self) -> str:
        return self.message.tariff_id

    @property
    def version(self) -> int:
        return self.message.version

    @property
    def kind(self) -> str:
        return self.message.kind

    @cached_property
    def label(self) -> str:
        return f"tariff {self.message.tariff_id} v{self.message.version}"

    @classmethod
    def compile(cls, message: LedgerTariff, tz: ZoneInfo) -> TariffVersion:
        """Validate ``message`` and compile its tiers and schedule; :class:`TariffError`
        names the tariff, the version and what to fix."""
        where = f"tariff {message.tariff_id} v{message.version}"
        try:
            cycle = CycleRule(message.cycle, message.cycle_start_month, message.cycle_start_day,
                              tz)
            tiers = _compile_tiers(message, where)
            tou = realtime = None
            if message.kind == "tou":
                tou = TouSchedule(message.tou, tz, where=f"{where} tou")
            elif message.kind == "realtime":
                realtime = RealtimePrices(message.tou, where=f"{where} tou")
        except (ValueError, TypeError, KeyError) as exc:
            raise TariffError(f"invalid tariff version: {exc}", where=where,
                              hint="correct the tariff in the ledger or tariff file and "
                                   "publish it again") from None
        if message.effective_to is not None and message.effective_to <= message.effective_from:
            raise TariffError("effective_to is not after effective_from", where=where,
                              hint="a version must be in force for some time")
        return cls(message=message, cycle=cycle, tiers=tiers, tou=tou, realtime=realtime)

    def tiers_for(self, override: Mapping[str, Decimal] | None) -> tuple[Tier, ...]:
        """The tiers with an account's upper-volume overrides applied (cached)."""
        if not override:
            return self.tiers
        key = tuple(sorted(override.items()))
        found = self._overridden.get(key)
        if found is None:
            found = self._overridden[key] = _apply_override(self, override)
        return found


def _compile_tiers(message: LedgerTariff, where: str) -> tuple[Tier, ...]:
    adders = message.kind in ("tou", "realtime")
    if not message.tiers:
        if adders:
            return (Tier(1, None, _ZERO),)
        raise ValueError(f"a {message.kind} tariff needs at least one tier")
    if message.kind == "flat" and len(message.tiers) != 1:
        raise ValueError("a flat tariff has exactly one tier")
    tiers: list[Tier] = []
    previous = _ZERO
    for number, raw in enumerate(message.tiers, start=1):
        if raw.price < 0 and not adders:
            raise ValueError(f"tier {number} has a negative price {raw.price}")
        last = number == len(message.tiers)
        if raw.upper is None and not last:
            raise ValueError(f"tier {number} has no upper volume but is not the last tier")
        if raw.upper is not None:
            if last:
                raise ValueError(f"the last tier ({number}) must be open (upper: null); "
                                 f"volume above {raw.upper} would have no price")
            if raw.upper <= previous:
                raise ValueError(f"tier {number} upper {raw.upper} is not above the previous "
                                 f"tier's {previous}")
            previous = raw.upper
        components = tuple(raw.components.items())
        if components and sum(p for _, p in components) != raw.price:
            raise ValueError(f"tier {number} components sum to "
                             f"{sum(p for _, p in components)}, not its price {raw.price}")
        tiers.append(Tier(number, raw.upper, raw.price, components))
    return tuple(tiers)


def _apply_override(version: TariffVersion, override: Mapping[str, Decimal]) -> tuple[Tier, ...]:
    uppers: dict[int, Decimal] = {}
    for key, value in override.items():
        try:
            number = int(key)
        except ValueError:
            raise TariffError(f"tier override key {key!r} is not a tier number",
                              where=version.label, hint="use {\"1\": \"450\"}") from None
        if not 1 <= number < len(version.tiers):
            raise TariffError(f"tier override for tier {number}, but only tiers 1–"
                              f"{len(version.tiers) - 1} have an upper volume",
                              where=version.label, hint="correct the account's tier_override")
        uppers[number] = value
    tiers = [Tier(t.number, uppers.get(t.number, t.upper), t.price, t.components)
             for t in version.tiers]
    previous = _ZERO
    for tier in tiers:
        if tier.upper is not None:
            if tier.upper <= previous:
                raise TariffError(f"with the override, tier {tier.number} upper {tier.upper} is "
                                  f"not above {previous}", where=version.label,
                                  hint="override the following tiers too")
            previous = tier.upper
    return tuple(tiers)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """``[start, end)`` (``end`` None: open) with the version in force (None: a gap)."""

    start: datetime
    end: datetime | None
    version: TariffVersion | None


class TariffBook:
    """Every known tariff version, and the timeline of which one is in force when."""

    def __init__(self, tz: ZoneInfo, tariffs: Iterable[LedgerTariff] = ()) -> None:
        self.tz = tz
        self._versions: dict[str, dict[int, TariffVersion]] = {}
        self._timelines: dict[str, tuple[list[datetime], list[TimelineEntry]]] = {}
        self._last_entry: dict[str, TimelineEntry] = {}
        self._signatures: dict[str, tuple[tuple[int, float, float], ...]] = {}
        for message in tariffs:
            self.add(message)

    def add(self, message: LedgerTariff) -> TariffVersion:
        """Compile and add (or replace) one version; raises :class:`TariffError`."""
        compiled = TariffVersion.compile(message, self.tz)
        self._versions.setdefault(message.tariff_id, {})[message.version] = compiled
        self._timelines.pop(message.tariff_id, None)
        self._last_entry.pop(message.tariff_id, None)
        self._signatures.pop(message.tariff_id, None)
        return compiled

    def sync(self, tariff_id: str, versions: Iterable[LedgerTariff]) -> bool:
        """Make the book hold exactly ``versions`` of ``tariff_id`` (as the ledger has them);
        recompiles only when they changed. Returns whether anything changed. Raises
        :class:`TariffError` for an invalid version (the book keeps the previous set)."""
        versions = list(versions)
        signature = tuple(sorted((v.version, v.updated_at.timestamp(),
                                  v.effective_from.timestamp()) for v in versions))
        if self._signatures.get(tariff_id) == signature:
            return False
        compiled = {v.version: TariffVersion.compile(v, self.tz) for v in versions}
        if compiled:
            self._versions[tariff_id] = compiled
        else:
            self._versions.pop(tariff_id, None)
        self._signatures[tariff_id] = signature
        self._timelines.pop(tariff_id, None)
        self._last_entry.pop(tariff_id, None)
        return True

    def __contains__(self, tariff_id: object) -> bool:
        return tariff_id in self._versions

    def tariff_ids(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, tariff_id: str) -> list[TariffVersion]:
        return [v for _, v in sorted(self._known(tariff_id).items())]

    def _known(self, tariff_id: str) -> dict[int, TariffVersion]:
        found = self._versions.get(tariff_id)
        if found is None:
            raise UnknownTariffError(
                f"unknown tariff '{tariff_id}'", where=f"tariff {tariff_id}",
                hint="publish the tariff to ledger.tariffs (or add it to the tariff file); "
                     f"known: {', '.join(sorted(self._versions)) or 'none'}")
        return found

    def timeline(self, tariff_id: str) -> list[TimelineEntry]:
        return self._timeline(tariff_id)[1]

    def _timeline(self, tariff_id: str) -> tuple[list[datetime], list[TimelineEntry]]:
        cached = self._timelines.get(tariff_id)
        if cached is None:
            entries = _sweep(list(self._known(tariff_id).values()))
            cached = self._timelines[tariff_id] = ([e.start for e in entries], entries)
        return cached

    def version_at(self, tariff_id: str, ts: datetime) -> TariffVersion:
        """The version in force at ``ts``."""
        starts, entries = self._timeline(tariff_id)
        index = bisect.bisect_right(starts, ts) - 1
        version = entries[index].version if index >= 0 else None
        if version is None:
            raise self._gap(tariff_id, ts)
        return version

    def spans(self, tariff_id: str, start: datetime,
              end: datetime) -> list[tuple[datetime, datetime, TariffVersion]]:
        """The versions in force over ``[start, end)``, clipped to it, in time order."""
        last = self._last_entry.get(tariff_id)
        if (last is not None and last.version is not None and last.start <= start
                and (last.end is None or end <= last.end)):
            return [(start, end, last.version)]  # the common case: inside the last stretch
        starts, entries = self._timeline(tariff_id)
        index = max(bisect.bisect_right(starts, start) - 1, 0)
        if end <= start or entries[index].start > start:
            return [(start, end, self.version_at(tariff_id, start))]
        out: list[tuple[datetime, datetime, TariffVersion]] = []
        while index < len(entries) and entries[index].start < end:
            entry = entries[index]
            lo = max(entry.start, start)
            hi = end if entry.end is None else min(entry.end, end)
            if entry.version is None:
                raise self._gap(tariff_id, lo)
            out.append((lo, hi, entry.version))
            index += 1
        if len(out) == 1:
            self._last_entry[tariff_id] = entries[index - 1]
        return out

    def _gap(self, tariff_id: str, ts: datetime) -> NoTariffInForceError:
        first = self._timeline(tariff_id)[1][0].start
        return NoTariffInForceError(
            f"no version of tariff '{tariff_id}' is in force at {ts.isoformat()}",
            where=f"tariff {tariff_id}",
            hint=(f"its first version starts {first.isoformat()}; " if ts < first else "")
            + "publish a version covering that time (a real-time tariff needs that day's "
              "prices)")


def _sweep(versions: list[TariffVersion]) -> list[TimelineEntry]:
    """Non-overlapping stretches with the version in force, by a sweep over boundaries."""
    boundaries = sorted({v.message.effective_from for v in versions}
                        | {v.message.effective_to for v in versions
                           if v.message.effective_to is not None})
    by_start = sorted(versions, key=lambda v: v.message.effective_from)
    # A max-heap on (effective_from, version) through negated keys; expired tops are dropped.
    heap: list[tuple[float, int, int, TariffVersion]] = []
    entries: list[TimelineEntry] = []
    next_version = 0
    for i, boundary in enumerate(boundaries):
        while (next_version < len(by_start)
               and by_start[next_version].message.effective_from <= boundary):
            v = by_start[next_version]
            heapq.heappush(heap, (-v.message.effective_from.timestamp(), -v.message.version,
                                  id(v), v))
            next_version += 1
        while heap and heap[0][3].message.effective_to is not None \
                and heap[0][3].message.effective_to <= boundary:
            heapq.heappop(heap)
        current = heap[0][3] if heap else None
        end = boundaries[i + 1] if i + 1 < len(boundaries) else None
        if entries and entries[-1].version is current:
            entries[-1] = TimelineEntry(entries[-1].start, end, current)
        else:
            entries.append(TimelineEntry(boundary, end, current))
    return entries

