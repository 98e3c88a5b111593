"""The message types that travel on Kafka (DESIGN.md §3).

Strategy: every payload is a frozen ``msgspec.Struct`` whose identity — schema name and
version — are class attributes (``SCHEMA``, ``VERSION``), the one source of truth the codec's
registry is built from. Quantities are ``Decimal`` (a BCD register value of 12345.67 m³ stays
exactly that, and money must be decimal); times are timezone-aware and produced in UTC.

Compatibility rules (checked by ``tests/schemas/test_compat.py`` against golden v1 messages):
a new field gets a default, so old messages still decode; a field is never renamed, retyped
or removed within a major version; a change that cannot follow these rules bumps ``VERSION``
and the decoder keeps reading the old one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

import msgspec

__all__ = [
    "MAX_BATCH_READINGS",
    "MESSAGE_TYPES",
    "Alert",
    "AwareDatetime",
    "BalanceChange",
    "BillingControl",
    "Charge",
    "ChargeSegment",
    "CommandDispatch",
    "CommandRequest",
    "CommandResult",
    "DeadLetter",
    "DeviceEvent",
    "Dimensions",
    "EditInfo",
    "IntervalConsumption",
    "LedgerAccount",
    "LedgerMeter",
    "LedgerTariff",
    "LedgerVeeGroup",
    "Message",
    "RawFrame",
    "Reading",
    "ReadingBatch",
    "ReadingEdit",
    "Settlement",
    "SyncAccount",
    "SyncCollectionRequirement",
    "SyncCustomer",
    "SyncDataAvailability",
    "SyncDeviceParameters",
    "SyncDeviceStatus",
    "SyncMeter",
    "SyncReject",
    "SyncServiceException",
    "SyncTariff",
    "TariffTier",
    "TopUp",
    "ValidatedReading",
    "batches_of",
    "readings_of",
]

#: A datetime that must carry a time zone (msgspec rejects naive values when decoding).
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]

#: JSON scalars allowed in free-form attribute maps (money goes as a decimal string).
Scalar = str | int | float | bool | None

Direction = Literal["in", "out"]
ReadingKind = Literal["cumulative", "interval", "instantaneous", "state"]
Quality = Literal[
    "actual", "validated", "estimated", "edited", "missing", "questionable", "final", "derived",
]
Method = Literal[
    "none", "linear", "flat", "like_day", "average_like_day", "profile", "average_daily",
    "scaled_to_register", "check_meter", "zero", "agreed", "manual", "meter_history",
]
Severity = Literal["info", "warning", "major", "critical"]


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every payload. ``SCHEMA``/``VERSION`` identify it inside the envelope."""

    SCHEMA: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def key(self) -> bytes:
        """The Kafka key of this message (DESIGN.md §3): meter, device, account or object id."""
        raise NotImplementedError


# --------------------------------------------------------------------------- ingest


class RawFrame(Message, frozen=True, kw_only=True):
    """One frame exactly as it crossed the wire, in either direction.

    Kept for audit, for replay through a newer decoder, and for the fault-test oracle.
    ``frame_id`` is unique per FEP instance (``fep/session/sequence``), so an archive sink can
    store it idempotently.
    """

    SCHEMA: ClassVar[str] = "frame.raw"
    VERSION: ClassVar[int] = 1

    frame_id: str
    device_id: str
    fep: str
    service_point: str
    peer: str
    protocol: str
    direction: Direction
    received_at: AwareDatetime
    data: bytes
    valid: bool = True
    error: str | None = None

    def key(self) -> bytes:
        return (self.device_id or self.peer).encode()


class Reading(Message, frozen=True, kw_only=True):
    """A canonical reading as decoded from a device, before any validation.

    ``register`` is a canonical register name (``volume``, ``volume_settlement``,
    ``energy_import``, ``heat_energy``, ``flow_rate``, ``remaining_money`` …) and ``unit`` a
    canonical unit (``m3``, ``kWh``, ``GJ``, ``m3/h``, ``degC``, ``CNY`` …); the report
    templates of ``decoders/`` map protocol data items onto them. The natural key is
    (``meter_id``, ``register``, ``ts``): a device re-sending the same reading produces the
    same key, which is how every writer stays idempotent.
    """

    SCHEMA: ClassVar[str] = "reading.raw"
    VERSION: ClassVar[int] = 1

    meter_id: str
    register: str
    ts: AwareDatetime
    value: Decimal
    unit: str
    received_at: AwareDatetime
    kind: ReadingKind = "cumulative"
    interval_s: int | None = None
    meter_clock: AwareDatetime | None = None
    source: str = "tcp"
    device_id: str = ""
    fep: str = ""
    protocol: str = ""
    status: tuple[str, ...] = ()
    frame_id: str | None = None

    def key(self) -> bytes:
        return self.meter_id.encode()


