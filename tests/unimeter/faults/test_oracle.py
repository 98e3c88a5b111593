"""The fault-test oracle on crafted logs and rows: every class appears where it should."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.messages import LedgerMeter
from simulator.log import MeterRec, ReadingRec, SimLog, read_log
from unimeter.faults.ledger import build_ledger
from unimeter.faults.oracle import (
    StoredCharge,
    StoredRaw,
    StoredRows,
    StoredValidated,
    Verdict,
    judge,
)

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


def _charge(meter: str, hour: int, volume: str, amount: str, *, version: int = 1,
            suffix: str = "") -> StoredCharge:
    ts = T0 + hour * HOUR
    return StoredCharge(f"ACC-{meter}:{meter}:volume:{ts.isoformat()}:{version}{suffix}",
                        f"ACC-{meter}", meter, "volume", "consumption", ts, version, D(volume),
                        D(amount))


READINGS = _series("G1", ["100.000", "103.000", "108.000"]) + _series("G2", ["50.000",
                                                                          "50.500"])
# Priced by hand with the fault run's gas tariff (5 m³ at 2.61, up to 12 at 2.83, then 4.23):
# G1: 3 m³ -> 7.83; then 5 m³ = 2 at 2.61 + 3 at 2.83 = 5.22 + 8.49 = 13.71. G2: 0.5 -> 1.31.
CHARGES = [_charge("G1", 1, "3.000", "7.83"), _charge("G1", 2, "5.000", "13.71"),
           _charge("G2", 1, "0.500", "1.31")]


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
    [*CHARGES, _charge("G2", 1, "0.500", "1.31", suffix="-again")],  # charged twice
    [*CHARGES[:2], _charge("G2", 1, "0.500", "1.32")],  # priced wrong
])
def test_charges_that_differ_from_the_recomputation_fail(tmp_path: Path,
                                                         charges: list[StoredCharge]) -> None:
    rows = _stored(READINGS)
    rows.charges = charges
    verdict = _judge(tmp_path, READINGS, rows)
    assert verdict.billing["differing_accounts"] == 1
    assert not verdict.passed


def test_rollover_is_consumption_not_a_negative_advance(tmp_path: Path) -> None:
    readings = _series("G1", ["99999.000", "00001.500"])
    rows = _stored(readings)
    rows.validated[1] = StoredValidated("G1", "volume", T0 + HOUR, 1, D("1.500"), "actual",
                                        D("2.500"))
    verdict = judge(read_log(_log(tmp_path, readings)), rows)
    assert verdict.consumption["expected_total"] == "2.500"
    assert verdict.consumption["differing_meters"] == 0
