"""Writing validated rows into the ledger: binary COPY into a staging table, then one INSERT
of the new rows and one UPDATE of the changed ones per table.

Strategy: a row whose values equal the ledger's is not touched at all (``IS DISTINCT FROM``),
so re-importing a file changes nothing — no row version, no history, no outbox row. Only the
columns a file gives are written; ``keep_if_empty`` columns keep the ledger's value when
empty. The same path serves :func:`bulk_load`, the programmatic loader for generated fleets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from devices.importer.spec import KINDS, Column, Kind

__all__ = ["TableCount", "apply_rows", "bulk_load"]


@dataclass
class TableCount:
    """What an import did to one kind."""

    rows: int = 0
    inserted: int = 0
    updated: int = 0

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated


def _value(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.pg == "jsonb":
        return Jsonb(value)
    return value


def _upsert(conn: psycopg.Connection, table: str, key: Sequence[str], columns: list[Column],
            rows: list[list[Any]], *, insert: bool = True) -> tuple[set[str], set[str]]:
    """Stage ``rows`` (values in ``columns`` order) and merge them into ``ledger.table``."""
    stage = sql.Identifier(f"_stage_{table}")
    names = [c.name for c in columns]
    defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg)) for c in columns)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (ord int4, {}) ON COMMIT DROP").format(
        stage, defs))
    with conn.cursor() as cur:
        copy_sql = sql.SQL("COPY {} (ord, {}) FROM STDIN (FORMAT BINARY)").format(
            stage, sql.SQL(", ").join(map(sql.Identifier, names)))
        with cur.copy(copy_sql) as copy:
            copy.set_types(["int4", *(c.pg for c in columns)])
            for ordinal, values in enumerate(rows):
                copy.write_row([ordinal, *(_value(c, v) for c, v in zip(columns, values,
                                                                        strict=True))])
    target = sql.SQL("ledger.{}").format(sql.Identifier(table))
    match = sql.SQL(" AND ").join(
        sql.SQL("t.{k} = s.{k}").format(k=sql.Identifier(k)) for k in key)
    returning = sql.SQL(" || ':' || ").join(
        sql.SQL("{}::text").format(sql.Identifier(k)) for k in key)
    inserted: set[str] = set()
    if insert:
        exprs = []
        for c in columns:
            if c.keep_if_empty and c.empty is not None:
                exprs.append(sql.SQL("COALESCE(s.{}, {})").format(sql.Identifier(c.name),
                                                                  sql.Literal(c.empty)))
            else:
                exprs.append(sql.SQL("s.{}").format(sql.Identifier(c.name)))
        cur = conn.execute(sql.SQL(
            "INSERT INTO {target} ({cols}) SELECT {exprs} FROM {stage} s "
            "WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {match}) ORDER BY s.ord "
            "RETURNING {returning}").format(
            target=target, cols=sql.SQL(", ").join(map(sql.Identifier, names)),
            exprs=sql.SQL(", ").join(exprs), stage=stage, match=match, returning=returning))
        inserted = {r[0] for r in cur.fetchall()}
    values = [c for c in columns if c.name not in key]
    updated: set[str] = set()
    if values:
        new = [sql.SQL("COALESCE(s.{c}, t.{c})").format(c=sql.Identifier(c.name))
               if c.keep_if_empty else sql.SQL("s.{}").format(sql.Identifier(c.name))
               for c in values]
        old = [sql.SQL("t.{}").format(sql.Identifier(c.name)) for c in values]
        cur = conn.execute(sql.SQL(
            "UPDATE {target} t SET {sets} FROM {stage} s WHERE {match} "
            "AND ({old}) IS DISTINCT FROM ({new}) RETURNING {returning}").format(
            target=target,
            sets=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c.name), e)
                                    for c, e in zip(values, new, strict=True)),
            stage=stage, match=match,
            old=sql.SQL(", ").join(old) if len(old) > 1 else sql.SQL("ROW({})").format(old[0]),
            new=sql.SQL(", ").join(new) if len(new) > 1 else sql.SQL("ROW({})").format(new[0]),
            returning=sql.SQL(" || ':' || ").join(
                sql.SQL("t.{}::text").format(sql.Identifier(k)) for k in key)))
        updated = {r[0] for r in cur.fetchall()} - inserted
    conn.execute(sql.SQL("DROP TABLE {}").format(stage))
    return inserted, updated


def _sync_plan_targets(conn: psycopg.Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Make each plan's targets exactly the listed ones; returns the plans that changed."""
    changed: set[str] = set()
    for row in rows:
        wanted = set()
        for target in row.get("targets") or []:
            kind, _, target_id = target.partition(":")
            wanted.add((kind, target_id))
        current = {(r[0], r[1]) for r in conn.execute(
            "SELECT target_kind, target_id FROM ledger.collection_plan_targets "
            "WHERE plan_id = %s", (row["plan_id"],)).fetchall()}
        if wanted == current:
            continue
        changed.add(row["plan_id"])
        for kind, target_id in current - wanted:
            conn.execute("DELETE FROM ledger.collection_plan_targets WHERE plan_id = %s AND "
                         "target_kind = %s AND target_id = %s",
                         (row["plan_id"], kind, target_id))
        for kind, target_id in sorted(wanted - current):
            conn.execute("INSERT INTO ledger.collection_plan_targets (plan_id, target_kind, "
                         "target_id) VALUES (%s, %s, %s)", (row["plan_id"], kind, target_id))
    return changed


