"""The billing agent: an account's readings and top-ups in one order; charges, balances,
settlements, alerts and valve requests out. Wiring only — the logic is in ``billing/``.

Topology::

    readings.validated (key: meter)   --billing_route-->  billing.inbox (key: account)
    billing.topups     (key: account) --billing_topups->  billing.inbox
    device.events      (key: device)  --billing_events->  billing.inbox (safety closes, as
                                                          BillingControl safety_lock)
    settlement clock (timer)          --settle_due----->  billing.inbox
    billing.inbox --billing--> billing.charges, billing.balances, billing.settlements,
                               alerts, commands.requests   (bad input: dlq.billing)

Why the hop through ``billing.inbox``: an account's state (balance, tier position, charged
readings) must live in exactly one partition, and an account's meters arrive on the
partitions of their meter ids. Re-keying every billable reading, every top-up and every
control by account id puts all of an account's inputs into one partition of one log, so
they are applied one at a time in one order — a top-up racing with consumption is applied
before or after it, never interleaved with it, and a replay after a crash repeats the same
order and so the same alarms and valve decisions.

State lives in four faust tables (accounts, charged readings, applied top-ups and controls,
settled periods), co-partitioned with ``billing.inbox``. A batch is processed against a
write buffer over them (:class:`billing.store.BufferedStore`); the app sends the outputs,
waits for the broker's acknowledgement, and only then the buffer is flushed into the tables.
Decoded account states are kept between batches (``pipeline.billing_state_cache``) while the
accounts table still holds exactly the bytes this worker wrote; a batch takes the entries it
reads out and only its flush puts them back (:class:`billing.store.DecodedCache`).
Outputs carry deterministic ids (charge, entry, settlement revision, alert and command ids)
and the input's own time, so a replayed batch produces the same messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from billing.engine import BillingEngine
from billing.errors import BillingError, TariffError
from billing.settings import BillingSettings
from billing.state import AccountState, Outcome, decode_state
from billing.store import BufferedStore, DecodedCache
from billing.tariffs import TariffBook
from pipeline.app import BatchResult, Incoming, Output, PipelineApp
from pipeline.ledger import LedgerView
from schemas.messages import (
    Alert,
    BalanceChange,
    BillingControl,
    Charge,
    CommandRequest,
    DeviceEvent,
    LedgerAccount,
    Message,
    Settlement,
    TopUp,
    ValidatedReading,
)

__all__ = ["register"]

log = logging.getLogger(__name__)

#: Where each output type is published.
OUTPUT_TOPICS: dict[type[Message], str] = {
    Charge: "billing.charges",
    BalanceChange: "billing.balances",
    Settlement: "billing.settlements",
    Alert: "alerts",
    CommandRequest: "commands.requests",
}

INBOX = "billing.inbox"
#: Safety causes of a valve close (the control plane's ``SafetyCause`` values).
SAFETY_CAUSES = frozenset({"tamper", "leak", "overload", "earthquake", "battery", "other"})
_INBOX_TYPES = (ValidatedReading, TopUp, BillingControl)


class LedgerAccounts(Mapping[str, LedgerAccount]):
    """The ledger view's accounts as the mapping the engine reads."""

    def __init__(self, ledger: LedgerView) -> None:
        self.ledger = ledger

    def get(self, key: str, default: object = None) -> LedgerAccount | None:  # type: ignore[override]
        found = self.ledger.account(key)
        return found if found is not None else default  # type: ignore[return-value]

    def __getitem__(self, key: str) -> LedgerAccount:
        found = self.ledger.account(key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError("the ledger's accounts are looked up, not listed")

    def __len__(self) -> int:
        raise NotImplementedError("the ledger's accounts are looked up, not listed")


def input_time(message: Message) -> datetime:
    """The input's own time, used as "now" for its outputs (a replay gives the same)."""
    if isinstance(message, ValidatedReading):
        return message.validated_at or message.received_at or message.ts
    if isinstance(message, TopUp | BillingControl):
        return message.ts
    return datetime.now(UTC)


def message_id(message: Message) -> str | None:
    """A deterministic envelope id for an output (its natural key)."""
    if isinstance(message, Charge):
        return message.charge_id
    if isinstance(message, BalanceChange):
        return message.entry_id
    if isinstance(message, Settlement):
        return f"{message.settlement_id}:{message.revision}"
    if isinstance(message, Alert):
        return message.alert_id
    if isinstance(message, CommandRequest):
        return message.command_id
    return None


class BillingWiring:
    """What the three agents share: settings, tariff book, ledger lookups and tables."""

    def __init__(self, app: PipelineApp, settings: BillingSettings | None = None) -> None:
        self.app = app
        self.settings = settings or BillingSettings()
        self.tz = ZoneInfo(app.utility.timezone)
        self.book = TariffBook(self.tz)
        self.accounts = LedgerAccounts(app.ledger)
        self.registers = frozenset(self.settings.billed_registers)
        self.tables = (
            app.table("billing_accounts", help_text="billing state per account"),
            app.table("billing_readings", help_text="charged reading versions"),
            app.table("billing_applied", help_text="applied top-ups and controls"),
            app.table("billing_periods", help_text="settled days, months and years"),
        )
        self.grace = timedelta(minutes=self.settings.settle_grace_minutes)
        #: decoded account states between batches (see the module doc)
        self.account_cache: DecodedCache[AccountState] = DecodedCache(
            app.settings.billing_state_cache)

    def meter_has_valve(self, meter_id: str) -> bool:
        meter = self.app.ledger.meter(meter_id)
        return meter is None or meter.has_valve  # unknown: the control plane decides

    def billable(self, reading: ValidatedReading) -> bool:
        return (bool(reading.dims.account_id) and reading.register in self.registers
                and reading.kind not in ("instantaneous", "state"))

    # ------------------------------------------------------------------ the agents' bodies

    def route(self, batch: list[Incoming[ValidatedReading]]) -> BatchResult:
        """Forward billable readings, unchanged, to the inbox keyed by their account."""
        outputs = [Output(INBOX, (item.message.dims.account_id or "").encode(), item.raw)
                   for item in batch if self.billable(item.message)]
        return BatchResult(outputs=outputs)

    def forward_top_ups(self, batch: list[Incoming[TopUp]]) -> BatchResult:
        """Forward top-ups, unchanged, to the inbox keyed by their account."""
        return BatchResult(outputs=[Output(INBOX, item.message.account_id.encode(), item.raw)
                                    for item in batch])

    def forward_safety_closes(self, batch: list[Incoming[DeviceEvent]]) -> BatchResult:
        """A valve closed for a safety cause becomes a ``safety_lock`` control of its
        account (the same event vocabulary the control plane's safety policy reads)."""
        outputs = []
        for item in batch:
            event = item.message
            attrs = event.attributes
            cause = str(attrs.get("cause") or attrs.get("alarm") or "")
            if attrs.get("valve") != "closed" or cause not in SAFETY_CAUSES:
                continue
            meter_id = event.meter_id or event.device_id
            meter = self.app.ledger.meter(meter_id)
            if meter is None or not meter.account_id:
                continue
            control = BillingControl(control_id=f"safety:{event.event_id}",
                                     account_id=meter.account_id, action="safety_lock",
                                     ts=event.ts, requested_by=f"device:{event.device_id}",
                                     reason=cause, meter_id=meter_id)
            outputs.append(self.app.output(INBOX, control, event_time=event.ts,
                                           message_id=control.control_id))
        return BatchResult(outputs=outputs)

    def bill(self, batch: list[Incoming[Message]]) -> BatchResult:
        """Apply a batch of inbox messages; state is written after the outputs are sent."""
        store = BufferedStore.over_tables(*self.tables, account_cache=self.account_cache)
        engine = BillingEngine(tariffs=self.book, accounts=self.accounts, store=store,
                               settings=self.settings, meter_has_valve=self.meter_has_valve)
        tariff_errors = self._sync_tariffs(batch)
        outputs: list[Output] = []
        for item in batch:
            message = item.message
            try:
                error = tariff_errors.get(self._tariff_of(message) or "")
                if error is not None:
                    raise error
                outcome = engine.process(message, now=input_time(message))
            except BillingError as exc:
                log.warning("billing refused %s[%d]@%d: %s", item.topic, item.partition,
                            item.offset, exc)
                outputs.append(self.app.dead_letter(
                    exc, value=item.raw, key=item.key, topic=item.topic,
                    partition=item.partition, offset=item.offset, stage="billing"))
                continue
            outputs.extend(self._outputs(outcome, input_time(message)))
        return BatchResult(outputs=outputs, after_send=store.flush)

    def _outputs(self, outcome: Outcome, event_time: datetime) -> list[Output]:
        return [self.app.output(OUTPUT_TOPICS[type(m)], m, event_time=event_time,
                                message_id=message_id(m))
                for m in outcome.messages()]

    def _tariff_of(self, message: Message) -> str | None:
        if isinstance(message, ValidatedReading) and message.dims.tariff_id:
            return message.dims.tariff_id
        account_id = getattr(message, "account_id", None) or (
            message.dims.account_id if isinstance(message, ValidatedReading) else None)
        account = self.app.ledger.account(account_id) if account_id else None
        return account.tariff_id if account is not None else None

    def _sync_tariffs(self, batch: list[Incoming[Message]]) -> dict[str, TariffError]:
        """Bring the tariff book up to date with the ledger for the batch's tariffs."""
        errors: dict[str, TariffError] = {}
        for tariff_id in {t for t in (self._tariff_of(i.message) for i in batch) if t}:
            try:
                self.book.sync(tariff_id, self.app.ledger.tariff_versions(tariff_id))
            except TariffError as exc:
                errors[tariff_id] = exc
        return errors

    # ------------------------------------------------------------------ the settlement clock

    def due_controls(self, now: datetime) -> list[Output]:
        """``settle_due`` controls for the local accounts with periods past their grace."""
        outputs = []
        stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M")
        for _key, value in list(self.tables[0].items()):
            if value is None or b'"open_periods":{}' in value:
                continue
            state = decode_state(value, AccountState)
            if not state.open_periods:
                continue
            if min(p.end for p in state.open_periods.values()) + self.grace > now:
                continue
            control = BillingControl(control_id=f"settle:{state.account_id}:{stamp}",
                                     account_id=state.account_id, action="settle_due", ts=now)
            outputs.append(self.app.output(INBOX, control, event_time=now,
                                           message_id=control.control_id))
        return outputs


def register(app: PipelineApp) -> None:
    """Register the billing agents and the settlement clock on ``app``."""
    wiring = BillingWiring(app)
    app.batch_agent("readings.validated", ValidatedReading, name="billing_route")(wiring.route)
    app.batch_agent("billing.topups", TopUp, name="billing_topups")(wiring.forward_top_ups)
    app.batch_agent("device.events", DeviceEvent,
                    name="billing_events")(wiring.forward_safety_closes)
    app.batch_agent(INBOX, _INBOX_TYPES, name="billing")(wiring.bill)

    async def settlement_clock() -> None:
        outputs = wiring.due_controls(datetime.now(UTC))
        if outputs:
            log.info("settlement clock: %d account(s) with periods due", len(outputs))
            await app.sender.send(outputs)

    app.faust.timer(interval=wiring.settings.settle_check_minutes * 60.0,
                    name="billing_settlement_clock")(settlement_clock)
    app.billing = wiring  # type: ignore[attr-defined]  # for tests and introspection
