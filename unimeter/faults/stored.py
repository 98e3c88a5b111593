"""Read what a run stored — raw readings, validated versions, charges — for the oracle.

Only the meters of the run's log are read (``meter_id = ANY(...)``), so the oracle can be
pointed at a database other runs write to as well.
"""

from __future__ import annotations

from collections.abc import Iterable

from unimeter.faults.oracle import StoredCharge, StoredRaw, StoredRows, StoredValidated

__all__ = ["read_stored_rows"]

_RAW = "SELECT meter_id, register, ts, value FROM data.raw_readings WHERE meter_id = ANY(%s)"
_VALIDATED = ("SELECT meter_id, register, ts, version, value, quality, consumption, account_id "
              "FROM data.validated_readings WHERE meter_id = ANY(%s)")
_CHARGES = ("SELECT charge_id, account_id, meter_id, register, kind, reading_ts, "
            "reading_version, volume, amount, corrects FROM billing.charges "
            "WHERE meter_id = ANY(%s)")


def read_stored_rows(database_url: str, meter_ids: Iterable[str]) -> StoredRows:
    """Every stored row of these meters (one connection, three server-side reads)."""
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
            rows.charges = [StoredCharge(*r) for r in cur]
    return rows
