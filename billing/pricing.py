"""Pricing: consumption pieces → priced segments, by time, tariff version, cycle and tier.

A *piece* is consumption over ``[start, end)``: an hourly interval of a validated reading, or
the whole span between two register reads when only those exist. Pricing a piece:

1. split it where the tariff version in force changes, where the tier cycle restarts, and —
   for time-of-use and real-time tariffs — where the price period changes; the piece's volume
   is prorated over the parts by time (so a register-read period straddling a price change on
   10 July is prorated by days: 15 × 2.28 + 15 × 2.63 for 30 m³ over 25 June – 24 July);
2. walk each part through the tiers from the account's position in that part's cycle: an
   increase extends the cycle from its current position (only the volume above a threshold
   pays the higher price), a decrease (a correction) removes volume from the top; the
   position keeps accumulating across a price change because the cycle is the same;
3. give each tier chunk its unit price (tier price, or period price + tier adder) and split
   it into price components.

Parts with the same tariff version, tier, component, period and unit price are merged and
only then rounded half-up to the cent — one rounding per priced segment, so a daily reading
made of 24 hourly intervals gives the same money as one daily register read.

Strategy: the common case — one tariff version, one cycle, a step tariff — takes a short
path with no splitting; everything else goes through the general splitter.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

import msgspec

from billing.cycles import Cycle
from billing.errors import NoPriceError
from billing.money import ZERO, prorate, round_money
from billing.schedules import PeriodPrice
from billing.tariffs import TariffBook, TariffVersion, Tier
from schemas.messages import ChargeSegment

__all__ = ["Piece", "Pricer", "PricingResult"]


class Piece(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Consumption ``volume`` over ``[start, end)`` (``start == end``: at one instant);
    ``estimated`` when VEE estimated it. Stored as is in a :class:`ReadingRecord`."""

    start: datetime
    end: datetime
    volume: Decimal
    estimated: bool = False


#: Merged priced parts: (tariff id, version, tier, component, period, unit price) → volume.
_Parts = dict[tuple[str, int, int, str, str, Decimal], Decimal]


@dataclass(slots=True)
class PricingResult:
    """What pricing some pieces produced: the merged, rounded segments and where the account
    stands in its cycle afterwards."""

    segments: tuple[ChargeSegment, ...]
    amount: Decimal
    volume: Decimal
    cycle_id: str
    cycle_volume_after: Decimal | None
    tariff_version: TariffVersion | None


class _Sub(NamedTuple):
    start: datetime
    end: datetime
    version: TariffVersion
    cycle: Cycle
    price: PeriodPrice | None


class Pricer:
    """Prices pieces of consumption against a :class:`TariffBook`."""

    def __init__(self, book: TariffBook) -> None:
        self.book = book

    def price(self, tariff_id: str, pieces: Iterable[Piece],
              positions: MutableMapping[str, Decimal],
              override: dict[str, Decimal] | None = None) -> PricingResult:
        """Price ``pieces`` for an account whose cycle volumes are ``positions`` (cycle id →
        volume so far; updated in place). Decreases are priced before increases, each in time
        order, so a correction first takes volume off the top and then adds the new."""
        ordered = list(pieces)
        if len(ordered) > 1:
            ordered.sort(key=lambda p: (p.volume >= 0, p.start, p.end))
        elif ordered and ordered[0].volume > 0:
            simple = self._price_simple(tariff_id, ordered[0], positions, override)
            if simple is not None:
                return simple
        parts: _Parts = {}
        last_cycle = ""
        last_version: TariffVersion | None = None
        total = ZERO
        for piece in ordered:
            if piece.volume == 0:
                continue
            total += piece.volume
            for sub, volume in self._split(tariff_id, piece):
                if volume == 0:
                    continue
                tiers = sub.version.tiers_for(override)
                cycle_id = sub.cycle.cycle_id
                position = positions.get(cycle_id, ZERO)
                for tier, chunk in _walk(tiers, position, volume):
                    _add_parts(parts, sub, tier, chunk)
                positions[cycle_id] = position + volume
                last_cycle, last_version = cycle_id, sub.version
        segments = _round(parts)
        amount = ZERO
        for segment in segments:
            amount += segment.amount
        return PricingResult(
            segments=segments, amount=amount, volume=total,
            cycle_id=last_cycle,
            cycle_volume_after=positions.get(last_cycle) if last_cycle else None,
            tariff_version=last_version)

    def _price_simple(self, tariff_id: str, piece: Piece,
                      positions: MutableMapping[str, Decimal],
                      override: dict[str, Decimal] | None) -> PricingResult | None:
        """The common case — one increase inside one step or flat tariff version and one
        cycle — priced without splitting or merging: each tier chunk (and each price
        component) is a segment of its own already. None when the piece needs more."""
        spans = self.book.spans(tariff_id, piece.start, piece.end)
        if len(spans) != 1:
            return None
        version = spans[0][2]
        if version.tou is not None or version.realtime is not None:
            return None
        cycle = version.cycle.cycle_at(piece.start)
        if piece.end > cycle.end:
            return None
        message = version.message
        tariff_id, number = message.tariff_id, message.version
        cycle_id = cycle.cycle_id
        position = positions.get(cycle_id, ZERO)
        segments: list[ChargeSegment] = []
        amount = ZERO
        for tier, volume in _chunks(version.tiers_for(override), position,
                                    position + piece.volume):
            for component, unit in tier.components or (("total", tier.price),):
                money = round_money(volume * unit)
                amount += money
                segments.append(ChargeSegment(
                    tier=tier.number, volume=volume, unit_price=unit, amount=money,
                    component=component, tariff_id=tariff_id, tariff_version=number))
        after = positions[cycle_id] = position + piece.volume
        return PricingResult(segments=tuple(segments), amount=amount, volume=piece.volume,
                             cycle_id=cycle_id, cycle_volume_after=after,
                             tariff_version=version)

    def _split(self, tariff_id: str, piece: Piece) -> list[tuple[_Sub, Decimal]]:
        spans = self.book.spans(tariff_id, piece.start, piece.end)
        if len(spans) == 1:
            start, end, version = spans[0]
            cycle = version.cycle.cycle_at(start)
            if version.tou is None and version.realtime is None and end <= cycle.end:
                return [(_Sub(start, end, version, cycle, None), piece.volume)]
        subs: list[_Sub] = []
        for start, end, version in spans:
            cursor = start
            while True:
                cycle = version.cycle.cycle_at(cursor)
                stop = min(end, cycle.end) if end > cursor else end
                subs.extend(self._price_stretches(tariff_id, cursor, stop, version, cycle))
                if stop >= end:
                    break
                cursor = stop
        if len(subs) == 1:
            return [(subs[0], piece.volume)]
        weights = [(s.end - s.start).total_seconds() for s in subs]
        return list(zip(subs, prorate(piece.volume, weights), strict=True))

    def _price_stretches(self, tariff_id: str, start: datetime, end: datetime,
                         version: TariffVersion, cycle: Cycle) -> list[_Sub]:
        if version.tou is not None:
            return [_Sub(s.start, s.end, version, cycle, s.price)
                    for s in version.tou.stretches(start, end)]
        if version.realtime is not None:
            out = []
            for lo, hi, price in version.realtime.stretches(start, end):
                if price is None:
                    raise NoPriceError(
                        "no real-time price for the interval starting "
                        f"{lo.astimezone(version.cycle.tz).isoformat()}",
                        where=version.label,
                        hint="publish the price feed for that day (a new tariff version) or "
                             "give the tariff a fallback_price; the reading waits on "
                             "dlq.billing")
                out.append(_Sub(lo, hi, version, cycle, price))
            return out
        return [_Sub(start, end, version, cycle, None)]


