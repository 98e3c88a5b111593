"""Read what a run stored — raw readings, validated versions, charges and their priced
segments — for the oracle.

Only the meters of the run's log are read (``meter_id = ANY(...)``), so the oracle can be
pointed at a database other runs write to as well.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace

from unimeter.faults.oracle import (
    StoredCharge,
    StoredRaw,
    StoredRows,
    StoredSegment,
    StoredValidated,
)

__all__ = ["read_stored_rows"]

_RAW = "SELECT meter_id, register, ts, value FROM data.raw_readings WHERE meter_id = ANY(%s)"
_VALIDATED = ("SELECT meter_id, register, ts, version, value, quality, consumption, account_id, "
              "interval_start FROM data.validated_readings WHERE meter_id = ANY(%s)")
_CHARGES = ("SELECT charge_id, account_id, meter_id, register, kind, reading_ts, "
            "reading_version, volume, amount, corrects FROM billing.charges "
            "WHERE meter_id = ANY(%s)")
_SEGMENTS = ("SELECT charge_id, volume, unit_price, amount FROM billing.charge_segments "
             "WHERE meter_id = ANY(%s) ORDER BY charge_id, segment_no")


def read_stored_rows(database_url: str, meter_ids: Iterable[str]) -> StoredRows:
    """Every stored row of these meters (one connection, four server-side reads)."""
    import psycopg

    meters = sorted(set(meter_ids))
    rows = StoredRows()
    with psycopg.connect(database_url) as conn:
        with conn.cursor(name="faults_raw") as cur:
            cur.execute(_RAW, (meters,))
            rows.raw = [StoredRaw(*r) for r in cur]
        with conn.cursor(name="faults_validated") as cur:
            cur.execute(_VALIDATED, (meters,))
            rows.validated = [StoredValidated(*r) for r in cur]
        with conn.cursor(name="faults_charges") as cur:
            cur.execute(_CHARGES, (meters,))
            charges = [StoredCharge(*r) for r in cur]
        segments: dict[str, list[StoredSegment]] = defaultdict(list)
        with conn.cursor(name="faults_segments") as cur:
            cur.execute(_SEGMENTS, (meters,))
            for charge_id, volume, unit_price, amount in cur:
                segments[charge_id].append(StoredSegment(volume, unit_price, amount))
        rows.charges = [replace(c, segments=tuple(segments.get(c.charge_id, ())))
                        for c in charges]
    return rows
