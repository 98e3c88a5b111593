"""The fault-test oracle on crafted logs and rows: every class appears where it should."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from billing.engine import BillingEngine
from billing.money import round_money
from billing.tariffs import TariffBook
from schemas.messages import Dimensions, LedgerMeter, Reading, ValidatedReading
from simulator.log import MeterRec, ReadingRec, SimLog, read_log
from unimeter.faults.ledger import build_ledger
from unimeter.faults.oracle import (
    StoredCharge,
    StoredRaw,
    StoredRows,
    StoredSegment,
    StoredValidated,
    Verdict,
    judge,
)
from unimeter.faults.run import VEE_RULES
from vee.engine import VeeEngine
from vee.groups import load_rule_set
from vee.model import MeterInfo, MeterState

T0 = datetime(2026, 3, 2, tzinfo=UTC)
D = Decimal
HOUR = timedelta(hours=1)


def _log(tmp_path: Path, readings: list[tuple[str, datetime | None, str, bool]],
         meters: tuple[str, ...] = ("G1", "G2")) -> Path:
    """A simulator log: ``(meter, ts, value, acknowledged)`` per reading, one frame each."""
    path = tmp_path / "sim.jsonl"
    log = SimLog(path)
    for meter in meters:
        log.write(MeterRec(meter_id=meter, address=meter, medium="gas", protocol="cjt188-2004",
                           transport="tcp", link_id="L1", service_point="dtu",
                           customer_type="residential", register="volume", unit="m3",
                           digits=5, decimals=3))
    for n, (meter, ts, value, acked) in enumerate(readings):
        frame = f"L1/{n}"
        log.frame(frame_id=frame, link="L1", service_point="dtu", sim_at=ts or T0, readings=1)
        log.write(ReadingRec(frame=frame, meter_id=meter, register="volume", unit="m3",
                             value=value, sim_at=ts or T0, ts=ts))
        if acked:
            log.ack(frame)
    log.close()
    return path


def _series(meter: str, values: list[str]) -> list[tuple[str, datetime, str, bool]]:
    return [(meter, T0 + i * HOUR, v, True) for i, v in enumerate(values)]


def _stored(readings: list[tuple[str, datetime | None, str, bool]]) -> StoredRows:
    """What a correct platform stores for these readings: raw rows and version-1 validated
    rows with the consumption since the meter's previous reading."""
    rows = StoredRows()
    last: dict[str, Decimal] = {}
    for meter, ts, value, _ in sorted(readings, key=lambda r: (r[0], r[1] or T0)):
        assert ts is not None
        rows.raw.append(StoredRaw(meter, "volume", ts, D(value)))
        previous = last.get(meter)
        rows.validated.append(StoredValidated(
            meter, "volume", ts, 1, D(value), "actual",
            None if previous is None else D(value) - previous, f"ACC-{meter}"))
        last[meter] = D(value)
    return rows


def _ledger() -> dict[str, object]:
    meters = [LedgerMeter(meter_id=m, status="active", medium="gas", updated_at=T0,
                          customer_type="residential") for m in ("G1", "G2")]
    ledger = build_ledger(meters, effective_from=T0 - timedelta(days=1))
    return {"accounts": ledger.accounts, "meter_accounts": ledger.meter_accounts,
            "tariffs": ledger.tariffs}


def _charge(meter: str, hour: int, *segments: tuple[str, ...], amount: str | None = None,
            version: int = 1, suffix: str = "") -> StoredCharge:
    """A charge of ``segments``: ``(volume, unit price)``, or ``(volume, unit price,
    amount)`` for a segment rounded against the rule; amounts rounded half-up otherwise."""
    ts = T0 + hour * HOUR
    parts = tuple(StoredSegment(D(s[0]), D(s[1]), D(s[2]) if len(s) > 2
                                else round_money(D(s[0]) * D(s[1]))) for s in segments)
    total = sum((p.amount for p in parts), D(0))
    return StoredCharge(f"ACC-{meter}:{meter}:volume:{ts.isoformat()}:{version}{suffix}",
                        f"ACC-{meter}", meter, "volume", "consumption", ts, version,
                        sum((p.volume for p in parts), D(0)),
                        D(amount) if amount is not None else total, segments=parts)