#: The most readings one ``reading.raw.batch`` carries: a frame with more for one meter
#: (a long load profile) goes out as several batches. 256 readings are about 90 KB of JSON,
#: well under Kafka's default 1 MB record limit.
MAX_BATCH_READINGS = 256


class ReadingBatch(Message, frozen=True, kw_only=True):
    """The readings of one meter decoded from one frame, as one record of ``readings.raw``.

    A frame often carries several readings of a meter — the registers of one upload, a pack
    of hourly values from an NB-IoT meter, a load profile — and a record per reading costs
    every hop (producer, broker, each consumer's fetch and dispatch) as much as the reading
    itself. FEPs therefore publish one batch per meter and frame; consumers take the readings
    in order (:func:`readings_of`). Each reading is complete on its own (natural key, times,
    source, frame id), so a consumer never needs the batch to interpret one. Every reading
    must be of ``meter_id`` (the record's key) and a batch is never empty; a payload that
    breaks either rule does not decode.
    """

    SCHEMA: ClassVar[str] = "reading.raw.batch"
    VERSION: ClassVar[int] = 1

    meter_id: str
    readings: tuple[Reading, ...]

    def __post_init__(self) -> None:
        if not self.readings:
            raise ValueError("a reading batch carries at least one reading")
        for number, reading in enumerate(self.readings):
            if reading.meter_id != self.meter_id:
                raise ValueError(
                    f"reading {number} is of meter '{reading.meter_id}', not of the batch's "
                    f"meter '{self.meter_id}'")

    def key(self) -> bytes:
        return self.meter_id.encode()


def batches_of(readings: Iterable[Reading]) -> list[ReadingBatch]:
    """``readings`` as ``readings.raw`` batches: one per meter, in the order they came, split
    after :data:`MAX_BATCH_READINGS`."""
    by_meter: dict[str, list[Reading]] = {}
    for reading in readings:
        by_meter.setdefault(reading.meter_id, []).append(reading)
    return [ReadingBatch(meter_id=meter_id, readings=tuple(group[i:i + MAX_BATCH_READINGS]))
            for meter_id, group in by_meter.items()
            for i in range(0, len(group), MAX_BATCH_READINGS)]


def readings_of(message: Reading | ReadingBatch) -> tuple[Reading, ...]:
    """The readings a ``readings.raw`` message carries, in order (one, or a batch's)."""
    if isinstance(message, ReadingBatch):
        return message.readings
    return (message,)


class DeviceEvent(Message, frozen=True, kw_only=True):
    """Something a device or its link did: online/offline, login, heartbeat, alarm, status.

    ``kind`` examples: ``online``, ``offline``, ``login``, ``logout``, ``heartbeat``,
    ``alarm``, ``status``, ``admission_rejected``, ``clock_set``, ``valve_changed``.
    """

    SCHEMA: ClassVar[str] = "device.event"
    VERSION: ClassVar[int] = 1

    event_id: str
    device_id: str
    kind: str
    ts: AwareDatetime
    meter_id: str | None = None
    fep: str = ""
    severity: Severity = "info"
    attributes: dict[str, Scalar] = msgspec.field(default_factory=dict)

    def key(self) -> bytes:
        return self.device_id.encode()


# --------------------------------------------------------------------------- pipeline


class Dimensions(msgspec.Struct, frozen=True, kw_only=True):
    """Ledger dimensions attached to a reading at enrichment time (DESIGN.md §4).

    Aggregates group by these without joins, and history keeps the attribution it had when the
    reading was validated, even after a customer moves or a tariff changes.
    """

    account_id: str | None = None
    customer_type: str | None = None
    region: str | None = None
    org_unit: str | None = None
    supply_node: str | None = None
    tariff_id: str | None = None
    vee_group: str | None = None
    medium: str | None = None


