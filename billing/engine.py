"""The billing engine: validated readings and top-ups in, charges, balances, settlements,
alerts and valve requests out — pure, deterministic and idempotent.

One call per input: :meth:`BillingEngine.bill_reading` for a
:class:`~schemas.messages.ValidatedReading`, :meth:`BillingEngine.apply_top_up` for a
:class:`~schemas.messages.TopUp`. Each returns an :class:`~billing.state.Outcome` with the
messages to publish; the state lives in a :class:`BillingStore` — dictionaries in tests and in
the offline run, faust tables in ``pipeline/billing_agent.py``.

Idempotency (DESIGN.md §5): a reading is identified by (meter, register, timestamp); its
:class:`~billing.state.ReadingRecord` keeps the version charged and its consumption pieces.

* the same version again (a re-delivery) charges nothing (status ``duplicate``). With
  ``store_outcomes`` the messages it produced are kept and returned again, for a caller that
  may write state *before* its sends are acknowledged; the pipeline agent sends first and
  writes state after the acknowledgement, so it keeps the records small instead;
* an older version is ignored (``stale``);
* a newer version posts the *difference* — volume per piece, new minus charged — as an
  ``adjustment`` charge that names the charge it corrects; an estimate replaced by an actual
  read thus settles provisionally first and is corrected later, never rewritten.

A top-up is applied once per ``top_up_id`` the same way.

Ordering: the engine is deterministic for a given order of inputs per account; the agent
feeds every input of an account through one partition (keyed by account id), so readings and
top-ups of an account are applied in one order, and a replay after a crash repeats that order.

Strategy: the engine composes small pure parts — :class:`~billing.pricing.Pricer` (tariff
versions, cycles, tiers, schedules), :mod:`billing.prepaid` (alarms, cut-off, reconnect),
:mod:`billing.volume_mode` (pre-purchased m³), :class:`~billing.settlement.Settler` (days,
months, years) — and owns only the bookkeeping between them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from billing import volume_mode
from billing.errors import (
    BillingInputError,
    TopUpRefusedError,
    UnknownAccountError,
)
from billing.money import ZERO
from billing.prepaid import (
    CreditEffects,
    alarm_state,
    evaluate_credit,
    may_cross,
    safety_cause,
)
from billing.pricing import Piece, Pricer, PricingResult
from billing.settings import BillingSettings
from billing.settlement import Settler
from billing.state import (
    AccountState,
    Outcome,
    PeriodAccumulator,
    ReadingRecord,
    TopUpRecord,
)
from billing.tariffs import TariffBook
from schemas.messages import (
    BalanceChange,
    BillingControl,
    Charge,
    LedgerAccount,
    Message,
    TopUp,
    ValidatedReading,
)

__all__ = ["BillingEngine", "BillingStore", "MemoryStore", "iso_utc", "reading_key"]


class BillingStore(Protocol):
    """Where the engine keeps its state: four mutable mappings (faust tables in the agent)."""

    @property
    def accounts(self) -> MutableMapping[str, AccountState]: ...

    @property
    def readings(self) -> MutableMapping[str, ReadingRecord]: ...

    @property
    def top_ups(self) -> MutableMapping[str, TopUpRecord]: ...

    @property
    def periods(self) -> MutableMapping[str, PeriodAccumulator]: ...


@dataclass
class MemoryStore:
    """A :class:`BillingStore` in dictionaries (tests, benchmarks, the offline run)."""

    accounts: dict[str, AccountState] = field(default_factory=dict)
    readings: dict[str, ReadingRecord] = field(default_factory=dict)
    top_ups: dict[str, TopUpRecord] = field(default_factory=dict)
    periods: dict[str, PeriodAccumulator] = field(default_factory=dict)


def iso_utc(ts: datetime) -> str:
    """``2026-07-10T01:00:00Z`` — the timestamp form used inside natural keys."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.replace(tzinfo=None).isoformat() + "Z"


def reading_key(reading: ValidatedReading) -> str:
    """The key billing remembers a reading by: meter, register and timestamp (not version)."""
    return f"{reading.meter_id}|{reading.register}|{iso_utc(reading.ts)}"


def _always(_meter_id: str) -> bool:
    return True


