"""What the billing engine remembers, as plain msgspec structs a table can store.

* :class:`AccountState` — one per account: balance (money; m³ and purchase lots for volume
  mode), alarm and supply state, safety lock, tier-cycle volumes, the account's meters, and
  the settlement periods still open (the current day, month and year).
* :class:`ReadingRecord` — one per billed reading key (meter, register, timestamp): the
  version charged and its consumption pieces, so a re-delivery charges nothing and a new
  version posts the difference; optionally (``store_outcomes``) the messages it produced,
  to re-send on a re-delivery.
* :class:`TopUpRecord` — one per applied ``top_up_id`` (exactly-once application).
* :class:`PeriodAccumulator` — a settled day, month or year, kept after it closed so that a
  correction can publish its next revision.

Everything is encoded with :func:`encode_state` / :func:`decode_state` (msgspec JSON; money
as decimal strings), which is what the faust tables of ``pipeline/billing_agent.py`` hold.

Strategy: a store in memory (tests, the offline run, a ``memory://`` worker) keeps a record
per reading and an accumulator per settled day for good, so these structs are untracked by
the cyclic garbage collector (``gc=False`` — none of them can be part of a reference cycle:
they hold scalars, strings, decimals, datetimes and other such structs, never their owner),
and what a record or a settled period only rarely extends is a tuple, not a list (a tuple of
untracked items leaves the collector's lists too). Otherwise every full collection walks
millions of objects that cannot be garbage: a third of the engine's time at 80,000 records.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal, TypeVar

import msgspec

from billing.pricing import Piece
from schemas.messages import (
    Alert,
    BalanceChange,
    Charge,
    CommandRequest,
    Message,
    Settlement,
)

__all__ = [
    "AccountState",
    "Outcome",
    "PeriodAccumulator",
    "ReadingRecord",
    "SegmentTotal",
    "TopUpRecord",
    "VolumeLot",
    "decode_state",
    "encode_state",
]

_ZERO = Decimal(0)

Supply = Literal["on", "cut_off", "cut_off_blocked"]


class VolumeLot(msgspec.Struct, array_like=True, gc=False):
    """Pre-purchased volume (volume mode) still unused, and the money paid for it (None:
    unknown, volume taken over from another system)."""

    top_up_id: str
    volume: Decimal
    amount: Decimal | None


class SegmentTotal(msgspec.Struct, array_like=True, gc=False):
    """Running total of one priced segment key (tariff version, tier, component, period, unit
    price) in a settlement period; amounts are sums of rounded charge segments."""

    tariff_id: str
    tariff_version: int
    tier: int
    component: str
    period: str
    unit_price: Decimal
    volume: Decimal
    amount: Decimal


class PeriodAccumulator(msgspec.Struct, kw_only=True, gc=False):
    """Running totals of one settlement period (local day, month or year) of an account."""

    account_id: str
    period: Literal["day", "month", "year"]
    period_id: str
    start: datetime
    end: datetime
    currency: str = "CNY"
    revision: int = 0
    closed: bool = False
    volume: Decimal = _ZERO
    amount: Decimal = _ZERO
    estimated_volume: Decimal = _ZERO
    charges: int = 0
    meters: tuple[str, ...] = ()
    segments: tuple[SegmentTotal, ...] = ()
    tariff_id: str = ""
    cycle_id: str = ""
    cycle_volume_after: Decimal | None = None
    balance_after: Decimal | None = None

    @property
    def key(self) -> str:
        return f"{self.account_id}|{self.period}|{self.period_id}"


class AccountState(msgspec.Struct, kw_only=True, gc=False):
    """The billing state of one account."""

    account_id: str
    opened_at: datetime | None = None
    #: Money credit (prepaid) or its negative, the amount owed (postpaid). Volume mode: the
    #: money value of the unused lots, less the value of volume used beyond them.
    balance: Decimal = _ZERO
    #: Volume mode: m³ left (negative when the meter runs on overdraft volume).
    volume_balance: Decimal | None = None
    lots: list[VolumeLot] = msgspec.field(default_factory=list)
    alarm1_armed: bool = True
    alarm2_armed: bool = True
    overdraft_armed: bool = True
    #: Billing's view of the supply: ``cut_off`` after it requested a debt close,
    #: ``cut_off_blocked`` when a cut-off was due but not requested (protected customer, no
    #: valve).
    supply: Supply = "on"
    cut_offs: int = 0
    reconnects: int = 0
    #: A safety close (tamper, leak, overload, earthquake, battery) billing must never reopen.
    safety_lock: str | None = None
    safety_meter: str | None = None
    meters: list[str] = msgspec.field(default_factory=list)
    cycle_volumes: dict[str, Decimal] = msgspec.field(default_factory=dict)
    alerts: int = 0
    open_periods: dict[str, PeriodAccumulator] = msgspec.field(default_factory=dict)
    last_event_at: datetime | None = None


class Outcome(msgspec.Struct, kw_only=True, gc=False):
    """Everything one input produced, in the order it must be published."""

    status: str = "ok"
    detail: str = ""
    charges: list[Charge] = msgspec.field(default_factory=list)
    balances: list[BalanceChange] = msgspec.field(default_factory=list)
    settlements: list[Settlement] = msgspec.field(default_factory=list)
    alerts: list[Alert] = msgspec.field(default_factory=list)
    commands: list[CommandRequest] = msgspec.field(default_factory=list)

    def messages(self) -> list[Message]:
        """All messages, money first (charges, balances, settlements), then alerts and
        commands — a consumer that sees a cut-off command has already seen its charge."""
        return [*self.charges, *self.balances, *self.settlements, *self.alerts,
                *self.commands]

    def __bool__(self) -> bool:
        return bool(self.charges or self.balances or self.settlements or self.alerts
                    or self.commands)


class ReadingRecord(msgspec.Struct, kw_only=True, gc=False):
    """What was charged for one reading key (meter, register, timestamp)."""

    account_id: str
    version: int
    pieces: tuple[Piece, ...] = ()
    volume: Decimal = _ZERO
    amount: Decimal = _ZERO
    charge_ids: tuple[str, ...] = ()
    day_key: str = ""
    billed_at: datetime | None = None
    outcome: Outcome | None = None


class TopUpRecord(msgspec.Struct, kw_only=True, gc=False):
    """A top-up (or control) applied once; optionally the messages it produced."""

    account_id: str
    applied_at: datetime
    outcome: Outcome | None = None


S = TypeVar("S", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder(decimal_format="string")
_decoders: dict[type, msgspec.json.Decoder[object]] = {}


def encode_state(value: msgspec.Struct) -> bytes:
    """Encode a state struct for a table."""
    return _encoder.encode(value)


def decode_state(data: bytes, cls: type[S]) -> S:
    """Decode a state struct written by :func:`encode_state`."""
    decoder = _decoders.get(cls)
    if decoder is None:
        decoder = _decoders[cls] = msgspec.json.Decoder(cls)
    return decoder.decode(data)  # type: ignore[return-value]