READINGS = _series("G1", ["100.000", "103.000", "108.000"]) + _series("G2", ["50.000",
                                                                          "50.500"])
# Priced by hand with the fault run's gas tariff (5 m³ at 2.61, up to 12 at 2.83, then 4.23):
# G1: 3 m³ -> 7.83; then 5 m³ = 2 at 2.61 + 3 at 2.83 = 5.22 + 8.49 = 13.71. G2: 0.5 -> 1.31.
CHARGES = [_charge("G1", 1, ("3.000", "2.61")),
           _charge("G1", 2, ("2.000", "2.61"), ("3.000", "2.83")),
           _charge("G2", 1, ("0.500", "2.61"))]


def _judge(tmp_path: Path, readings: list[tuple[str, datetime | None, str, bool]],
           rows: StoredRows) -> Verdict:
    return judge(read_log(_log(tmp_path, readings)), rows, **_ledger())  # type: ignore[arg-type]


def test_a_faithful_store_passes_with_consumption_and_charges_recomputed(tmp_path: Path
                                                                         ) -> None:
    rows = _stored(READINGS)
    rows.charges = list(CHARGES)
    verdict = _judge(tmp_path, READINGS, rows)
    assert verdict.passed, verdict.as_dict()
    assert verdict.classes["raw"]["ok"] == 5
    assert verdict.classes["validated"]["ok"] == 5
    assert verdict.consumption["expected_total"] == "8.500"
    assert verdict.billing["expected_amount"] == "22.85"
    assert verdict.billing["differing_accounts"] == 0


def test_an_acknowledged_reading_missing_is_lost_an_unacknowledged_one_unconfirmed(
        tmp_path: Path) -> None:
    readings = [*READINGS, ("G2", T0 + 2 * HOUR, "51.000", True),
                ("G2", T0 + 3 * HOUR, "51.200", False)]
    rows = _stored(READINGS)
    rows.charges = list(CHARGES)
    verdict = _judge(tmp_path, readings, rows)
    assert verdict.classes["raw"]["lost"] == 1
    assert verdict.classes["raw"]["unconfirmed"] == 1
    assert verdict.classes["validated"]["lost"] == 1
    assert verdict.lost == 2
    assert not verdict.passed
    assert any("G2 volume" in e for e in verdict.examples["raw.lost"])


def test_a_validated_version_saying_the_same_again_is_duplicated(tmp_path: Path) -> None:
    rows = _stored(READINGS)
    rows.charges = list(CHARGES)
    again = rows.validated[1]
    rows.validated.append(StoredValidated(again.meter_id, again.register, again.ts, 2,
                                          again.value, again.quality, again.consumption))
    verdict = _judge(tmp_path, READINGS, rows)
    assert verdict.classes["validated"]["duplicated"] == 1
    assert verdict.duplicated == 1
    assert not verdict.passed


def test_a_version_returning_to_an_earlier_result_is_a_flip_flop_not_a_duplicate(
        tmp_path: Path) -> None:
    rows = _stored(READINGS)
    rows.charges = list(CHARGES)
    one = rows.validated[1]
    rows.validated += [
        StoredValidated(one.meter_id, one.register, one.ts, 2, one.value, "estimated",
                        one.consumption),
        StoredValidated(one.meter_id, one.register, one.ts, 3, one.value, one.quality,
                        one.consumption)]
    verdict = _judge(tmp_path, READINGS, rows)
    assert verdict.classes["validated"]["duplicated"] == 0
    assert verdict.classes["validated"]["flip_flops"] == 1
    assert verdict.passed


