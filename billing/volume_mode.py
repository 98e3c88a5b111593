"""Volume mode: accounts that pre-purchase m³ (IC-card and volume-counting meters).

The customer buys volume at the price of the day; the meter (or billing) counts it down.
Each purchase is a *lot*: the m³ bought and the money paid. Consumption draws lots first in,
first out; the money value of what was drawn moves the money balance. Consumption is also
priced at the tariff in force when it happened (the ordinary charge), and when a price rose
after the purchase, the tariff value exceeds what the lots were paid for: that
*under-recovery* is recorded as a ``receivable`` charge (negative after a price cut — a
credit owed to the customer). Volume used beyond the lots (overdraft volume) is valued at the
tariff and owed in money; a later purchase repays it first.

Opening volume taken over from another system has no known purchase price: it is drawn like
any lot but yields no receivable.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from billing.errors import TopUpRefusedError
from billing.money import VOLUME_QUANTUM, ZERO, round_money
from billing.state import AccountState, VolumeLot
from schemas.messages import Charge, TopUp

__all__ = ["Draw", "apply_top_up", "consume", "opening_lot", "plan_top_up"]


@dataclass(frozen=True)
class Draw:
    """The money moved by drawing lots for some consumption, and the receivable, if any."""

    money: Decimal
    receivable: Charge | None


def opening_lot(volume: Decimal) -> VolumeLot:
    return VolumeLot("opening", volume, None)


def consume(state: AccountState, charge: Charge) -> Draw:
    """Draw the volume of ``charge`` from the lots (a negative volume gives it back)."""
    volume = charge.volume
    balance = state.volume_balance if state.volume_balance is not None else ZERO
    if volume == 0:
        return Draw(ZERO, None)
    if volume < 0:  # a correction gives volume back, valued at the tariff it was charged at
        state.lots.insert(0, VolumeLot(f"correction:{charge.charge_id}", -volume,
                                       -charge.amount))
        state.volume_balance = balance - volume
        state.balance -= charge.amount
        return Draw(charge.amount, None)
    left = volume
    money = known_value = known_volume = ZERO
    lots = state.lots
    while left > 0 and lots:
        lot = lots[0]
        take = min(left, lot.volume)
        if take == lot.volume:
            value = lot.amount
            lots.pop(0)
        else:
            value = None if lot.amount is None else round_money(lot.amount * take / lot.volume)
            lot.volume -= take
            if value is not None and lot.amount is not None:
                lot.amount -= value
        if value is not None:
            money += value
            known_value += value
            known_volume += take
        left -= take
    if left > 0:  # overdraft volume: owed at the tariff
        money += round_money(charge.amount * left / volume)
    state.volume_balance = balance - volume
    state.balance -= money
    receivable = None
    if known_volume:
        owed = round_money(charge.amount * known_volume / volume) - known_value
        if owed:
            receivable = Charge(
                charge_id=f"{charge.charge_id}:receivable", account_id=charge.account_id,
                meter_id=charge.meter_id, kind="receivable", period_start=charge.period_start,
                period_end=charge.period_end, volume=known_volume, amount=owed,
                currency=charge.currency, reading_ts=charge.reading_ts,
                reading_version=charge.reading_version, register=charge.register,
                provisional=charge.provisional, tariff_id=charge.tariff_id,
                cycle_id=charge.cycle_id, cycle_volume_after=charge.cycle_volume_after,
                corrects=None, created_at=charge.created_at)
    return Draw(money, receivable)


def plan_top_up(top_up: TopUp, marginal_price: Decimal | None,
                where: str) -> tuple[Decimal, Decimal]:
    """The (money, m³) a volume-mode top-up moves, without applying it."""
    if top_up.volume is not None:
        if top_up.kind == "top_up" and top_up.volume <= 0:
            raise TopUpRefusedError(f"a volume top-up must buy a positive volume, got "
                                    f"{top_up.volume}", where=where,
                                    hint="send the m³ sold in 'volume'")
        return top_up.amount, top_up.volume
    if top_up.kind != "top_up":
        raise TopUpRefusedError(
            f"a {top_up.kind} of a volume-mode account must say how many m³ it moves",
            where=where, hint="send the m³ in 'volume' (negative for a refund)")
    if not marginal_price:
        raise TopUpRefusedError(
            "no tariff price to sell volume at", where=where,
            hint="send the m³ sold in 'volume', or give the account a tariff")
    volume = (top_up.amount / marginal_price).quantize(VOLUME_QUANTUM, rounding=ROUND_DOWN)
    return top_up.amount, volume


def apply_top_up(state: AccountState, top_up_id: str, money: Decimal, volume: Decimal) -> None:
    """Apply a planned top-up: a new lot (after repaying overdraft volume) or, for a refund,
    volume taken back from the newest lots."""
    balance = state.volume_balance if state.volume_balance is not None else ZERO
    if volume > 0:
        repaid = min(volume, -balance) if balance < 0 else ZERO
        lot_volume = volume - repaid
        if lot_volume > 0:
            lot_money = money if not repaid else round_money(money * lot_volume / volume)
            state.lots.append(VolumeLot(top_up_id, lot_volume, lot_money))
    else:
        left = -volume
        while left > 0 and state.lots:
            lot = state.lots[-1]
            take = min(left, lot.volume)
            if take == lot.volume:
                state.lots.pop()
            else:
                if lot.amount is not None:
                    lot.amount -= round_money(lot.amount * take / lot.volume)
                lot.volume -= take
            left -= take
    state.volume_balance = balance + volume
    state.balance += money
