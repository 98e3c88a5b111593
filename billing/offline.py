"""The offline run: price a usage file against a tariff file, with the real engine.

``unimeter bill --tariff FILE --usage IN.csv`` lets a utility check a tariff file against
bills it knows. The usage CSV has a header and the columns::

    account_id,ts,volume                     required
    start                                    optional: the period start of a register-read
                                             row (the row is then prorated across a price
                                             change or a cycle start by time)
    meter_id, tariff_id                      optional: meter (default: the account id) and
                                             tariff (default: the account's, or --tariff-id)
    expected_amount                          optional: the known bill of the row; rows that
                                             differ are flagged and the run exits 1

``ts`` is ISO 8601; without an offset it is local time in the tariff file's time zone.
Each row is one validated reading of ``volume`` consumed up to ``ts``, priced by the same
:class:`~billing.engine.BillingEngine` the stream uses (postpaid unless the tariff file's
account says otherwise), in time order, so tier positions accumulate per account exactly as
in production.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from billing.engine import BillingEngine, MemoryStore
from billing.errors import BillingError, UsageFileError
from billing.money import ZERO, to_decimal
from billing.tariff_file import TariffFile
from schemas.messages import Charge, ChargeSegment, Dimensions, LedgerAccount, ValidatedReading

__all__ = ["AccountTotals", "OfflineRun", "RowResult", "UsageRow", "bill_usage", "parse_usage"]

REQUIRED = ("account_id", "ts", "volume")
OPTIONAL = ("start", "meter_id", "tariff_id", "expected_amount")
_EPOCH = datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC"))


@dataclass(frozen=True)
class UsageRow:
    """One line of a usage file."""

    line: int
    account_id: str
    ts: datetime
    volume: Decimal
    start: datetime | None = None
    meter_id: str = ""
    tariff_id: str = ""
    expected_amount: Decimal | None = None


@dataclass(frozen=True)
class RowResult:
    """The charge of one usage row, and whether it matches the expected amount."""

    row: UsageRow
    charge: Charge

    @property
    def matches(self) -> bool | None:
        if self.row.expected_amount is None:
            return None
        return self.row.expected_amount == self.charge.amount


@dataclass
class AccountTotals:
    """Volume and money of one account over the run, by tier (and component)."""

    volume: Decimal = ZERO
    amount: Decimal = ZERO
    rows: int = 0
    by_tier: dict[tuple[int, str, Decimal], tuple[Decimal, Decimal]] = field(
        default_factory=dict)

    def add(self, charge: Charge) -> None:
        self.volume += charge.volume
        self.amount += charge.amount
        self.rows += 1
        for seg in charge.segments:
            key = (seg.tier, seg.component, seg.unit_price)
            volume, amount = self.by_tier.get(key, (ZERO, ZERO))
            self.by_tier[key] = (volume + seg.volume, amount + seg.amount)


@dataclass
class OfflineRun:
    """Everything an offline run priced."""

    results: list[RowResult]
    totals: dict[str, AccountTotals]
    timezone: ZoneInfo

    @property
    def amount(self) -> Decimal:
        return sum((t.amount for t in self.totals.values()), ZERO)

    @property
    def volume(self) -> Decimal:
        return sum((t.volume for t in self.totals.values()), ZERO)

    @property
    def mismatches(self) -> list[RowResult]:
        return [r for r in self.results if r.matches is False]


def _parse_ts(text: str, tz: ZoneInfo, where: str, column: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageFileError(f"{column} {text!r} is not an ISO 8601 date-time", where=where,
                             hint="write 2020-06-01T00:00:00+08:00 or 2020-06-01 00:00") from None
    return value if value.tzinfo else value.replace(tzinfo=tz)


def parse_usage(lines: Iterable[str], tz: ZoneInfo, source: str = "usage") -> list[UsageRow]:
    """Read usage CSV lines (with a header) into rows; :class:`UsageFileError` names the line
    and column of the first problem."""
    reader = csv.DictReader(lines)
    header = [h.strip() for h in reader.fieldnames or ()]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UsageFileError(f"missing column(s) {', '.join(missing)}", where=f"{source}:1",
                             hint="the header must name account_id,ts,volume (optional: "
                                  f"{', '.join(OPTIONAL)})")
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise UsageFileError(f"unknown column(s) {', '.join(unknown)}", where=f"{source}:1",
                             hint=f"allowed: {', '.join(REQUIRED + OPTIONAL)}")
    rows = []
    for number, raw in enumerate(reader, start=2):
        item = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"{source}:{number}"
        if not any(item.values()):
            continue
        if not item.get("account_id"):
            raise UsageFileError("empty account_id", where=where, hint="fill in the account")
        try:
            volume = to_decimal(item["volume"])
            expected = (to_decimal(item["expected_amount"]) if item.get("expected_amount")
                        else None)
        except ValueError as exc:
            raise UsageFileError(str(exc), where=where,
                                 hint="volume and expected_amount are decimal numbers") from None
        ts = _parse_ts(item["ts"], tz, where, "ts")
        start = _parse_ts(item["start"], tz, where, "start") if item.get("start") else None
        if start is not None and start > ts:
            raise UsageFileError(f"start {item['start']} is after ts {item['ts']}", where=where,
                                 hint="start is the beginning of the row's period")
        rows.append(UsageRow(number, item["account_id"], ts, volume, start,
                             item.get("meter_id", ""), item.get("tariff_id", ""), expected))
    return rows


def bill_usage(tariffs: TariffFile, rows: list[UsageRow], *,
               default_tariff_id: str | None = None,
               opening_cycle_volumes: Mapping[str, Decimal] | None = None) -> OfflineRun:
    """Price ``rows`` in time order with the billing engine; errors name the usage line."""
    book = tariffs.book()
    if default_tariff_id is None and len(book.tariff_ids()) == 1:
        default_tariff_id = book.tariff_ids()[0]
    accounts: dict[str, LedgerAccount] = {a.account_id: a for a in tariffs.accounts}
    ordered = sorted(rows, key=lambda r: (r.ts, r.line))
    first_ts: dict[str, datetime] = {}
    for row in ordered:
        first_ts.setdefault(row.account_id, row.start or row.ts)
    for account_id, first in first_ts.items():
        known = accounts.get(account_id)
        opening = (opening_cycle_volumes or {}).get(account_id)
        if known is None:
            tariff_id = next((r.tariff_id for r in ordered
                              if r.account_id == account_id and r.tariff_id), default_tariff_id)
            known = LedgerAccount(account_id=account_id, customer_type="residential",
                                  billing_mode="postpaid", updated_at=_EPOCH,
                                  tariff_id=tariff_id)
        if opening is not None:
            known = LedgerAccount(**{f: getattr(known, f) for f in known.__struct_fields__
                                     if f not in ("opening_cycle_volume", "opened_at")},
                                  opening_cycle_volume=opening,
                                  opened_at=known.opened_at or first)
        elif known.opening_cycle_volume and known.opened_at is None:
            known = LedgerAccount(**{f: getattr(known, f) for f in known.__struct_fields__
                                     if f != "opened_at"}, opened_at=first)
        accounts[account_id] = known
    engine = BillingEngine(tariffs=book, accounts=accounts, store=MemoryStore())
    seen: dict[tuple[str, datetime], int] = {}
    results: list[RowResult] = []
    totals: dict[str, AccountTotals] = {}
    for row in ordered:
        where = f"line {row.line}"
        meter_id = row.meter_id or row.account_id
        if (meter_id, row.ts) in seen:
            raise UsageFileError(f"a second row for meter {meter_id} at {row.ts.isoformat()} "
                                 f"(first on line {seen[(meter_id, row.ts)]})", where=where,
                                 hint="merge the rows or give them different meter_id")
        seen[(meter_id, row.ts)] = row.line
        tariff_id = row.tariff_id or accounts[row.account_id].tariff_id or default_tariff_id
        if not tariff_id:
            raise UsageFileError(f"no tariff for account {row.account_id}", where=where,
                                 hint="add a tariff_id column, pass --tariff-id, or list the "
                                      "account in the tariff file")
        reading = ValidatedReading(
            meter_id=meter_id, register="volume", ts=row.ts, value=None, unit="m3", version=1,
            quality="actual", consumption=row.volume, interval_start=row.start,
            dims=Dimensions(account_id=row.account_id, tariff_id=tariff_id))
        try:
            outcome = engine.bill_reading(reading, now=row.ts)
        except BillingError as exc:
            raise type(exc)(exc.message, where=f"{where} ({exc.where})" if exc.where else where,
                            hint=exc.hint) from None
        charge = next(c for c in outcome.charges if c.kind in ("consumption", "adjustment"))
        results.append(RowResult(row, charge))
        totals.setdefault(row.account_id, AccountTotals()).add(charge)
    return OfflineRun(results, totals, tariffs.timezone)


def segment_label(segment: ChargeSegment) -> str:
    """``tier 2 v3`` / ``tier 1 v1 tap_water`` / ``tier 1 v1 peak`` — a segment for people."""
    parts = [f"tier {segment.tier}", f"v{segment.tariff_version}"]
    if segment.component != "total":
        parts.append(segment.component)
    if segment.period:
        parts.append(segment.period)
    return " ".join(parts)