def apply_rows(conn: psycopg.Connection, kind: Kind, columns: Sequence[str],
               rows: Sequence[Mapping[str, Any]]) -> TableCount:
    """Merge ``rows`` (typed values by column name) of ``kind`` into the ledger.

    Rows must already be ordered parents first. Runs in the caller's transaction.
    """
    count = TableCount(rows=len(rows))
    if not rows:
        return count
    present = [kind.columns_by_name[c] for c in columns if c in kind.columns_by_name]
    if kind.name == "meters":
        # One row, two tables: the device (meter_id is its device_id), then its attributes.
        device_cols = [Column("device_id", "id", pg="text")] + [
            c for c in present if not c.table and c.name != "meter_id"]
        meter_cols = [Column("meter_id", "id", pg="text")] + [
            c for c in present if c.table == "meters"]
        dev_rows = [[r["meter_id"], *(r.get(c.name) for c in device_cols[1:])] for r in rows]
        ins_d, upd_d = _upsert(conn, "devices", ("device_id",), device_cols, dev_rows)
        met_rows = [[r.get(c.name) for c in meter_cols] for r in rows]
        ins_m, upd_m = _upsert(conn, "meters", ("meter_id",), meter_cols, met_rows)
        count.inserted = len(ins_m)
        # A row counts as updated when its device or its meter attributes changed.
        count.updated = len((upd_d | upd_m | ins_d) - ins_m)
        return count
    table_cols = [c for c in present if c.name != "targets"]
    values = [[r.get(c.name) for c in table_cols] for r in rows]
    inserted, updated = _upsert(conn, kind.table, kind.key, table_cols, values,
                                insert=kind.name != "network")
    if kind.name == "collection_plans" and "targets" in columns:
        updated |= _sync_plan_targets(conn, rows) - inserted
    count.inserted, count.updated = len(inserted), len(updated)
    return count


def bulk_load(conn: psycopg.Connection, kind: str,
              records: Iterable[Mapping[str, Any]]) -> TableCount:
    """Load many typed records of one import kind fast (binary COPY into staging + merge).

    For generated fleets and migrations from another system: records are dicts of typed
    values (``Decimal``, ``datetime``, ``bool`` …) by import column name, all with the same
    keys. Nothing is parsed or pre-validated in Python — the ledger's constraints and
    triggers still refuse bad data, but without line numbers; use
    :func:`devices.importer.import_files` for files from people. Re-loading the same records
    changes nothing. Runs in the caller's transaction; parents must come before children.
    """
    spec = KINDS[kind]
    rows = list(records)
    if not rows:
        return TableCount()
    columns = list(rows[0])
    unknown = [c for c in columns if c not in spec.columns_by_name]
    if unknown:
        raise KeyError(f"unknown {kind} column(s): {', '.join(unknown)}; known: "
                       f"{', '.join(spec.columns_by_name)}")
    return apply_rows(conn, spec, columns, rows)