def test_a_new_version_that_changes_the_consumption_is_not_a_duplicate(tmp_path: Path) -> None:
    late = ("G1", T0 + HOUR / 2, "101.000", True)  # arrives after the 01:00 reading
    readings = [*READINGS, late]
    rows = _stored(readings)
    one = next(r for r in rows.validated if r.meter_id == "G1" and r.ts == T0 + HOUR)
    rows.validated.remove(one)  # first version before the late reading came: 3 m³
    rows.validated += [StoredValidated("G1", "volume", one.ts, 1, one.value, "actual", D(3)),
                       StoredValidated("G1", "volume", one.ts, 2, one.value, "actual", D(2))]
    verdict = _judge(tmp_path, readings, rows)
    assert verdict.classes["validated"]["duplicated"] == 0
    assert verdict.classes["validated"]["ok"] == 6
    assert verdict.consumption["differing_meters"] == 0


def test_a_new_version_over_a_new_span_is_a_revision_not_a_duplicate(tmp_path: Path) -> None:
    """Regression (full fault run, late delivery): 02:00 came after 03:00 and used nothing,
    so 03:00's second version says the same value and consumption as its first — over
    02:00-03:00 instead of 01:00-03:00. A real revision (billing re-prices its pieces), not a
    re-delivery stored again; the same span again still is."""
    readings = _series("G1", ["100.000", "100.500", "100.500", "101.000"])
    rows = _stored(readings)
    three = next(r for r in rows.validated if r.ts == T0 + 3 * HOUR)
    rows.validated.remove(three)
    first, second = (StoredValidated("G1", "volume", three.ts, n, three.value, "actual",
                                     three.consumption, interval_start=T0 + since * HOUR)
                     for n, since in ((1, 1), (2, 2)))
    rows.validated += [first, second]
    verdict = _judge(tmp_path, readings, rows)
    assert verdict.classes["validated"]["duplicated"] == 0, verdict.examples
    assert verdict.consumption["differing_meters"] == 0
    rows.validated.append(StoredValidated("G1", "volume", three.ts, 3, three.value, "actual",
                                          three.consumption, interval_start=T0 + 2 * HOUR))
    assert _judge(tmp_path, readings, rows).classes["validated"]["duplicated"] == 1


def test_a_reading_without_time_stamp_stored_twice_is_duplicated(tmp_path: Path) -> None:
    readings = [("G1", None, "100.000", True)]
    rows = StoredRows(raw=[StoredRaw("G1", "volume", T0, D("100.000")),
                           StoredRaw("G1", "volume", T0 + timedelta(seconds=9), D("100.000"))])
    verdict = judge(read_log(_log(tmp_path, readings)), rows)
    assert verdict.classes["raw"]["ok"] == 1
    assert verdict.classes["raw"]["duplicated"] == 1


def test_rows_no_meter_sent_are_unexpected_and_wrong_values_mismatched(tmp_path: Path) -> None:
    rows = _stored(READINGS)
    rows.charges = list(CHARGES)
    rows.raw.append(StoredRaw("G1", "volume", T0 + 9 * HOUR, D("200.000")))
    rows.validated.append(StoredValidated("G1", "volume", T0 + 9 * HOUR, 1, D("200.000"),
                                          "actual", None))
    rows.raw[0] = StoredRaw("G1", "volume", T0, D("100.001"))
    rows.raw.append(StoredRaw("X9", "volume", T0, D("1")))  # another run's meter: ignored
    verdict = _judge(tmp_path, READINGS, rows)
    assert verdict.classes["raw"]["unexpected"] == 1
    assert verdict.classes["validated"]["unexpected"] == 1
    assert verdict.classes["raw"]["mismatched"] == 1
    assert verdict.wrong == 3


def test_estimates_of_missing_readings_are_counted_apart(tmp_path: Path) -> None:
    rows = _stored(READINGS)
    rows.charges = list(CHARGES)
    rows.validated.append(StoredValidated("G2", "volume", T0 + 5 * HOUR, 1, D("51"),
                                          "estimated", None))
    verdict = _judge(tmp_path, READINGS, rows)
    assert verdict.classes["validated"]["estimates"] == 1
    assert verdict.classes["validated"]["unexpected"] == 0


