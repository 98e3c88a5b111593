"""Validated readings: every version kept, the current one projected into hourly consumption.

Strategy: a validated reading is stored three ways in one transaction:

* ``data.validated_readings`` — every version, append-only (key meter, register, ts,
  version). A different content for an existing key+version is a correction (flagged in
  ``ops.sink_corrections``), a re-delivery is absorbed;
* ``data.reading_edits`` — who, when, why and how, for every edited version;
* ``data.consumption_intervals`` — the hour parts of the **current** (highest) version of each
  reading, what the aggregates sum. A reading's last hour part is marked
  ``closes_reading`` so counts count each reading once.

Only the readings a batch actually stores are projected: a re-delivered version was
projected in the transaction that first stored it. When every reading of the batch is new
and a first version (1), no other version of it exists and its hour parts are appended
directly. Otherwise the *general path* runs over the newly stored keys: those whose version is
now the highest stored one are the winners, the hour parts of older versions of those readings
are deleted, and the winners' hour parts are inserted (an older version's row for the same
hour is updated in place, a newer one never touched). A stale version replayed after a newer
one changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from schemas.messages import Message, ValidatedReading
from sinks.base import WriteResult
from sinks.stores import Store, StoreContext, _cols
from sinks.tables import TableAppender, TableSpec

__all__ = ["CONSUMPTION_INTERVALS", "READING_EDITS", "VALIDATED_READINGS",
           "ValidatedReadingStore"]

Row = tuple[Any, ...]

#: Versions start at 1 (the migration checks it): a version-1 reading has no older version.
FIRST_VERSION = 1

#: Temporary tables of the general path: keys stored by this batch, and those now current.
_NEW_KEYS = "_stored_reading_versions"
_CURRENT = "_current_versions"

VALIDATED_READINGS = TableSpec(
    name="data.validated_readings",
    columns=_cols("meter_id text", "register text", "ts timestamptz", "version int4",
                  "value numeric", "unit text", "quality text", "method text", "flags text[]",
                  "kind text", "consumption numeric", "interval_start timestamptz",
                  "original_value numeric", "received_at timestamptz",
                  "validated_at timestamptz", "account_id text", "customer_type text",
                  "region text", "org_unit text", "supply_node text", "tariff_id text",
                  "vee_group text", "medium text", "source text", "frame_id text"),
    key=("meter_id", "register", "ts", "version"),
    # The measured content; the ledger attribution (dims) and timestamps of processing may
    # differ on a replay without being a correction.
    compare=("value", "unit", "quality", "method", "flags", "kind", "consumption",
             "interval_start", "original_value"),
)

READING_EDITS = TableSpec(
    name="data.reading_edits",
    columns=_cols("meter_id text", "register text", "ts timestamptz", "version int4",
                  "edited_by text", "edited_at timestamptz", "reason_code text", "method text",
                  "quality text", "new_value numeric", "previous_value numeric",
                  "previous_version int4", "note text"),
    key=("meter_id", "register", "ts", "version"),
    compare=(),
)

CONSUMPTION_INTERVALS = TableSpec(
    name="data.consumption_intervals",
    columns=_cols("meter_id text", "register text", "interval_start timestamptz",
                  "interval_end timestamptz", "reading_ts timestamptz", "version int4",
                  "volume numeric", "estimated bool", "closes_reading bool", "unit text",
                  "medium text", "account_id text", "customer_type text", "region text",
                  "org_unit text", "supply_node text", "tariff_id text"),
    key=("meter_id", "register", "reading_ts", "interval_start"),
    compare=(),
)


#: A prepared reading: (version row, hour-part rows, edit row or None). Plain tuples: built
#: once per reading on the sink's hot path. The key (meter, register, ts, version) is the
#: first four fields of the version row.
_PreparedReading = tuple[Row, list[Row], Row | None]


class ValidatedReadingStore(Store):
    message_type = ValidatedReading

    def __init__(self, context: StoreContext) -> None:
        super().__init__(context)
        self.readings = TableAppender(VALIDATED_READINGS, fast_path=context.fast_path)
        self.edits = TableAppender(READING_EDITS, fast_path=context.fast_path)
        self.intervals = TableAppender(CONSUMPTION_INTERVALS, fast_path=context.fast_path)

    def tables(self) -> tuple[TableSpec, ...]:
        return (VALIDATED_READINGS, READING_EDITS, CONSUMPTION_INTERVALS)

    def prepare(self, message: Message) -> _PreparedReading:
        m = message
        assert isinstance(m, ValidatedReading)
        d = m.dims
        reading = (m.meter_id, m.register, m.ts, m.version, m.value, m.unit, m.quality,
                   m.method, list(m.flags), m.kind, m.consumption, m.interval_start,
                   m.original_value, m.received_at, m.validated_at, d.account_id,
                   d.customer_type, d.region, d.org_unit, d.supply_node, d.tariff_id,
                   d.vee_group, d.medium, m.source, m.frame_id)
        parts = m.intervals
        intervals: list[Row]
        if len(parts) == 1:  # the common case: one hour part, which closes the reading
            i = parts[0]
            intervals = [(m.meter_id, m.register, i.start, i.end, m.ts, m.version, i.volume,
                          i.estimated, True, m.unit, d.medium, d.account_id, d.customer_type,
                          d.region, d.org_unit, d.supply_node, d.tariff_id)]
        elif parts:
            last_end = max(i.end for i in parts)
            intervals = [(m.meter_id, m.register, i.start, i.end, m.ts, m.version, i.volume,
                          i.estimated, i.end == last_end, m.unit, d.medium, d.account_id,
                          d.customer_type, d.region, d.org_unit, d.supply_node, d.tariff_id)
                         for i in parts]
        else:
            intervals = []
        edit = None
        if m.edit is not None:
            e = m.edit
            edit = (m.meter_id, m.register, m.ts, m.version, e.user, e.at, e.reason_code,
                    m.method, m.quality, m.value, e.previous_value, e.previous_version, e.note)
        return reading, intervals, edit

    def write(self, conn: psycopg.Connection, prepared: Sequence[Any],
              source_topic: str, *, fast: bool = True) -> WriteResult:
        result = WriteResult()
        items: Sequence[_PreparedReading] = prepared
        outcome = self.readings.append(conn, [p[0] for p in items],
                                       source_topic=source_topic, allow_fast=fast,
                                       inserted_keys_into=_NEW_KEYS)
        self._count(result, VALIDATED_READINGS.name, outcome)
        edits = [p[2] for p in items if p[2] is not None]
        if edits:
            self._count(result, READING_EDITS.name,
                        self.edits.append(conn, edits, source_topic=source_topic, allow_fast=fast),
                        primary=False)
        if outcome.inserted == 0:
            # Every version was stored before, and its hour parts with it: nothing to project.
            return result
        all_new = outcome.inserted == len(items)
        if all_new and all(p[0][3] == FIRST_VERSION for p in items):
            # First versions that did not exist: no other version of these readings does.
            intervals = [row for p in items for row in p[1]]
            self._count(result, CONSUMPTION_INTERVALS.name,
                        self.intervals.append(conn, intervals, source_topic=source_topic,
                                              allow_fast=fast),
                        primary=False)
            return result
        if outcome.fast_path:
            self._copy_keys(conn, [p[0][:4] for p in items])
        # The hour parts of the readings stored now (the others were projected before), each
        # version once: a batch may carry the same version twice (a pipeline worker replaying
        # what it sent before a crash), and one INSERT … ON CONFLICT DO UPDATE must not meet
        # the same hour part twice.
        unique = {p[0][:4]: p for p in reversed(items)}
        intervals = [row for p in unique.values() for row in p[1]]
        result.rows[CONSUMPTION_INTERVALS.name] += self._project(conn, intervals)
        return result

    # ------------------------------------------------------------------ general path

    def setup(self, conn: psycopg.Connection) -> None:
        super().setup(conn)
        for name in (_NEW_KEYS, _CURRENT):
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (meter_id text, "
                         "register text, ts timestamptz, version integer) ON COMMIT DELETE ROWS")

    @staticmethod
    def _copy_keys(conn: psycopg.Connection, keys: Sequence[Row]) -> None:
        with conn.cursor() as cur, cur.copy(
                f"COPY {_NEW_KEYS} (meter_id, register, ts, version) "
                "FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "timestamptz", "int4"])
            for key in keys:
                copy.write_row(key)

    def _project(self, conn: psycopg.Connection, intervals: Sequence[Row]) -> int:
        """Replace the hour parts of every newly stored reading whose version is now the
        current one; returns the rows written."""
        # Winners: batch readings whose version is the highest stored for their key.
        conn.execute(
            f"INSERT INTO {_CURRENT} SELECT DISTINCT b.meter_id, b.register, b.ts, "
            f"b.version FROM {_NEW_KEYS} b WHERE b.version = (SELECT max(t.version) "
            "FROM data.validated_readings t WHERE t.meter_id = b.meter_id "
            "AND t.register = b.register AND t.ts = b.ts)")
        # Hour parts of older versions lie in [their interval_start, the reading's ts]: bound
        # the delete so that TimescaleDB excludes every other chunk.
        bounds = conn.execute(
            "SELECT min(coalesce(t.interval_start, t.ts)), max(w.ts), count(*) "
            f"FROM {_CURRENT} w JOIN data.validated_readings t ON t.meter_id = w.meter_id "
            "AND t.register = w.register AND t.ts = w.ts AND t.version < w.version").fetchone()
        if bounds is not None and bounds[2]:
            lo, hi = bounds[0], bounds[1]
            conn.execute(
                f"DELETE FROM data.consumption_intervals i USING {_CURRENT} w "
                "WHERE i.meter_id = w.meter_id AND i.register = w.register "
                "AND i.reading_ts = w.ts AND i.version < w.version "
                "AND i.interval_start >= %s AND i.interval_start <= %s", (lo, hi))
        if not intervals:
            return 0
        self.intervals.stage(conn, intervals)
        columns = ", ".join(CONSUMPTION_INTERVALS.column_names)
        updates = ", ".join(f"{c} = excluded.{c}" for c in CONSUMPTION_INTERVALS.column_names
                            if c not in CONSUMPTION_INTERVALS.key)
        cur = conn.execute(
            f"INSERT INTO data.consumption_intervals AS i ({columns}) "
            f"SELECT {', '.join('s.' + c for c in CONSUMPTION_INTERVALS.column_names)} "
            f"FROM _stage_data_consumption_intervals s JOIN {_CURRENT} w "
            "ON s.meter_id = w.meter_id AND s.register = w.register AND s.reading_ts = w.ts "
            "AND s.version = w.version "
            "ON CONFLICT (meter_id, register, reading_ts, interval_start) DO UPDATE SET "
            f"{updates} WHERE i.version < excluded.version")
        return max(cur.rowcount, 0)