class BillingEngine:
    """Prices readings and applies top-ups for accounts kept in a :class:`BillingStore`.

    ``accounts`` maps account ids to their ledger view and ``tariffs`` holds every tariff
    version — both are read at each call, so ledger updates apply at once. ``meter_has_valve``
    tells which meters can take valve commands (default: all an account has shown).
    """

    def __init__(self, *, tariffs: TariffBook, accounts: Mapping[str, LedgerAccount],
                 store: BillingStore | None = None, settings: BillingSettings | None = None,
                 meter_has_valve: Callable[[str], bool] | None = None) -> None:
        self.tariffs = tariffs
        self.accounts = accounts
        self.store: BillingStore = store if store is not None else MemoryStore()
        self.settings = settings or BillingSettings()
        self.meter_has_valve = meter_has_valve or _always
        self.pricer = Pricer(tariffs)
        self.settler = Settler(tariffs.tz)
        self._registers = frozenset(self.settings.billed_registers)
        self._unbillable = frozenset(self.settings.unbillable_qualities)
        self._command_ttl = timedelta(hours=self.settings.command_ttl_hours)
        self._grace = timedelta(minutes=self.settings.settle_grace_minutes)
        # The natural-key text of the last UTC timestamp: readings come in runs with one
        # timestamp (every meter's daily read at local midnight, every hourly interval).
        self._ts_text: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")

    @property
    def tz(self) -> ZoneInfo:
        return self.tariffs.tz

    # ------------------------------------------------------------------ accounts

    def ledger_account(self, account_id: str) -> LedgerAccount:
        account = self.accounts.get(account_id)
        if account is None:
            raise UnknownAccountError(
                f"account '{account_id}' is not in the billing ledger",
                where=f"account {account_id}",
                hint="publish it to ledger.accounts (CIS sync), then replay the input from "
                     "dlq.billing")
        return account

    def account_state(self, account_id: str) -> AccountState | None:
        return self.store.accounts.get(account_id)

    def _open(self, account: LedgerAccount, now: datetime,
              out: Outcome) -> tuple[AccountState, bool]:
        """The account's state (and whether it is new), created from its opening values on
        first use."""
        state = self.store.accounts.get(account.account_id)
        if state is not None:
            return state, False
        opened_at = account.opened_at or now
        state = AccountState(account_id=account.account_id, opened_at=opened_at)
        opening = account.opening_balance or ZERO
        if account.billing_mode == "prepaid_volume":
            state.volume_balance = opening
            if opening > 0:
                state.lots.append(volume_mode.opening_lot(opening))
        else:
            state.balance = opening
        credit = state.volume_balance if state.volume_balance is not None else state.balance
        state.alarm1_armed = account.alarm1 is None or credit >= account.alarm1
        state.alarm2_armed = account.alarm2 is None or credit >= account.alarm2
        state.overdraft_armed = credit >= 0
        if account.opening_cycle_volume and account.tariff_id:
            version = self.tariffs.version_at(account.tariff_id, opened_at)
            cycle = version.cycle.cycle_at(opened_at)
            state.cycle_volumes[cycle.cycle_id] = account.opening_cycle_volume
        if opening:
            out.balances.append(BalanceChange(
                entry_id=f"{account.account_id}:opening", account_id=account.account_id,
                ts=opened_at, kind="opening", amount=state.balance, balance_after=state.balance,
                currency=self.settings.currency, reference=None,
                alarm_state=alarm_state(state, account, credit),
                volume=state.volume_balance, volume_after=state.volume_balance))
        return state, True

    def _credit(self, state: AccountState) -> Decimal:
        return state.volume_balance if state.volume_balance is not None else state.balance

    def _unit(self, account: LedgerAccount) -> str:
        return "m3" if account.billing_mode == "prepaid_volume" else self.settings.currency

    def _evaluate(self, state: AccountState, account: LedgerAccount, before: Decimal,
                  after: Decimal, now: datetime) -> CreditEffects:
        return evaluate_credit(state, account, before, after, now=now,
                               unit=self._unit(account), command_ttl=self._command_ttl,
                               meter_has_valve=self.meter_has_valve)

    def _iso_utc(self, ts: datetime) -> str:
        """:func:`iso_utc`, remembering the last UTC timestamp's text."""
        if ts.tzinfo is not UTC:  # (an equal time in another zone may differ by its fold)
            return iso_utc(ts)
        last, text = self._ts_text
        if ts != last:
            text = iso_utc(ts)
            self._ts_text = (ts, text)
        return text

    # ------------------------------------------------------------------ readings

    def bill_reading(self, reading: ValidatedReading, now: datetime | None = None) -> Outcome:
        """Price one validated reading version for its account (see the module docstring).

        ``now`` stamps the outputs; the agent passes the input record's Kafka timestamp so a
        re-processing produces identical messages. Raises a
        :class:`~billing.errors.BillingError` for input that cannot be billed.
        """
        now = now or datetime.now(UTC)
        if reading.register not in self._registers or reading.kind in ("instantaneous",
                                                                        "state"):
            return Outcome(status="skipped",
                           detail=f"register '{reading.register}' ({reading.kind}) is not billed")
        account_id = reading.dims.account_id
        if not account_id:
            return Outcome(status="skipped", detail=f"meter {reading.meter_id} has no account "
                                                    "in the reading's dimensions")
        ts_text = self._iso_utc(reading.ts)
        key = f"{reading.meter_id}|{reading.register}|{ts_text}"
        record = self.store.readings.get(key)
        if record is not None:
            if reading.version < record.version:
                return Outcome(status="stale", detail=f"{key} v{reading.version} is older than "
                                                      f"the charged v{record.version}")
            if reading.version == record.version:
                again = record.outcome or Outcome()
                return Outcome(status="duplicate", detail=f"{key} v{reading.version} already "
                                                          "billed", charges=again.charges,
                               balances=again.balances, settlements=again.settlements,
                               alerts=again.alerts, commands=again.commands)
        account = self.ledger_account(account_id)
        out = Outcome()
        state, dirty_state = self._open(account, now, out)
        if reading.meter_id not in state.meters:
            state.meters.append(reading.meter_id)
            dirty_state = True
        cause = safety_cause(reading.flags)
        if cause is not None and state.safety_lock is None:
            state.safety_lock, state.safety_meter = cause, reading.meter_id
            dirty_state = True
        pieces = None if reading.quality in self._unbillable else _pieces(reading, key)
        if pieces is None:
            if dirty_state:
                self.store.accounts[account_id] = state
            out.status = "held"
            out.detail = (f"{key} v{reading.version} is {reading.quality}: billing waits for a "
                          "billable version" if reading.quality in self._unbillable
                          else f"{key} v{reading.version} carries no consumption")
            return out
        tariff_id = reading.dims.tariff_id or account.tariff_id
        if not tariff_id:
            raise BillingInputError(
                f"no tariff for account {account_id}", where=key,
                hint="give the account a tariff in the ledger (or the meter's dims a tariff_id)")
        old = record.pieces if record is not None else ()
        delta = _delta(old, pieces)
        estimated_new = _estimated(pieces)
        estimated_old = _estimated(old)
        if not delta and estimated_new == estimated_old and record is not None:
            record.version = reading.version
            self.store.readings[key] = record
            out.status = "unchanged"
            out.detail = f"{key} v{reading.version} has the consumption already charged"
            return out
        positions = dict(state.cycle_volumes)  # committed only if pricing succeeds
        priced = self.pricer.price(tariff_id, delta, positions, account.tier_override or None)
        state.cycle_volumes = positions
        charge = self._charge(reading, ts_text, account_id, tariff_id, pieces, priced, record,
                              now)
        out.charges.append(charge)
        balance_after = self._post_charge(state, account, charge, priced, now, out)
        day_key, settlements = self.settler.post(
            state, charge, estimated_new - estimated_old, balance_after, self.store.periods,
            now)
        out.settlements.extend(settlements)
        state.last_event_at = now
        self.store.accounts[account_id] = state
        self.store.readings[key] = ReadingRecord(
            account_id=account_id, version=reading.version, pieces=pieces,
            volume=(record.volume if record else ZERO) + charge.volume,
            amount=(record.amount if record else ZERO) + charge.amount,
            charge_ids=(*(record.charge_ids if record else ()), charge.charge_id),
            day_key=day_key, billed_at=now,
            outcome=out if self.settings.store_outcomes else None)
        out.status = "charged" if record is None else "adjusted"
        return out

    def _charge(self, reading: ValidatedReading, ts_text: str, account_id: str, tariff_id: str,
                pieces: tuple[Piece, ...], priced: PricingResult, record: ReadingRecord | None,
                now: datetime) -> Charge:
        version = priced.tariff_version
        return Charge(
            charge_id=f"{account_id}:{reading.meter_id}:{reading.register}:{ts_text}:"
                      f"{reading.version}",
            account_id=account_id, meter_id=reading.meter_id,
            kind="consumption" if record is None else "adjustment",
            period_start=pieces[0].start if len(pieces) == 1 else min(p.start for p in pieces),
            period_end=pieces[0].end if len(pieces) == 1 else max(p.end for p in pieces),
            volume=priced.volume, amount=priced.amount,
            currency=version.message.currency if version else self.settings.currency,
            segments=priced.segments, reading_ts=reading.ts, reading_version=reading.version,
            register=reading.register, provisional=pieces[0].estimated if len(pieces) == 1 else any(
                p.estimated for p in pieces),
            tariff_id=tariff_id, cycle_id=priced.cycle_id,
            cycle_volume_after=priced.cycle_volume_after,
            corrects=record.charge_ids[-1] if record and record.charge_ids else None,
            created_at=now)

    def _post_charge(self, state: AccountState, account: LedgerAccount, charge: Charge,
                     priced: PricingResult, now: datetime, out: Outcome) -> Decimal:
        """Move the balance for a charge; returns the money balance after it."""
        if account.billing_mode == "prepaid_volume":
            if state.volume_balance is None:
                state.volume_balance = ZERO
            before = state.volume_balance
            drawn = volume_mode.consume(state, charge)
            if drawn.receivable is not None:
                out.charges.append(drawn.receivable)
            entry_amount = -drawn.money
            after = state.volume_balance
        else:
            before = state.balance
            state.balance -= charge.amount
            after = state.balance
            entry_amount = -charge.amount
        effects = (self._evaluate(state, account, before, after, now)
                   if may_cross(state, account, before, after) else None)
        if entry_amount or after != before:
            out.balances.append(BalanceChange(
                entry_id=f"{state.account_id}:{charge.kind}:{charge.charge_id}",
                account_id=state.account_id, ts=now,
                kind="charge" if charge.kind == "consumption" else "adjustment",
                amount=entry_amount, balance_after=state.balance, currency=charge.currency,
                reference=charge.charge_id, alarm_state=alarm_state(state, account, after),
                volume=(after - before) if state.volume_balance is not None else None,
                volume_after=state.volume_balance))
        if effects is not None:
            out.alerts.extend(effects.alerts)
            out.commands.extend(effects.commands)
        return state.balance

    # ------------------------------------------------------------------ top-ups

    def apply_top_up(self, top_up: TopUp, now: datetime | None = None) -> Outcome:
        """Apply a top-up, refund or adjustment once per ``top_up_id``.

        Raises :class:`~billing.errors.TopUpRefusedError` (nothing applied) for a top-up
        that would lift the balance above the account's maximum, or an amount whose sign
        contradicts its kind.
        """
        now = now or datetime.now(UTC)
        found = self.store.top_ups.get(top_up.top_up_id)
        if found is not None:
            again = found.outcome or Outcome()
            return Outcome(status="duplicate", detail=f"top-up {top_up.top_up_id} already "
                                                      "applied", charges=again.charges,
                           balances=again.balances, settlements=again.settlements,
                           alerts=again.alerts, commands=again.commands)
        where = f"top-up {top_up.top_up_id} of account {top_up.account_id}"
        if top_up.kind == "top_up" and top_up.amount <= 0:
            raise TopUpRefusedError(f"a top-up must be positive, got {top_up.amount}",
                                    where=where, hint="send money taken back as kind=refund "
                                                      "with a negative amount")
        if top_up.kind == "refund" and top_up.amount >= 0:
            raise TopUpRefusedError(f"a refund takes money out of the account: its amount must "
                                    f"be negative, got {top_up.amount}", where=where,
                                    hint="send the refund with a negative amount")
        account = self.ledger_account(top_up.account_id)
        out = Outcome()
        state, _ = self._open(account, now, out)
        if account.billing_mode == "prepaid_volume":
            money, volume = volume_mode.plan_top_up(
                top_up, self._marginal_price(state, account, top_up.ts), where)
            before = self._credit(state)
            after = before + volume
            self._check_max(account, before, after, top_up, where)
            volume_mode.apply_top_up(state, top_up.top_up_id, money, volume)
        else:
            before = state.balance
            after = before + top_up.amount
            self._check_max(account, before, after, top_up, where)
            state.balance = after
            money, volume = top_up.amount, None
        effects = self._evaluate(state, account, before, after, now)
        out.balances.append(BalanceChange(
            entry_id=f"{state.account_id}:{top_up.kind}:{top_up.top_up_id}",
            account_id=state.account_id, ts=now, kind=top_up.kind, amount=money,
            balance_after=state.balance, currency=top_up.currency, reference=top_up.top_up_id,
            alarm_state=alarm_state(state, account, after), volume=volume,
            volume_after=state.volume_balance))
        out.alerts.extend(effects.alerts)
        out.commands.extend(effects.commands)
        state.last_event_at = now
        self.store.accounts[state.account_id] = state
        self.store.top_ups[top_up.top_up_id] = TopUpRecord(
            account_id=state.account_id, applied_at=now,
            outcome=out if self.settings.store_outcomes else None)
        out.status = "applied"
        return out

    def _check_max(self, account: LedgerAccount, before: Decimal, after: Decimal,
                   top_up: TopUp, where: str) -> None:
        if (top_up.kind == "top_up" and account.max_balance is not None
                and after > account.max_balance):
            raise TopUpRefusedError(
                f"the top-up would lift the balance from {before} to {after}, above the "
                f"account's maximum {account.max_balance}", where=where,
                hint="refund the payment or sell less; nothing was applied")

    def _marginal_price(self, state: AccountState, account: LedgerAccount,
                        ts: datetime) -> Decimal | None:
        """The unit price the next m³ of the account would pay at ``ts`` (volume mode sells
        at it when the top-up does not say how much volume it bought)."""
        if not account.tariff_id:
            return None
        version = self.tariffs.version_at(account.tariff_id, ts)
        cycle = version.cycle.cycle_at(ts)
        position = state.cycle_volumes.get(cycle.cycle_id, ZERO)
        for tier in version.tiers_for(account.tier_override or None):
            if tier.upper is None or position < tier.upper:
                if version.tou is not None:
                    return version.tou.price_at(ts).price + tier.price
                if version.realtime is not None:
                    found = version.realtime.price_at(ts)
                    return None if found is None else found.price + tier.price
                return tier.price
        return None

    # ------------------------------------------------------------------ dispatch

    def process(self, message: Message, now: datetime | None = None) -> Outcome:
        """Apply any input of ``billing.inbox``: a reading, a top-up or a control."""
        if isinstance(message, ValidatedReading):
            return self.bill_reading(message, now)
        if isinstance(message, TopUp):
            return self.apply_top_up(message, now)
        if isinstance(message, BillingControl):
            return self.apply_control(message, now)
        raise BillingInputError(f"billing does not take '{message.SCHEMA}' messages",
                                hint="send readings, top-ups and billing controls only")

    def apply_control(self, control: BillingControl, now: datetime | None = None) -> Outcome:
        """Apply a :class:`~schemas.messages.BillingControl` once per ``control_id``."""
        now = now or datetime.now(UTC)
        key = f"control:{control.control_id}"
        found = self.store.top_ups.get(key)
        if found is not None:
            again = found.outcome or Outcome()
            return Outcome(status="duplicate", detail=f"control {control.control_id} already "
                                                      "applied", settlements=again.settlements,
                           alerts=again.alerts)
        if control.action == "settle_due":
            out = self.close_due_periods(control.account_id, control.ts)
            # clock ticks are idempotent by nature and frequent: no record is kept
            return out
        if control.action == "clear_safety_lock":
            out = self.clear_safety_lock(control.account_id, now)
        elif control.action == "safety_lock":
            out = self.set_safety_lock(control.account_id, control.meter_id or "",
                                       control.reason or "other", now)
        else:
            raise BillingInputError(
                f"unknown billing control action '{control.action}'",
                where=f"control {control.control_id} of account {control.account_id}",
                hint="use settle_due, safety_lock or clear_safety_lock")
        self.store.top_ups[key] = TopUpRecord(
            account_id=control.account_id, applied_at=now,
            outcome=out if self.settings.store_outcomes else None)
        return out

    # ------------------------------------------------------------------ valves and time

    def set_safety_lock(self, account_id: str, meter_id: str, cause: str,
                        now: datetime | None = None) -> Outcome:
        """A meter of the account closed its valve for a safety cause (tamper, leak,
        overload, earthquake, battery): billing will never arm it again by itself."""
        now = now or datetime.now(UTC)
        account = self.ledger_account(account_id)
        out = Outcome()
        state, _ = self._open(account, now, out)
        if state.safety_lock is not None:
            out.status, out.detail = "unchanged", f"account {account_id} is already locked " \
                                                  f"({state.safety_lock})"
            return out
        state.safety_lock, state.safety_meter = cause, meter_id or None
        state.last_event_at = now
        self.store.accounts[account_id] = state
        out.status, out.detail = "locked", f"safety lock ({cause}) on meter {meter_id}"
        return out

    def clear_safety_lock(self, account_id: str, now: datetime | None = None) -> Outcome:
        """A person cleared the safety lock (after checking the installation). Billing does
        not open anything itself; the person's reopen goes through the control plane."""
        state = self.store.accounts.get(account_id)
        if state is None or state.safety_lock is None:
            return Outcome(status="unchanged", detail=f"account {account_id} has no safety lock")
        state.safety_lock = state.safety_meter = None
        state.last_event_at = now or datetime.now(UTC)
        self.store.accounts[account_id] = state
        return Outcome(status="cleared", detail=f"safety lock of account {account_id} cleared")

    def close_due_periods(self, account_id: str, now: datetime | None = None) -> Outcome:
        """Settle the account's days (months, years) that ended more than the grace time ago
        without a later reading to close them."""
        now = now or datetime.now(UTC)
        state = self.store.accounts.get(account_id)
        if state is None or not state.open_periods:
            return Outcome(status="unchanged")
        settlements = self.settler.close_due(state, now, self._grace, self.store.periods)
        if settlements:
            self.store.accounts[account_id] = state
        return Outcome(status="settled" if settlements else "unchanged",
                       settlements=settlements)