class IntervalConsumption(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a reading's consumption that falls in one UTC hour ``[start, end)``.

    A delta between two register reads that spans several hours is prorated over them, so
    hourly, daily and monthly aggregates sum correctly whatever the reading frequency.
    """

    start: AwareDatetime
    end: AwareDatetime
    volume: Decimal
    estimated: bool = False


class EditInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Who changed a validated value, when, why and how (kept with every new version)."""

    user: str
    at: AwareDatetime
    reason_code: str
    previous_value: Decimal | None = None
    previous_version: int | None = None
    note: str | None = None


class ValidatedReading(Message, frozen=True, kw_only=True):
    """A reading after VEE: quality, method, event flags, version and interval consumption.

    Natural key (``meter_id``, ``register``, ``ts``, ``version``). A late or corrected reading
    produces a higher ``version`` of the same key; consumers keep the highest version.
    ``value`` is ``None`` only for a ``missing`` marker that no rule could estimate.
    ``original_value`` keeps what the device sent when the value was estimated or edited.
    """

    SCHEMA: ClassVar[str] = "reading.validated"
    VERSION: ClassVar[int] = 1

    meter_id: str
    register: str
    ts: AwareDatetime
    value: Decimal | None
    unit: str
    version: int
    quality: Quality
    method: Method = "none"
    flags: tuple[str, ...] = ()
    kind: ReadingKind = "cumulative"
    consumption: Decimal | None = None
    interval_start: AwareDatetime | None = None
    intervals: tuple[IntervalConsumption, ...] = ()
    original_value: Decimal | None = None
    received_at: AwareDatetime | None = None
    validated_at: AwareDatetime | None = None
    dims: Dimensions = msgspec.field(default_factory=Dimensions)
    edit: EditInfo | None = None
    source: str = ""
    frame_id: str | None = None

    def key(self) -> bytes:
        return self.meter_id.encode()


class ReadingEdit(Message, frozen=True, kw_only=True):
    """A change to a validated value asked for by a person or a process: VEE applies it.

    The VEE agent re-validates the value with the meter's manual-override rule group and
    produces a new version of (``meter_id``, ``register``, ``ts``) carrying who, when, why
    (``reason_code``) and how (``method``), with the previous value and version kept.
    ``value=None`` keeps the current value (e.g. only to make it ``final``). A ``final``
    value is never replaced by a later automatic estimate. ``edit_id`` makes it idempotent.
    """

    SCHEMA: ClassVar[str] = "reading.edit"
    VERSION: ClassVar[int] = 1

    edit_id: str
    meter_id: str
    register: str
    ts: AwareDatetime
    user: str
    at: AwareDatetime
    reason_code: str
    value: Decimal | None = None
    method: Method = "manual"
    final: bool = False
    note: str | None = None

    def key(self) -> bytes:
        return self.meter_id.encode()


# --------------------------------------------------------------------------- billing


class ChargeSegment(msgspec.Struct, frozen=True, kw_only=True):
    """One priced piece of a charge: a volume at one tier, price component and tariff version.

    ``amount`` is ``volume × unit_price`` rounded half-up to 0.01 — money is rounded once per
    segment, and a charge's amount is the sum of its segments. A tier whose price is split into
    components (water: tap water, resource fee, sewage fee) gives one segment per component.
    A negative volume and amount reverse part of an earlier charge (an adjustment).
    """

    tier: int
    volume: Decimal
    unit_price: Decimal
    amount: Decimal
    component: str = "total"
    tariff_id: str = ""
    tariff_version: int = 1
    #: Time-of-use period name (``peak``, ``valley`` …) or, for a real-time tariff, the start
    #: of the priced interval in ISO form; empty for step and flat tariffs.
    period: str = ""


class Charge(Message, frozen=True, kw_only=True):
    """Priced consumption of one account for one reading version (or an adjustment).

    ``charge_id`` is the natural key. An adjustment (``kind='adjustment'``) carries the
    difference between a new reading version and what was charged before, and names the charge
    it corrects in ``corrects``; history is never rewritten.
    """

    SCHEMA: ClassVar[str] = "billing.charge"
    VERSION: ClassVar[int] = 1

    charge_id: str
    account_id: str
    meter_id: str
    kind: Literal["consumption", "adjustment", "settlement", "receivable", "bill"]
    period_start: AwareDatetime
    period_end: AwareDatetime
    volume: Decimal
    amount: Decimal
    currency: str = "CNY"
    segments: tuple[ChargeSegment, ...] = ()
    reading_ts: AwareDatetime | None = None
    reading_version: int | None = None
    register: str = ""
    provisional: bool = False
    tariff_id: str = ""
    cycle_id: str = ""
    cycle_volume_after: Decimal | None = None
    corrects: str | None = None
    created_at: AwareDatetime | None = None

    def key(self) -> bytes:
        return self.account_id.encode()


class BalanceChange(Message, frozen=True, kw_only=True):
    """A movement of a prepaid account's balance, with the balance after it.

    ``kind``: ``charge``, ``top_up``, ``adjustment``, ``refund``, ``opening``, ``settlement``.
    ``entry_id`` is the natural key; ``amount`` is signed (a charge is negative).
    """

    SCHEMA: ClassVar[str] = "billing.balance"
    VERSION: ClassVar[int] = 1

    entry_id: str
    account_id: str
    ts: AwareDatetime
    kind: str
    amount: Decimal
    balance_after: Decimal
    currency: str = "CNY"
    reference: str | None = None
    alarm_state: str | None = None
    #: Volume-mode accounts (pre-purchased m³): the signed volume moved and the m³ left.
    #: ``amount``/``balance_after`` then carry the money value at the purchase prices.
    volume: Decimal | None = None
    volume_after: Decimal | None = None

    def key(self) -> bytes:
        return self.account_id.encode()


class TopUp(Message, frozen=True, kw_only=True):
    """Money paid into a prepaid account (counter, app, bank, IC-card sale), or taken back.

    Comes from the utility's customer/billing system through the sync topics; the billing
    agent applies it to the balance exactly once per ``top_up_id``. ``kind='refund'`` and
    ``kind='adjustment'`` carry signed amounts decided by the utility.
    """

    SCHEMA: ClassVar[str] = "billing.topup"
    VERSION: ClassVar[int] = 1

    top_up_id: str
    account_id: str
    amount: Decimal
    ts: AwareDatetime
    kind: Literal["top_up", "refund", "adjustment"] = "top_up"
    channel: str = ""
    currency: str = "CNY"
    operator: str | None = None
    reason: str = ""
    #: Volume-mode accounts: the m³ sold for ``amount`` (None: billing buys at the tariff).
    volume: Decimal | None = None

    def key(self) -> bytes:
        return self.account_id.encode()


class Settlement(Message, frozen=True, kw_only=True):
    """Settled consumption of one account for one local day, month or year (a bill).

    The billing engine settles each local day (the utility's time zone) once the day is over
    and a later reading arrived or the agent's clock closed it, and rolls days up into month
    and year settlements — the monthly and yearly bills of accounts whose meters have no
    billing functions. A correction to a settled period (an actual reading replacing an
    estimate, a re-validated value) publishes the next ``revision`` of the same
    ``settlement_id``; consumers keep the highest revision and may keep the history.
    ``provisional`` is true while ``estimated_volume`` > 0 (estimated days are settled
    provisionally and corrected by adjustments when actual readings arrive).
    Natural key (``settlement_id``, ``revision``).
    """

    SCHEMA: ClassVar[str] = "billing.settlement"
    VERSION: ClassVar[int] = 1

    settlement_id: str
    account_id: str
    period: Literal["day", "month", "year"]
    period_id: str
    period_start: AwareDatetime
    period_end: AwareDatetime
    revision: int
    volume: Decimal
    amount: Decimal
    currency: str = "CNY"
    estimated_volume: Decimal = Decimal("0")
    provisional: bool = False
    segments: tuple[ChargeSegment, ...] = ()
    charges: int = 0
    meters: tuple[str, ...] = ()
    tariff_id: str = ""
    cycle_id: str = ""
    cycle_volume_after: Decimal | None = None
    balance_after: Decimal | None = None
    created_at: AwareDatetime | None = None

    def key(self) -> bytes:
        return self.account_id.encode()


class BillingControl(Message, frozen=True, kw_only=True):
    """An instruction to the billing agent about one account, applied in the account's order.

    It travels on ``billing.inbox`` with the account's readings and top-ups, so it is applied
    between them exactly where it was sent. ``action`` values the agent understands:

    * ``settle_due`` — settle the days, months and years of the account that ended more than
      the grace time before ``ts`` (sent by the agent's own clock for quiet accounts);
    * ``safety_lock`` — meter ``meter_id`` closed its valve for the safety cause in
      ``reason`` (tamper, leak, overload, earthquake, battery, other); billing never arms a
      locked account's valves (forwarded by the agent from ``device.events``);
    * ``clear_safety_lock`` — a person checked the installation after a safety close
      (``requested_by``, ``reason``); billing will again arm the valve after later top-ups,
      but never opens anything because of this instruction itself.

    ``control_id`` is the natural key: an instruction delivered twice is applied once.
    """

    SCHEMA: ClassVar[str] = "billing.control"
    VERSION: ClassVar[int] = 1

    control_id: str
    account_id: str
    action: str
    ts: AwareDatetime
    requested_by: str = "billing"
    reason: str = ""
    meter_id: str | None = None

    def key(self) -> bytes:
        return self.account_id.encode()


# --------------------------------------------------------------------------- operations


class Alert(Message, frozen=True, kw_only=True):
    """An operator alert: what object, how severe, which rule or condition, and why."""

    SCHEMA: ClassVar[str] = "alert"
    VERSION: ClassVar[int] = 1

    alert_id: str
    object_type: str
    object_id: str
    severity: Severity
    code: str
    reason: str
    ts: AwareDatetime
    source: str = ""
    state: Literal["raised", "cleared"] = "raised"
    attributes: dict[str, Scalar] = msgspec.field(default_factory=dict)

    def key(self) -> bytes:
        return self.object_id.encode()


class CommandRequest(Message, frozen=True, kw_only=True):
    """A request to act on a device, from the API, the CLI, billing or a service operation.

    ``command`` is a catalog name (``valve_close``, ``read_now`` …); ``params`` its typed
    parameters as JSON values. ``client_command_id`` makes submission idempotent.
    """

    SCHEMA: ClassVar[str] = "command.request"
    VERSION: ClassVar[int] = 1

    command_id: str
    device_id: str
    command: str
    requested_by: str
    requested_at: AwareDatetime
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    client_command_id: str | None = None
    origin: str = "api"
    reason: str = ""
    expires_at: AwareDatetime | None = None
    priority: int = 5
    group_id: str | None = None

    def key(self) -> bytes:
        return self.device_id.encode()


class CommandDispatch(Message, frozen=True, kw_only=True):
    """An approved command routed to the FEP that holds the device's link.

    The FEP encodes it with ``decoders/`` for ``protocol``/``address``, delivers it through
    ``link_id`` now, or on the device's next wake-up when ``delivery='on_wake'``.
    """

    SCHEMA: ClassVar[str] = "command.dispatch"
    VERSION: ClassVar[int] = 1

    command_id: str
    device_id: str
    command: str
    protocol: str
    address: str
    dispatched_at: AwareDatetime
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    device_type: str = ""
    link_id: str | None = None
    fep: str | None = None
    service_point: str | None = None
    delivery: Literal["now", "on_wake"] = "now"
    attempt: int = 1
    max_attempts: int = 3
    reply_timeout_s: float = 10.0
    expires_at: AwareDatetime | None = None
    #: The ``decoders`` protocol (registry name, ``protocol[:variant]``) that encodes this
    #: command; ``command`` and ``params`` are then exactly what its encoder takes:
    #: ``get_protocol(handler).encode_command(command, address, params, ...)``. A
    #: ``sync_time`` without ``time`` is set to the FEP's clock at delivery. The options are
    #: the device type's handler options, for information (already merged into ``params``).
    handler: str = ""
    handler_options: dict[str, Scalar] = msgspec.field(default_factory=dict)

    def key(self) -> bytes:
        return self.device_id.encode()


class CommandResult(Message, frozen=True, kw_only=True):
    """What happened to a dispatched command at the FEP and at the device."""

    SCHEMA: ClassVar[str] = "command.result"
    VERSION: ClassVar[int] = 1

    command_id: str
    device_id: str
    status: Literal["queued", "sent", "delivered", "confirmed", "failed", "expired", "rejected"]
    ts: AwareDatetime
    fep: str = ""
    attempt: int = 1
    detail: str = ""
    error_code: str | None = None
    reply: dict[str, Any] = msgspec.field(default_factory=dict)

    def key(self) -> bytes:
        return self.device_id.encode()


class DeadLetter(Message, frozen=True, kw_only=True):
    """Input a stage could not use: the reason and the original bytes, so nothing is lost."""

    SCHEMA: ClassVar[str] = "dlq.record"
    VERSION: ClassVar[int] = 1

    stage: str
    reason: dict[str, Scalar]
    ts: AwareDatetime
    value: bytes
    key_bytes: bytes | None = None
    source_topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def key(self) -> bytes:
        return self.key_bytes or b""


# --------------------------------------------------------------------------- ledger (compacted)


class LedgerMeter(Message, frozen=True, kw_only=True):
    """A meter as the stream needs it: identity, register shape, and its billing dimensions."""

    SCHEMA: ClassVar[str] = "ledger.meter"
    VERSION: ClassVar[int] = 1

    meter_id: str
    status: Literal["in_stock", "installed", "active", "removed"]
    medium: Literal["gas", "water", "heat", "electricity"]
    updated_at: AwareDatetime
    address: str = ""
    device_type: str = ""
    protocol: str = ""
    manufacturer: str = ""
    size: str | None = None
    qmax: Decimal | None = None
    register_digits: int = 5
    register_decimals: int = 3
    unit: str = "m3"
    has_valve: bool = False
    link_id: str | None = None
    service_point: str | None = None
    account_id: str | None = None
    customer_type: str | None = None
    region: str | None = None
    org_unit: str | None = None
    supply_node: str | None = None
    tariff_id: str | None = None
    vee_group: str | None = None
    installed_at: AwareDatetime | None = None
    removed_at: AwareDatetime | None = None
    ledger_version: int = 1
    #: Measuring point number (376.1 ``pN``) of the meter in its concentrator's archive:
    #: how a concentrator's class 1/2 data names it.
    point_no: int | None = None

    def key(self) -> bytes:
        return self.meter_id.encode()


class LedgerAccount(Message, frozen=True, kw_only=True):
    """A billing account without personal data: mode, limits, tariff, protection.

    Limits are in the account's credit unit (money; m³ for ``prepaid_volume``): alarm levels
    1 and 2 warn when the balance falls below them, the supply is cut off when the balance
    falls below ``-overdraft_limit`` and re-armed when a top-up lifts it above
    ``reconnect_limit``; ``max_balance`` refuses hoarding top-ups. ``tier_override`` maps a tier
    number (``"1"``) to the upper volume that replaces the tariff's for this account (large
    households). ``protected`` accounts are never cut off for debt.
    """

    SCHEMA: ClassVar[str] = "ledger.account"
    VERSION: ClassVar[int] = 1

    account_id: str
    customer_type: str
    billing_mode: Literal["prepaid_money", "prepaid_volume", "postpaid"]
    updated_at: AwareDatetime
    customer_id: str | None = None
    tariff_id: str | None = None
    status: Literal["active", "suspended", "closed"] = "active"
    protected: bool = False
    alarm1: Decimal | None = None
    alarm2: Decimal | None = None
    overdraft_limit: Decimal = Decimal("0")
    max_balance: Decimal | None = None
    reconnect_limit: Decimal = Decimal("0")
    tier_override: dict[str, Decimal] = msgspec.field(default_factory=dict)
    region: str | None = None
    ledger_version: int = 1
    #: Where billing starts for an account taken over from another system: the credit then
    #: (money; m³ for ``prepaid_volume``) and the volume already used in the tier cycle.
    opening_balance: Decimal | None = None
    opening_cycle_volume: Decimal | None = None
    opened_at: AwareDatetime | None = None

    def key(self) -> bytes:
        return self.account_id.encode()


class TariffTier(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a step tariff: volume up to ``upper`` (None = no limit) at ``price``.

    ``components`` splits the price into the parts owed to different parties (water: tap
    water, water-resource fee, sewage fee); they sum to ``price``.
    """

    upper: Decimal | None
    price: Decimal
    components: dict[str, Decimal] = msgspec.field(default_factory=dict)


class LedgerTariff(Message, frozen=True, kw_only=True):
    """One effective-dated version of a tariff (step, flat, time-of-use or real-time).

    The version in force at an instant is the one with the latest ``effective_from`` not after
    it (``effective_to`` ends a version early). ``tou`` holds the time-of-use schedule or the
    real-time interval prices; its shape is documented and validated by
    :mod:`billing.tariffs` (see ``docs/tariff-file.md``).
    """

    SCHEMA: ClassVar[str] = "ledger.tariff"
    VERSION: ClassVar[int] = 1

    tariff_id: str
    version: int
    kind: Literal["step", "flat", "tou", "realtime"]
    effective_from: AwareDatetime
    updated_at: AwareDatetime
    medium: str = "gas"
    currency: str = "CNY"
    unit: str = "m3"
    cycle: Literal["year", "month"] = "year"
    cycle_start_month: int = 1
    cycle_start_day: int = 1
    tiers: tuple[TariffTier, ...] = ()
    tou: dict[str, Any] = msgspec.field(default_factory=dict)
    effective_to: AwareDatetime | None = None

    def key(self) -> bytes:
        return f"{self.tariff_id}:{self.version}".encode()


class LedgerVeeGroup(Message, frozen=True, kw_only=True):
    """A VEE rule group as the stream applies it; ``spec`` is the YAML rule-group document."""

    SCHEMA: ClassVar[str] = "ledger.vee_group"
    VERSION: ClassVar[int] = 1

    group_id: str
    version: int
    spec: str
    updated_at: AwareDatetime

    def key(self) -> bytes:
        return self.group_id.encode()



# --------------------------------------------------------------------------- sync with the CIS
#
# The utility's customer/billing system (CIS) sends changes on ``sync.in.*`` and hears back on
# ``sync.out.*``. Every incoming change carries ``changed_at`` — when the CIS made it — so the
# control plane can apply changes in order and report one that is older than what it holds (or
# than a local change) as a conflict instead of silently overwriting. Money and volumes are
# decimals; optional fields left out keep the ledger's value.


class SyncCustomer(Message, frozen=True, kw_only=True):
    """A customer as the CIS holds it (personal data: sync topics are not for analysts)."""

    SCHEMA: ClassVar[str] = "sync.customer"
    VERSION: ClassVar[int] = 1

    customer_id: str
    customer_type: str
    name: str
    changed_at: AwareDatetime
    phone: str = ""
    email: str = ""
    id_number: str = ""
    postal_address: str = ""

    def key(self) -> bytes:
        return self.customer_id.encode()


class SyncAccount(Message, frozen=True, kw_only=True):
    """A billing account as the CIS holds it: mode, tariff, limits, protection, premises."""

    SCHEMA: ClassVar[str] = "sync.account"
    VERSION: ClassVar[int] = 1

    account_id: str
    customer_id: str
    changed_at: AwareDatetime
    billing_mode: Literal["prepaid_money", "prepaid_volume", "postpaid"] = "prepaid_money"
    tariff_id: str | None = None
    status: Literal["active", "suspended", "closed"] = "active"
    location_id: str | None = None
    protected: bool = False
    protected_reason: str = ""
    alarm1: Decimal | None = None
    alarm2: Decimal | None = None
    overdraft_limit: Decimal = Decimal("0")
    max_balance: Decimal | None = None
    reconnect_limit: Decimal = Decimal("0")

    def key(self) -> bytes:
        # Keyed by customer: a customer and its accounts stay in one partition, in order.
        return self.customer_id.encode()


class SyncMeter(Message, frozen=True, kw_only=True):
    """Which account a meter bills (``account_id=None`` unbinds it) and the meter facts the
    CIS owns; the meter itself must already be in the ledger (asset management creates it)."""

    SCHEMA: ClassVar[str] = "sync.meter"
    VERSION: ClassVar[int] = 1

    meter_id: str
    account_id: str | None
    changed_at: AwareDatetime
    tariff_id: str | None = None
    location_id: str | None = None
    size: str | None = None
    initial_reading: Decimal | None = None

    def key(self) -> bytes:
        return self.meter_id.encode()


class SyncTariff(Message, frozen=True, kw_only=True):
    """A tariff version or a price adjustment decided in the CIS, effective from a date.

    ``adjustment_id`` identifies the decision in the CIS: the same adjustment delivered twice
    makes one version. ``version`` may be left out (the next version is taken).
    """

    SCHEMA: ClassVar[str] = "sync.tariff"
    VERSION: ClassVar[int] = 1

    tariff_id: str
    adjustment_id: str
    kind: Literal["step", "flat", "tou", "realtime"]
    effective_from: AwareDatetime
    changed_at: AwareDatetime
    tiers: tuple[TariffTier, ...] = ()
    tou: dict[str, Any] = msgspec.field(default_factory=dict)
    version: int | None = None
    name: str = ""
    medium: str = "gas"
    currency: str = "CNY"
    unit: str = "m3"
    cycle: Literal["year", "month"] = "year"
    cycle_start_month: int = 1
    cycle_start_day: int = 1
    reason: str = ""

    def key(self) -> bytes:
        return self.tariff_id.encode()


class SyncCollectionRequirement(Message, frozen=True, kw_only=True):
    """What the CIS needs read, how often and from which devices (becomes a collection plan).

    ``targets`` are ``kind:id`` strings: ``device:GM-1``, ``account:A-1``, ``location:B-3``,
    ``subtree:CON-1``, ``device_type:…``, ``service_point:…`` or ``all``.
    """

    SCHEMA: ClassVar[str] = "sync.collection_requirement"
    VERSION: ClassVar[int] = 1

    requirement_id: str
    targets: tuple[str, ...]
    changed_at: AwareDatetime
    registers: tuple[str, ...] = ()
    command: str = "read_now"
    interval_s: int | None = None
    schedule: str = ""
    window_start: str | None = None
    window_end: str | None = None
    priority: int = 5
    enabled: bool = True

    def key(self) -> bytes:
        return self.requirement_id.encode()


class SyncDeviceParameters(Message, frozen=True, kw_only=True):
    """Device parameters the CIS wants set (``report_interval_s``, alarm thresholds …)."""

    SCHEMA: ClassVar[str] = "sync.device_parameters"
    VERSION: ClassVar[int] = 1

    request_id: str
    device_id: str
    parameters: dict[str, Scalar]
    changed_at: AwareDatetime

    def key(self) -> bytes:
        return self.device_id.encode()


class SyncDeviceStatus(Message, frozen=True, kw_only=True):
    """A device's state for the CIS: lifecycle status, link, valve, battery, last contact."""

    SCHEMA: ClassVar[str] = "sync.device_status"
    VERSION: ClassVar[int] = 1

    device_id: str
    ts: AwareDatetime
    status: Literal["in_stock", "installed", "active", "removed"] | None = None
    online: bool | None = None
    valve: str | None = None
    battery: str | None = None
    account_id: str | None = None
    event: str = ""
    detail: str = ""

    def key(self) -> bytes:
        return self.device_id.encode()


class SyncServiceException(Message, frozen=True, kw_only=True):
    """Something the CIS must act on: a failed or expired command (a valve that did not
    close, a price that was not written), a device that stopped reporting."""

    SCHEMA: ClassVar[str] = "sync.service_exception"
    VERSION: ClassVar[int] = 1

    exception_id: str
    kind: str
    object_type: str
    object_id: str
    ts: AwareDatetime
    reason: str
    account_id: str | None = None
    reference: str | None = None
    attributes: dict[str, Scalar] = msgspec.field(default_factory=dict)

    def key(self) -> bytes:
        return self.object_id.encode()


class SyncDataAvailability(Message, frozen=True, kw_only=True):
    """How much of a day's data a meter delivered (the utility's local day)."""

    SCHEMA: ClassVar[str] = "sync.data_availability"
    VERSION: ClassVar[int] = 1

    meter_id: str
    day: str
    readings: int
    expected: int | None
    ts: AwareDatetime
    last_reading_at: AwareDatetime | None = None
    account_id: str | None = None

    def key(self) -> bytes:
        return self.meter_id.encode()


class SyncReject(Message, frozen=True, kw_only=True):
    """A CIS message the control plane did not apply: ``kind='reject'`` (invalid, unknown
    reference) or ``kind='conflict'`` (older than what the ledger holds, or changed locally
    since). Kept in ``ledger.sync_exceptions`` until someone resolves it."""

    SCHEMA: ClassVar[str] = "sync.reject"
    VERSION: ClassVar[int] = 1

    exception_id: str
    kind: Literal["reject", "conflict"]
    topic: str
    reason: str
    ts: AwareDatetime
    entity: str = ""
    entity_id: str = ""
    message_id: str | None = None
    hint: str = ""

    def key(self) -> bytes:
        return (self.entity_id or self.exception_id).encode()


#: The registry of payload types, built from the classes' own identities.
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.SCHEMA: cls
    for cls in (
        RawFrame, Reading, ReadingBatch, DeviceEvent, ValidatedReading, Charge, BalanceChange,
        TopUp, Settlement, BillingControl, Alert, ReadingEdit,
        CommandRequest, CommandDispatch, CommandResult, DeadLetter,
        LedgerMeter, LedgerAccount, LedgerTariff, LedgerVeeGroup,
        SyncCustomer, SyncAccount, SyncMeter, SyncTariff, SyncCollectionRequirement,
        SyncDeviceParameters, SyncDeviceStatus, SyncServiceException, SyncDataAvailability,
        SyncReject,
    )
}
