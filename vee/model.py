"""The engine's working data: a meter as VEE sees it, and the per-meter state it keeps.

Strategy: state is what a stream worker must remember per meter between readings, and a
utility has millions of meters, so it is small and flat: for each register (a *channel*)
the last few points (a time-bounded window that late readings can still re-validate),
daily totals of the last weeks (for like-day, average daily use, high/low and zero checks),
and a few counters. Values are integers of micro-units and times epoch seconds
(:mod:`vee._num`); quality and method are the stable codes of :mod:`vee.quality`. The state
encodes to compact msgpack (``encode_state`` / ``decode_state``), which is what a RocksDB
table holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

import msgspec

from schemas.messages import Dimensions, LedgerMeter
from vee._num import epoch, to_micro

__all__ = [
    "Channel",
    "EditNote",
    "MeterInfo",
    "MeterState",
    "Point",
    "decode_state",
    "encode_state",
]

#: Maximum flow (m³/h) by gas meter size (EN 1359 / OIML R 137 G-sizes).
GAS_SIZE_QMAX: dict[str, Decimal] = {
    "G1.6": Decimal("2.5"), "G2.5": Decimal("4"), "G4": Decimal("6"), "G6": Decimal("10"),
    "G10": Decimal("16"), "G16": Decimal("25"), "G25": Decimal("40"), "G40": Decimal("65"),
    "G65": Decimal("100"), "G100": Decimal("160"),
}


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What VEE needs to know about a meter (from the ledger, or a rule file's ``meters``)."""

    meter_id: str
    status: str = "active"
    medium: str = "gas"
    device_type: str = ""
    size: str | None = None
    qmax: Decimal | None = None
    register_digits: int = 5
    register_decimals: int = 3
    has_valve: bool = False
    customer_type: str | None = None
    account_id: str | None = None
    vee_group: str | None = None
    installed_at: int | None = None
    removed_at: int | None = None
    known: bool = True
    dims: Dimensions = field(default_factory=Dimensions)

    @classmethod
    def from_ledger(cls, m: LedgerMeter) -> MeterInfo:
        return cls(
            meter_id=m.meter_id, status=m.status, medium=m.medium, device_type=m.device_type,
            size=m.size, qmax=m.qmax, register_digits=m.register_digits,
            register_decimals=m.register_decimals, has_valve=m.has_valve,
            customer_type=m.customer_type, account_id=m.account_id, vee_group=m.vee_group,
            installed_at=epoch(m.installed_at) if m.installed_at else None,
            removed_at=epoch(m.removed_at) if m.removed_at else None,
            dims=Dimensions(account_id=m.account_id, customer_type=m.customer_type,
                            region=m.region, org_unit=m.org_unit, supply_node=m.supply_node,
                            tariff_id=m.tariff_id, vee_group=m.vee_group, medium=m.medium))

    @classmethod
    def unknown(cls, meter_id: str) -> MeterInfo:
        """A meter the ledger does not know: default register shape, no dimensions."""
        return cls(meter_id=meter_id, known=False)

    def qmax_micro(self) -> int | None:
        """Maximum flow in micro-units per hour (from the ledger, else the G-size table)."""
        qmax = self.qmax if self.qmax is not None else GAS_SIZE_QMAX.get(self.size or "")
        return _micro(qmax) if qmax is not None else None

    def register_range_micro(self) -> int:
        """Where the register wraps: 10^digits units (99999.999 + 0.001 for 5+3 digits)."""
        return int(10 ** self.register_digits) * 1_000_000


@lru_cache(maxsize=1024)
def _micro(value: Decimal) -> int:
    """``to_micro`` of the few distinct Qmax values, cached (checked for every reading)."""
    return to_micro(value)


