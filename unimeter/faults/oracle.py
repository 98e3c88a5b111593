"""The fault-test oracle: what the simulator sent and had acknowledged, against what is stored.

Input: the simulator's log (:func:`simulator.log.read_log`), the rows the platform stored
(:class:`StoredRows`, read by :mod:`unimeter.faults.stored`) and the ledger the run billed
with (accounts and tariffs). Output: a :class:`Verdict`.

Every reading the simulator put on the wire is classified at two stages, raw
(``data.raw_readings``) and validated (``data.validated_readings``):

============  =============================================================================
class         meaning
============  =============================================================================
ok            stored under its natural key with the value sent
lost          acknowledged to the device, not stored — the one thing that must never happen
duplicated    stored more than once where once is right: two raw rows of one reading sent
              without a time stamp (stamped on reception), or a validated version that says
              the same as the version before it (same value, quality, consumption and the
              span it covers) — a re-delivery stored again; a later version returning to an
              earlier result (A, B, A) is a revision and counted apart as a *flip-flop*
mismatched    stored under its key with a value the meter never sent
unconfirmed   sent, never acknowledged and not stored (allowed: the device sends it again)
unexpected    stored, but no meter of the run ever sent it (validated: neither an estimate)
============  =============================================================================

Then two recomputations from the log alone, independent of the stream's output:

* **consumption** per meter and register: the rollover-aware sum of register advances
  between the stored readings, in time order, against the sum of ``consumption`` over the
  current validated versions;
* **billing** per account: the stored readings' consumption, turned into one validated
  reading per register advance and priced in time order by :class:`billing.engine.BillingEngine`
  (the pure engine, with the run's accounts and tariffs), against the stored charges
  (consumption charges plus adjustments) — their volume, and their *value*: the sum over
  their priced segments of volume × unit price, before rounding. Every stored charge is
  also checked against the money rule (reference: rounded half-up to 0.01 per priced
  segment, a charge's amount the sum of its segments).

Why the value and not the rounded amount: billing rounds each charge on its own, and the
stream charges what it knows when it knows it — an estimate for a gap settled provisionally,
a span priced before a late reading split it — and posts each correction as an adjustment
charge of the volume difference, rounded on its own (``billing/engine.py``). So the cents of
an account depend on the order in which its readings arrived, and a recomputation that prices
each register advance once cannot equal them: 1 m³ at 2.61 priced as one span (2.61) before
a late reading split it into 0.5 + 0.5 (1.31 + the adjustment −1.31) is 2.61, priced as two
advances it is 1.31 + 1.31 = 2.62. The net volume in each tier, at each price, does not
depend on that order (every move of the cycle position starts where the last one ended, a
correction taking volume off the top), so the unrounded value of the stored segments equals
the recomputation's exactly; with the rounding check that proves the money: each charge is
the documented rounding of a value, and the values add up to the price of what the meters
used. The rounded amounts are reported beside it (``rounding_difference``: what the
corrections' own roundings add up to; ``tests/unimeter/faults/test_oracle.py`` has both).

The run passes when nothing is lost, nothing is duplicated, nothing is mismatched or
unexpected, both recomputations equal what is stored and every charge is rounded by the rule.

Strategy: the log is reduced to one entry per natural key (``meter_id, register, ts``; a
reading stamped on reception has no ``ts`` and is matched on its value instead), keeping the
values sent and whether any frame carrying it was acknowledged. Stored rows are grouped by the
same key. Everything is in memory: a 100,000-reading run needs a few hundred MB at most.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from billing.engine import BillingEngine, MemoryStore
from billing.money import round_money
from billing.settings import BillingSettings
from billing.tariffs import TariffBook
from schemas.messages import Dimensions, LedgerAccount, LedgerTariff, ValidatedReading
from simulator.log import LogSummary, MeterRec

__all__ = [
    "CLASSES",
    "BillingTotals",
    "StoredCharge",
    "StoredRaw",
    "StoredRows",
    "StoredSegment",
    "StoredValidated",
    "Verdict",
    "judge",
]

CLASSES = ("ok", "lost", "duplicated", "mismatched", "unconfirmed", "unexpected")
#: Validated qualities the VEE agent creates on its own (estimates of missing readings).
_SYNTHETIC_QUALITIES = frozenset({"estimated", "missing"})
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class StoredRaw:
    meter_id: str
    register: str
    ts: datetime
    value: Decimal


@dataclass(frozen=True, slots=True)
class StoredValidated:
    meter_id: str
    register: str
    ts: datetime
    version: int
    value: Decimal | None
    quality: str
    consumption: Decimal | None
    account_id: str | None = None
    #: Start of the span ``consumption`` covers (the previous reading's time): a late reading
    #: splits it, so a new version may say the same value and consumption over a new span.
    interval_start: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredSegment:
    """One priced segment of a charge (``billing.charge_segments``)."""

    volume: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class StoredCharge:
    charge_id: str
    account_id: str
    meter_id: str
    register: str
    kind: str
    reading_ts: datetime | None
    reading_version: int | None
    volume: Decimal
    amount: Decimal
    corrects: str | None = None
    segments: tuple[StoredSegment, ...] = ()

    @property
    def value(self) -> Decimal:
        """Volume × unit price over the segments, before rounding."""
        return sum((s.volume * s.unit_price for s in self.segments), Decimal(0))

    def misrounded(self) -> str | None:
        """Why the charge breaks the money rule (each segment rounded half-up to 0.01, the
        amount the sum of the segments), or None."""
        for seg in self.segments:
            if seg.amount != round_money(seg.volume * seg.unit_price):
                return (f"segment {seg.volume} × {seg.unit_price} = {seg.amount}, rounded "
                        f"{round_money(seg.volume * seg.unit_price)}")
        total = sum((s.amount for s in self.segments), Decimal(0))
        if total != self.amount:
            return f"amount {self.amount}, segments sum to {total}"
        return None


@dataclass
class StoredRows:
    """The rows of one run, as :mod:`unimeter.faults.stored` reads them."""

    raw: list[StoredRaw] = field(default_factory=list)
    validated: list[StoredValidated] = field(default_factory=list)
    charges: list[StoredCharge] = field(default_factory=list)


@dataclass
class BillingTotals:
    volume: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    #: Volume × unit price over the priced segments, before rounding.
    value: Decimal = Decimal(0)
    charges: int = 0


@dataclass
class Verdict:
    """Counts per stage and class, examples of every bad class, and the recomputations."""

    sent: int = 0
    acknowledged: int = 0
    classes: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    consumption: dict[str, Any] = field(default_factory=dict)
    billing: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return sum(c.get("lost", 0) for c in self.classes.values())

    @property
    def duplicated(self) -> int:
        return sum(c.get("duplicated", 0) for c in self.classes.values())

    @property
    def wrong(self) -> int:
        """Mismatched and unexpected rows (stored data the meters never sent)."""
        return sum(c.get("mismatched", 0) + c.get("unexpected", 0)
                   for c in self.classes.values())

    @property
    def totals_equal(self) -> bool:
        return bool(self.consumption.get("differing_meters", 0) == 0
                    and self.billing.get("differing_accounts", 0) == 0
                    and self.billing.get("misrounded_charges", 0) == 0)

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.wrong == 0 and self.totals_equal

    def note(self, kind: str, text: str) -> None:
        shown = self.examples.setdefault(kind, [])
        if len(shown) < _EXAMPLES:
            shown.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "sent": self.sent, "acknowledged": self.acknowledged,
                "lost": self.lost, "duplicated": self.duplicated, "wrong": self.wrong,
                "totals_equal": self.totals_equal, "classes": self.classes,
                "examples": self.examples, "consumption": self.consumption,
                "billing": self.billing}


# --------------------------------------------------------------------------- the log side


@dataclass
class _Sent:
    """One natural key of the log: the values sent under it and whether it was acked."""

    meter_id: str
    register: str
    ts: datetime | None
    values: set[Decimal] = field(default_factory=set)
    acknowledged: bool = False


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _sent_readings(log: LogSummary) -> tuple[dict[tuple[str, str, datetime], _Sent],
                                              list[_Sent]]:
    """Stamped readings by key, and readings without a time stamp (one entry per send)."""
    stamped: dict[tuple[str, str, datetime], _Sent] = {}
    unstamped: list[_Sent] = []
    for rec in log.readings:
        acked = rec.frame in log.acked_frames
        value = Decimal(rec.value)
        if rec.ts is None:
            unstamped.append(_Sent(rec.meter_id, rec.register, None, {value}, acked))
            continue
        key = (rec.meter_id, rec.register, _utc(rec.ts))
        entry = stamped.get(key)
        if entry is None:
            entry = stamped[key] = _Sent(rec.meter_id, rec.register, key[2])
        entry.values.add(value)
        entry.acknowledged = entry.acknowledged or acked
    return stamped, unstamped


# --------------------------------------------------------------------------- classification


def _classify_raw(verdict: Verdict, stamped: Mapping[tuple[str, str, datetime], _Sent],
                  unstamped: list[_Sent], raw: Iterable[StoredRaw],
                  meters: set[str]) -> dict[tuple[str, str, datetime], Decimal]:
    counts: Counter[str] = Counter()
    by_key: dict[tuple[str, str, datetime], list[StoredRaw]] = defaultdict(list)
    for row in raw:
        if meters and row.meter_id not in meters:
            continue  # another run's meters in a shared database
        by_key[(row.meter_id, row.register, _utc(row.ts))].append(row)
    stored_values: dict[tuple[str, str, datetime], Decimal] = {}
    for key, sent in stamped.items():
        rows = by_key.pop(key, None)
        if not rows:
            cls = "lost" if sent.acknowledged else "unconfirmed"
        elif len(rows) > 1:
            cls = "duplicated"
        elif rows[0].value not in sent.values:
            cls = "mismatched"
            verdict.note("raw.mismatched", f"{key[0]} {key[1]} {key[2].isoformat()}: stored "
                                           f"{rows[0].value}, sent {sorted(sent.values)}")
        else:
            cls = "ok"
            stored_values[key] = rows[0].value
        if cls in ("lost", "duplicated"):
            verdict.note(f"raw.{cls}", f"{key[0]} {key[1]} {key[2].isoformat()}")
        counts[cls] += 1
    # readings stamped on reception: matched on (meter, register, value), each row once
    pool: dict[tuple[str, str, Decimal], list[tuple[str, str, datetime]]] = defaultdict(list)
    for key, rows in by_key.items():
        for row in rows:
            pool[(row.meter_id, row.register, row.value)].append(key)
    sent_unstamped = {(s.meter_id, s.register, v) for s in unstamped for v in s.values}
    for sent in unstamped:
        value = next(iter(sent.values))
        match = pool.get((sent.meter_id, sent.register, value))
        if match:
            key = match.pop(0)
            by_key.pop(key, None)
            stored_values[key] = value
            counts["ok"] += 1
            continue
        cls = "lost" if sent.acknowledged else "unconfirmed"
        counts[cls] += 1
        if cls == "lost":
            verdict.note("raw.lost", f"{sent.meter_id} {sent.register} value {value} "
                                     "(no time stamp)")
    for (meter_id, register, value), left in pool.items():
        if (meter_id, register, value) not in sent_unstamped:
            continue
        for key in left:  # the same unstamped reading stored again under a later stamp
            by_key.pop(key, None)
            counts["duplicated"] += 1
            verdict.note("raw.duplicated", f"{meter_id} {register} value {value} stored "
                                           f"again at {key[2].isoformat()}")
    for key in by_key:
        counts["unexpected"] += 1
        verdict.note("raw.unexpected", f"{key[0]} {key[1]} {key[2].isoformat()}")
    verdict.classes["raw"] = {c: counts.get(c, 0) for c in CLASSES}
    return stored_values


def _says(row: StoredValidated) -> tuple[Any, ...]:
    return (row.value, row.quality, row.consumption,
            None if row.interval_start is None else _utc(row.interval_start))


def _classify_validated(verdict: Verdict, stamped: Mapping[tuple[str, str, datetime], _Sent],
                        stored_raw: Mapping[tuple[str, str, datetime], Decimal],
                        validated: Iterable[StoredValidated], meters: set[str]
                        ) -> dict[tuple[str, str, datetime], StoredValidated]:
    counts: Counter[str] = Counter()
    versions: dict[tuple[str, str, datetime], list[StoredValidated]] = defaultdict(list)
    for row in validated:
        if meters and row.meter_id not in meters:
            continue
        versions[(row.meter_id, row.register, _utc(row.ts))].append(row)
    current: dict[tuple[str, str, datetime], StoredValidated] = {}
    for key, rows in versions.items():
        rows.sort(key=lambda r: r.version)
        current[key] = rows[-1]
    estimates = revised = 0
    for key, rows in versions.items():
        sent = stamped.get(key)
        if key not in stored_raw and all(r.quality in _SYNTHETIC_QUALITIES for r in rows):
            estimates += 1  # VEE's estimate of a reading it never got (sent or not)
            continue
        if sent is None and key not in stored_raw:
            counts["unexpected"] += 1
            verdict.note("validated.unexpected", f"{key[0]} {key[1]} {key[2].isoformat()}")
            continue
        # a version that repeats the one before it (or a version number stored twice) says
        # nothing new: a re-delivery stored again. A later version returning to an earlier
        # result (A, B, A) is a revision, counted apart.
        duplicate = any(a.version == b.version or _says(a) == _says(b)
                        for a, b in pairwise(rows))
        if len({_says(r) for r in rows}) < len(rows) and not duplicate:
            revised += 1
        if duplicate:
            counts["duplicated"] += 1
            said_all = [(r.version, str(r.value), r.quality, str(r.consumption),
                         r.interval_start and _utc(r.interval_start).isoformat()) for r in rows]
            verdict.note("validated.duplicated",
                         f"{key[0]} {key[1]} {key[2].isoformat()} versions {said_all}")
            continue
        original = [r.value for r in rows if r.quality not in _SYNTHETIC_QUALITIES]
        if sent is not None and original and not any(v in sent.values for v in original):
            counts["mismatched"] += 1
            verdict.note("validated.mismatched", f"{key[0]} {key[1]} {key[2].isoformat()}: "
                                                 f"{original} vs sent {sorted(sent.values)}")
            continue
        counts["ok"] += 1
    for key, sent in stamped.items():
        if key in versions:
            continue
        if sent.acknowledged or key in stored_raw:
            counts["lost"] += 1
            verdict.note("validated.lost", f"{key[0]} {key[1]} {key[2].isoformat()}"
                                           + ("" if sent.acknowledged else " (raw stored)"))
        else:
            counts["unconfirmed"] += 1
    verdict.classes["validated"] = {c: counts.get(c, 0) for c in CLASSES}
    verdict.classes["validated"]["estimates"] = estimates
    verdict.classes["validated"]["flip_flops"] = revised
    return current


# --------------------------------------------------------------------------- recomputation


def _advance(previous: Decimal, value: Decimal, meter: MeterRec | None) -> Decimal:
    """Register advance from ``previous`` to ``value``; a drop of more than half the range is
    a rollover at ``10**digits``."""
    delta = value - previous
    if meter is not None and delta < 0:
        top = Decimal(10) ** meter.digits
        if -delta > top / 2:
            delta += top
    return delta


def _series(stored_raw: Mapping[tuple[str, str, datetime], Decimal]
            ) -> dict[tuple[str, str], list[tuple[datetime, Decimal]]]:
    series: dict[tuple[str, str], list[tuple[datetime, Decimal]]] = defaultdict(list)
    for (meter_id, register, ts), value in stored_raw.items():
        series[(meter_id, register)].append((ts, value))
    for points in series.values():
        points.sort()
    return series


def _compare_consumption(verdict: Verdict, log: LogSummary,
                         series: Mapping[tuple[str, str], list[tuple[datetime, Decimal]]],
                         current: Mapping[tuple[str, str, datetime], StoredValidated]) -> None:
    stored: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for (meter_id, register, _ts), row in current.items():
        if row.consumption is not None:
            stored[(meter_id, register)] += row.consumption
    expected_total = Decimal(0)
    stored_total = Decimal(0)
    differing = 0
    for channel in sorted(set(series) | set(stored)):
        points = series.get(channel, [])
        meter = log.meters.get(channel[0])
        expected = sum((_advance(a[1], b[1], meter) for a, b in pairwise(points)), Decimal(0))
        got = stored.get(channel, Decimal(0))
        expected_total += expected
        stored_total += got
        if expected != got:
            differing += 1
            verdict.note("consumption", f"{channel[0]} {channel[1]}: log {expected}, "
                                        f"stored {got}")
    verdict.consumption = {"channels": len(set(series) | set(stored)),
                           "differing_meters": differing, "expected_total": str(expected_total),
                           "stored_total": str(stored_total)}


def recompute_billing(log: LogSummary,
                      series: Mapping[tuple[str, str], list[tuple[datetime, Decimal]]],
                      accounts: Mapping[str, LedgerAccount], meter_accounts: Mapping[str, str],
                      tariffs: Iterable[LedgerTariff], *, timezone: str = "Asia/Shanghai",
                      settings: BillingSettings | None = None) -> dict[str, BillingTotals]:
    """Charges per account as the pure billing engine prices the log's register advances,
    in time order (one validated reading per advance, version 1, quality actual)."""
    zone = ZoneInfo(timezone)
    engine = BillingEngine(tariffs=TariffBook(zone, tariffs), accounts=accounts,
                           store=MemoryStore(), settings=settings)
    readings: list[ValidatedReading] = []
    for (meter_id, register), points in series.items():
        account_id = meter_accounts.get(meter_id)
        if account_id is None or account_id not in accounts:
            continue
        meter = log.meters.get(meter_id)
        for (start, before), (end, after) in pairwise(points):
            readings.append(ValidatedReading(
                meter_id=meter_id, register=register, ts=end, value=after,
                unit=meter.unit if meter else "m3", version=1, quality="actual",
                consumption=_advance(before, after, meter), interval_start=start,
                dims=Dimensions(account_id=account_id)))
    readings.sort(key=lambda r: (r.ts, r.meter_id, r.register))
    totals: dict[str, BillingTotals] = defaultdict(BillingTotals)
    for reading in readings:
        outcome = engine.bill_reading(reading, now=reading.ts)
        for charge in outcome.charges:
            total = totals[charge.account_id]
            total.volume += charge.volume
            total.amount += charge.amount
            total.value += sum((s.volume * s.unit_price for s in charge.segments), Decimal(0))
            total.charges += 1
    return dict(totals)


def _compare_billing(verdict: Verdict, expected: Mapping[str, BillingTotals],
                     charges: Iterable[StoredCharge], accounts: set[str]) -> None:
    stored: dict[str, BillingTotals] = defaultdict(BillingTotals)
    per_reading: Counter[tuple[str, str, datetime | None, int | None]] = Counter()
    misrounded = 0
    for charge in charges:
        if accounts and charge.account_id not in accounts:
            continue
        total = stored[charge.account_id]
        total.volume += charge.volume
        total.amount += charge.amount
        total.value += charge.value
        total.charges += 1
        if charge.kind in ("consumption", "adjustment"):
            per_reading[(charge.meter_id, charge.register, charge.reading_ts,
                         charge.reading_version)] += 1
        why = charge.misrounded()
        if why is not None:
            misrounded += 1
            verdict.note("charges.misrounded", f"{charge.charge_id}: {why}")
    doubled = sum(1 for n in per_reading.values() if n > 1)
    for key, n in per_reading.items():
        if n > 1:
            verdict.note("charges.duplicated", f"{key[0]} {key[1]} {key[2]} v{key[3]}: {n} "
                                               "charges")
    differing = 0
    exp = BillingTotals()
    got_all = BillingTotals()
    for account_id in sorted(set(expected) | set(stored)):
        want = expected.get(account_id, BillingTotals())
        got = stored.get(account_id, BillingTotals())
        for acc, one in ((exp, want), (got_all, got)):
            acc.volume += one.volume
            acc.amount += one.amount
            acc.value += one.value
        if want.volume != got.volume or want.value != got.value:
            differing += 1
            verdict.note("billing", f"{account_id}: recomputed {want.volume} m³ worth "
                                    f"{want.value} ({want.amount} in {want.charges} charges), "
                                    f"stored {got.volume} m³ worth {got.value} ({got.amount} "
                                    f"in {got.charges} charges)")
    verdict.billing = {"accounts": len(set(expected) | set(stored)),
                       "differing_accounts": differing, "duplicated_charges": doubled,
                       "misrounded_charges": misrounded,
                       "expected_volume": str(exp.volume), "stored_volume": str(got_all.volume),
                       "expected_value": str(exp.value), "stored_value": str(got_all.value),
                       "expected_amount": str(exp.amount), "stored_amount": str(got_all.amount),
                       "rounding_difference": str(got_all.amount - exp.amount),
                       "stored_charges": sum(t.charges for t in stored.values())}
    if doubled:
        verdict.classes.setdefault("charges", {c: 0 for c in CLASSES})["duplicated"] = doubled


def judge(log: LogSummary, rows: StoredRows, *, accounts: Mapping[str, LedgerAccount] | None =
          None, meter_accounts: Mapping[str, str] | None = None,
          tariffs: Iterable[LedgerTariff] = (), timezone: str = "Asia/Shanghai",
          billing_settings: BillingSettings | None = None) -> Verdict:
    """Classify every reading of ``log`` against ``rows`` and recompute consumption and, when
    ``accounts`` are given, the charges per account."""
    verdict = Verdict()
    stamped, unstamped = _sent_readings(log)
    verdict.sent = len(stamped) + len(unstamped)
    verdict.acknowledged = (sum(1 for s in stamped.values() if s.acknowledged)
                            + sum(1 for s in unstamped if s.acknowledged))
    meters = set(log.meters)
    stored_raw = _classify_raw(verdict, stamped, unstamped, rows.raw, meters)
    current = _classify_validated(verdict, stamped, stored_raw, rows.validated, meters)
    series = _series(stored_raw)
    _compare_consumption(verdict, log, series, current)
    if accounts is not None:
        links = dict(meter_accounts or {})
        expected = recompute_billing(log, series, accounts, links, tariffs, timezone=timezone,
                                     settings=billing_settings)
        owned = {a for m, a in links.items() if not meters or m in meters}
        _compare_billing(verdict, expected, rows.charges, owned)
    return verdict