def _pieces(reading: ValidatedReading, key: str) -> tuple[Piece, ...] | None:
    """The consumption pieces of a reading: its intervals, else the span since the previous
    register read, else None (a baseline read with no consumption yet)."""
    estimated = reading.quality == "estimated"
    if reading.intervals:
        pieces = tuple(Piece(i.start, i.end, i.volume, i.estimated or estimated)
                       for i in reading.intervals)
        total = sum((p.volume for p in pieces), ZERO)
        if reading.consumption is not None and total != reading.consumption:
            raise BillingInputError(
                f"intervals sum to {total} but the reading's consumption is "
                f"{reading.consumption}", where=f"{key} v{reading.version}",
                hint="VEE must split the consumption exactly over the intervals")
    else:
        volume = reading.consumption
        if volume is None and reading.kind == "interval":
            volume = reading.value
        if volume is None:
            return None
        pieces = (Piece(reading.interval_start or reading.ts, reading.ts, volume, estimated),)
        total = volume
    for piece in pieces:
        if piece.end < piece.start:
            raise BillingInputError(f"consumption piece ends {iso_utc(piece.end)} before it "
                                    f"starts {iso_utc(piece.start)}",
                                    where=f"{key} v{reading.version}",
                                    hint="fix the interval bounds in VEE")
    if total < 0:
        raise BillingInputError(
            "negative consumption", where=f"{key} v{reading.version}",
            hint="a register that went backwards is a rollback or a meter exchange: VEE "
                 "should flag it and send the corrected consumption")
    return pieces


def _estimated(pieces: tuple[Piece, ...]) -> Decimal:
    total = ZERO
    for piece in pieces:
        if piece.estimated:
            total += piece.volume
    return total


def _delta(old: tuple[Piece, ...], new: tuple[Piece, ...]) -> list[Piece]:
    """New pieces minus the charged ones, piece by piece (matched on their bounds)."""
    if not old:
        return list(new)
    if old == new:
        return []
    charged = {(p.start, p.end): p for p in old}
    out: list[Piece] = []
    for piece in new:
        before = charged.pop((piece.start, piece.end), None)
        if before is None:
            out.append(piece)
        elif before.volume != piece.volume:
            out.append(Piece(piece.start, piece.end, piece.volume - before.volume,
                             piece.estimated))
    out.extend(Piece(p.start, p.end, -p.volume, p.estimated) for p in charged.values())
    return out