class EditNote(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Who changed a value, when, why and how (kept with an edited point)."""

    user: str
    at: int
    reason_code: str
    previous_value: int | None
    previous_version: int | None
    note: str | None = None


class Point(msgspec.Struct, array_like=True, gc=False):
    """One value of a channel: a reading, or a marker for an expected reading that is missing.

    ``raw`` is what the device sent (None for a marker); ``value`` the validated value (an
    estimate replaces it, ``raw`` stays). ``events`` are sticky flags set on arrival (status
    tags, clock checks); ``flags`` are recomputed whenever the point is re-validated.
    """

    ts: int
    value: int | None
    raw: int | None
    quality: int
    method: int
    version: int
    received: int
    flags: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    consumption: int | None = None
    start: int | None = None
    source: str = ""
    edit: EditNote | None = None
    #: A one-sided (forward, provisional) estimate; replaced once the next read arrives.
    forward: bool = False
    #: Validation rejected the raw value (it is estimated, or questionable if no method
    #: applied — and estimated again when a later value makes a method applicable).
    rejected: bool = False


class Channel(msgspec.Struct, array_like=True, gc=False):
    """The state of one register of a meter."""

    register: str
    unit: str
    kind: str
    #: Expected seconds between values (0 = not known yet).
    interval_s: int = 0
    points: list[Point] = msgspec.field(default_factory=list)
    #: Daily totals (micro-units) of closed days; ``days[-1]`` is day ``last_day``; -1 = none.
    days: list[int] = msgspec.field(default_factory=list)
    last_day: int = 0
    #: Bit n set: ``days[n]`` holds estimates or a power failure (never a like day).
    bad_days: int = 0
    #: Decimals of the values (the most the device has sent, at least the meter's).
    places: int = 3
    #: Epoch second of the newest point that left the window (older input is "too late").
    horizon: int = 0
    #: Consecutive estimated values at the end of the channel.
    estimated_run: int = 0
    #: The newest value that left the window (None: none yet) and its time. It no longer
    #: changes, so the oldest value's consumption and a hole at the window's start are
    #: measured from it when the engine re-derives from the start of the window.
    base_value: int | None = None
    base_ts: int = 0


class MeterState(msgspec.Struct, array_like=True, gc=False):
    """Everything VEE keeps about one meter between readings."""

    channels: dict[str, Channel] = msgspec.field(default_factory=dict)
    #: Last known valve position from status tags: "open", "closed" or "".
    valve: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
_STATE_FORMAT = 2
#: Formats this code still reads (1: without the channel's base value).
_READS = (1, 2)


def encode_state(state: MeterState) -> bytes:
    """The state as compact msgpack (what a RocksDB table holds per meter).

    Strategy: most of a window is predictable from the value before it, so each point is
    stored as differences — time since the previous point, value change, the raw value only
    when it differs from the validated one, consumption and interval start only when they
    are not simply "since the previous value" — and quality, method and the two booleans
    share one small integer. The first point is a difference from the channel's base value
    (the newest that left the window) when there is one. A daily gas meter's state is about
    300 bytes.
    """
    channels = []
    for ch in state.channels.values():
        packed: list[list[Any]] = []
        based = ch.base_value is not None
        prev_ts = ch.base_ts if based else 0
        prev_value: int | None = ch.base_value
        prev_source = ""
        for p in ch.points:
            value = p.value
            value_enc = None if value is None else value - (prev_value or 0)
            raw = p.raw
            raw_enc: Any = False if raw is None else (True if raw == value else raw - (value or 0))
            derived = _expected_consumption(ch, p, prev_ts if packed or based else None,
                                            prev_value)
            consumption_enc: Any = True if derived == (p.consumption, p.start) else [
                p.consumption, p.start]
            bits = p.quality | p.method << 3 | p.forward << 7 | p.rejected << 8
            edit = None if p.edit is None else [p.edit.user, p.edit.at, p.edit.reason_code,
                                                 p.edit.previous_value,
                                                 p.edit.previous_version, p.edit.note]
            # the flag tuples as they are: msgpack has one array type, tuples encode as lists
            packed.append([p.ts - prev_ts, value_enc, raw_enc, bits, p.version,
                           p.received - p.ts, p.flags, p.events, consumption_enc,
                           None if p.source == prev_source else p.source, edit])
            prev_ts = p.ts
            if value is not None:
                prev_value = value
            prev_source = p.source
        channels.append([ch.register, ch.unit, ch.kind, ch.interval_s, ch.places, ch.horizon,
                         ch.estimated_run, ch.last_day, ch.bad_days,
                         [None if d < 0 else d for d in ch.days], packed,
                         [ch.horizon - ch.base_ts, ch.base_value] if based else None])
    return _encoder.encode([_STATE_FORMAT, state.valve, channels])


def decode_state(data: bytes) -> MeterState:
    """The inverse of :func:`encode_state`."""
    fmt, valve, channels = _decoder.decode(data)
    if fmt not in _READS:
        raise ValueError(f"VEE state format {fmt} is not known (this code reads "
                         f"{', '.join(map(str, _READS))})")
    state = MeterState(valve=valve)
    for (register, unit, kind, interval_s, places, horizon, estimated_run, last_day, bad_days,
         days, packed, *rest) in channels:
        base = rest[0] if rest else None
        ch = Channel(register=register, unit=unit, kind=kind, interval_s=interval_s,
                     places=places, horizon=horizon, estimated_run=estimated_run,
                     last_day=last_day, bad_days=bad_days,
                     days=[-1 if d is None else d for d in days])
        based = base is not None
        if base is not None:
            ch.base_ts, ch.base_value = horizon - base[0], base[1]
        prev_ts = ch.base_ts if based else 0
        prev_value: int | None = ch.base_value
        source = ""
        for n, (dts, value_enc, raw_enc, bits, version, late, flags, events, consumption_enc,
                src, edit) in enumerate(packed):
            ts = prev_ts + dts
            value = None if value_enc is None else value_enc + (prev_value or 0)
            if raw_enc is False:
                raw = None
            elif raw_enc is True:
                raw = value
            else:
                raw = raw_enc + (value or 0)
            if src is not None:
                source = src
            point = Point(ts=ts, value=value, raw=raw, quality=bits & 7, method=bits >> 3 & 15,
                          version=version, received=ts + late, flags=tuple(flags),
                          events=tuple(events), source=source, forward=bool(bits >> 7 & 1),
                          rejected=bool(bits >> 8 & 1),
                          edit=None if edit is None else EditNote(*edit))
            if consumption_enc is True:
                point.consumption, point.start = _expected_consumption(
                    ch, point, prev_ts if n or based else None, prev_value)
            else:
                point.consumption, point.start = consumption_enc
            ch.points.append(point)
            prev_ts = ts
            if value is not None:
                prev_value = value
        first = ch.points[0] if ch.points and horizon and not based else None
        if first is not None and first.value is not None and first.consumption is not None \
                and first.start is not None and kind == "cumulative" \
                and first.value - first.consumption >= 0:
            # format 1 kept no base: the oldest value's consumption tells it (no rollover)
            ch.base_ts, ch.base_value = first.start, first.value - first.consumption
        state.channels[register] = ch
    return state


def _expected_consumption(ch: Channel, p: Point, prev_ts: int | None,
                          prev_value: int | None) -> tuple[int | None, int | None]:
    """What consumption and interval start a point has when nothing special happened."""
    if p.value is None:
        return None, None
    if ch.kind == "interval":
        return p.value, (p.ts - ch.interval_s if ch.interval_s else None)
    if ch.kind != "cumulative" or prev_ts is None or prev_value is None:
        return None, None
    return p.value - prev_value, prev_ts
