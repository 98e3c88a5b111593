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
        return to_micro(qmax) if qmax is not None else None

    def register_range_micro(self) -> int:
        """Where the register wraps: 10^digits units (99999.999 + 0.001 for 5+3 digits)."""
        return 10 ** self.register_digits * 1_000_000


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


class MeterState(msgspec.Struct, array_like=True, gc=False):
    """Everything VEE keeps about one meter between readings."""

    channels: dict[str, Channel] = msgspec.field(default_factory=dict)
    #: Last known valve position from status tags: "open", "closed" or "".
    valve: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(MeterState)


def encode_state(state: MeterState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> MeterState:
    return _decoder.decode(data)