def test_consumption_that_differs_from_the_log_fails_the_totals(tmp_path: Path) -> None:
    rows = _stored(READINGS)
    rows.charges = list(CHARGES)
    last = rows.validated[2]
    rows.validated[2] = StoredValidated(last.meter_id, last.register, last.ts, 1, last.value,
                                        "actual", D("4.000"))
    verdict = _judge(tmp_path, READINGS, rows)
    assert verdict.consumption["differing_meters"] == 1
    assert not verdict.totals_equal
    assert not verdict.passed


@pytest.mark.parametrize("charges", [
    CHARGES[:2],  # G2 never charged
    [*CHARGES, _charge("G2", 1, ("0.500", "2.61"), suffix="-again")],  # charged twice
    [*CHARGES[:2], _charge("G2", 1, ("0.500", "2.64"))],  # priced wrong
    [CHARGES[0], _charge("G1", 2, ("5.000", "2.61")), CHARGES[2]],  # tier 2 missed
])
def test_charges_that_differ_from_the_recomputation_fail(tmp_path: Path,
                                                         charges: list[StoredCharge]) -> None:
    rows = _stored(READINGS)
    rows.charges = charges
    verdict = _judge(tmp_path, READINGS, rows)
    assert verdict.billing["differing_accounts"] == 1
    assert not verdict.passed


@pytest.mark.parametrize("charge", [
    _charge("G2", 1, ("0.500", "2.61", "1.30")),  # 1.305 rounded down
    _charge("G2", 1, ("0.500", "2.61"), amount="1.32"),  # not the sum of its segments
])
def test_a_charge_rounded_against_the_money_rule_fails(tmp_path: Path,
                                                       charge: StoredCharge) -> None:
    rows = _stored(READINGS)
    rows.charges = [*CHARGES[:2], charge]
    verdict = _judge(tmp_path, READINGS, rows)
    assert verdict.billing["misrounded_charges"] == 1
    assert verdict.examples["charges.misrounded"][0].startswith("ACC-G2:G2:volume:")
    assert not verdict.totals_equal
    assert not verdict.passed


def _billed(engine: BillingEngine, reading: ValidatedReading) -> list[StoredCharge]:
    """What the sink stores of the charges the engine posts for ``reading``."""
    return [StoredCharge(c.charge_id, c.account_id, c.meter_id, c.register, c.kind,
                         c.reading_ts, c.reading_version, c.volume, c.amount, c.corrects,
                         tuple(StoredSegment(s.volume, s.unit_price, s.amount)
                               for s in c.segments))
            for c in engine.bill_reading(reading, now=reading.ts).charges]


def test_a_correction_rounded_on_its_own_keeps_the_totals_equal(tmp_path: Path) -> None:
    """Regression (the CI fault run's differing cents): 1 m³ priced as one span before a late
    reading split it is 2.61 (2.61, then 1.31 and the adjustment -1.31); the same advances
    priced once each are 1.31 + 1.31 = 2.62. Both are the money rule applied to what billing
    knew when; the value before rounding is the same, and that is what must be equal."""
    readings = _series("G2", ["50.000", "50.500", "51.000"])
    rows = _stored(readings)
    ledger = build_ledger([LedgerMeter(meter_id="G2", status="active", medium="gas",
                                       updated_at=T0, customer_type="residential")],
                          effective_from=T0 - timedelta(days=1))
    engine = BillingEngine(tariffs=TariffBook(ZoneInfo("Asia/Shanghai"), ledger.tariffs),
                           accounts=ledger.accounts)
    t0, t1, t2 = (T0 + i * HOUR for i in range(3))

    def version(ts: datetime, value: str, n: int, consumption: str,
                since: datetime) -> ValidatedReading:
        return ValidatedReading(meter_id="G2", register="volume", ts=ts, value=D(value),
                                unit="m3", version=n, quality="actual",
                                consumption=D(consumption), interval_start=since,
                                dims=Dimensions(account_id="ACC-G2"))

    # 02:00 arrives before 01:00: charged over 00:00-02:00, corrected when 01:00 comes
    for reading in (version(t2, "51.000", 1, "1.000", t0),
                    version(t1, "50.500", 1, "0.500", t0),
                    version(t2, "51.000", 2, "0.500", t1)):
        rows.charges += _billed(engine, reading)
    assert [c.amount for c in rows.charges] == [D("2.61"), D("1.31"), D("-1.31")]
    verdict = _judge(tmp_path, readings, rows)
    assert verdict.billing["expected_amount"] == "2.62"
    assert verdict.billing["stored_amount"] == "2.61"
    assert verdict.billing["rounding_difference"] == "-0.01"
    assert D(verdict.billing["stored_value"]) == D(verdict.billing["expected_value"]) == D("2.61")
    assert verdict.totals_equal, verdict.as_dict()
    assert verdict.passed