def _walk(tiers: Sequence[Tier], position: Decimal,
          volume: Decimal) -> list[tuple[Tier, Decimal]]:
    """Tier chunks for moving the cycle volume from ``position`` by ``volume`` (signed).

    A decrease is taken off the top; what would go below zero (a correction larger than the
    cycle holds, e.g. of a cycle billing no longer remembers) is credited at tier 1."""
    if volume > 0:
        return _chunks(tiers, position, position + volume)
    low, high = position + volume, position
    out: list[tuple[Tier, Decimal]] = []
    if low < 0:
        out.append((tiers[0], -(min(high, ZERO) - low)))
        low = ZERO
    if high > low:
        out.extend((tier, -chunk) for tier, chunk in _chunks(tiers, low, high))
    return out


def _chunks(tiers: Sequence[Tier], low: Decimal, high: Decimal) -> list[tuple[Tier, Decimal]]:
    out: list[tuple[Tier, Decimal]] = []
    lower = ZERO
    for tier in tiers:
        upper = tier.upper
        if upper is not None and upper <= low:
            lower = upper
            continue
        start = low if low > lower else lower
        stop = high if upper is None or high < upper else upper
        if stop > start:
            out.append((tier, stop - start))
        if upper is None or upper >= high:
            break
        lower = upper
    return out


def _add_parts(parts: _Parts, sub: _Sub, tier: Tier, volume: Decimal) -> None:
    message = sub.version.message
    tariff_id, version = message.tariff_id, message.version
    price = sub.price
    if price is None:  # step or flat: the tier price and its components
        if tier.components:
            for name, unit in tier.components:
                _put(parts, (tariff_id, version, tier.number, name, "", unit), volume)
        else:
            _put(parts, (tariff_id, version, tier.number, "total", "", tier.price), volume)
        return
    # time-of-use / real-time: the period price, plus the tier's price as an adder
    if price.components:
        for name, unit in price.components:
            _put(parts, (tariff_id, version, tier.number, name, price.name, unit), volume)
        if tier.price:
            _put(parts, (tariff_id, version, tier.number, "step", price.name, tier.price),
                 volume)
    else:
        _put(parts, (tariff_id, version, tier.number, "total", price.name,
                     price.price + tier.price), volume)


def _put(parts: _Parts, key: tuple[str, int, int, str, str, Decimal], volume: Decimal) -> None:
    found = parts.get(key)
    parts[key] = volume if found is None else found + volume


def _round(parts: _Parts) -> tuple[ChargeSegment, ...]:
    """Round each merged segment once (half-up, 0.01); zero segments are dropped."""
    return tuple(
        ChargeSegment(tier=tier, volume=volume, unit_price=unit,
                      amount=round_money(volume * unit), component=component,
                      tariff_id=tariff_id, tariff_version=version, period=period)
        for (tariff_id, version, tier, component, period, unit), volume in parts.items()
        if volume != 0)