def test_rollover_is_consumption_not_a_negative_advance(tmp_path: Path) -> None:
    readings = _series("G1", ["99999.000", "00001.500"])
    rows = _stored(readings)
    rows.validated[1] = StoredValidated("G1", "volume", T0 + HOUR, 1, D("1.500"), "actual",
                                        D("2.500"))
    verdict = judge(read_log(_log(tmp_path, readings)), rows)
    assert verdict.consumption["expected_total"] == "2.500"
    assert verdict.consumption["differing_meters"] == 0


def test_the_engines_fed_out_of_order_equal_the_recomputation(tmp_path: Path) -> None:
    """The real VEE and billing engines (the fault run's rules) fed every reading 1-2 times,
    shuffled eight at a time: estimates for gaps charged provisionally, spans re-priced when a
    late reading splits them, every correction an adjustment rounded on its own — the cents
    differ from pricing each advance once, the volumes and the unrounded values do not."""
    rng = random.Random(7)
    meters = ("G1", "G2")
    readings: list[tuple[str, datetime | None, str, bool]] = []
    for meter in meters:
        register = D("100.000")
        for hour in range(30):
            register += D(rng.randint(0, 900)) / 1000
            readings.append((meter, T0 + hour * HOUR, str(register), True))
    arrivals = readings + rng.sample(readings, len(readings) // 2)
    order: list[tuple[str, datetime | None, str, bool]] = []
    for k in range(0, len(arrivals), 8):
        chunk = arrivals[k:k + 8]
        rng.shuffle(chunk)
        order += chunk
    ledger = build_ledger([LedgerMeter(meter_id=m, status="active", medium="gas",
                                       updated_at=T0, customer_type="residential")
                           for m in meters], effective_from=T0 - timedelta(days=1))
    billing = BillingEngine(tariffs=TariffBook(ZoneInfo("Asia/Shanghai"), ledger.tariffs),
                            accounts=ledger.accounts)
    vee = VeeEngine(load_rule_set(VEE_RULES))
    states = {m: MeterState() for m in meters}
    rows = StoredRows(raw=[StoredRaw(m, "volume", ts, D(v)) for m, ts, v, _ in readings
                           if ts is not None])
    for meter, ts, value, _ in order:
        assert ts is not None
        info = MeterInfo(meter_id=meter, account_id=f"ACC-{meter}",
                         dims=Dimensions(account_id=f"ACC-{meter}"))
        step = vee.process(Reading(meter_id=meter, register="volume", ts=ts, value=D(value),
                                   unit="m3", received_at=ts + timedelta(minutes=5)),
                           info, states[meter], dims=info.dims)
        states[meter] = step.state
        for out in step.outputs:
            rows.validated.append(StoredValidated(
                out.meter_id, out.register, out.ts, out.version, out.value, out.quality,
                out.consumption, out.dims.account_id, out.interval_start))
            rows.charges += _billed(billing, out)
    verdict = _judge(tmp_path, readings, rows)
    assert any(c.kind == "adjustment" for c in rows.charges)
    assert verdict.billing["rounding_difference"] != "0.00", verdict.billing
    assert verdict.billing["misrounded_charges"] == 0
    assert verdict.totals_equal, verdict.as_dict()
    assert verdict.passed, verdict.as_dict()
