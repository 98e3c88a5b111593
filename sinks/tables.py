"""Idempotent appends into one table: binary COPY, staging, ON CONFLICT, corrections.

Strategy: a :class:`TableSpec` declares a stored table — its columns with their PostgreSQL
types (binary COPY sends no type names, so psycopg must know them), its natural key, and the
columns whose difference makes an incoming row a *correction* rather than a duplicate.
:class:`TableAppender` writes rows into it inside the caller's transaction:

1. **fast path** — binary ``COPY`` straight into the table. When every key is new (the normal
   case for live data) this is the whole cost, about that of a raw COPY. If a key exists the
   COPY fails with ``unique_violation``; the appender raises :class:`FastPathMissError` and the
   caller rolls the transaction back and writes the batch again without the fast path (no
   savepoint: two round trips fewer per COPY, and a miss is rare).
2. **staging path** — the rows are binary-COPYed into a temporary staging table, then
   ``INSERT … SELECT … ON CONFLICT (key) DO NOTHING`` moves the new ones. When fewer rows went
   in than were staged, the staged rows are joined to the stored ones: identical rows are
   *absorbed* (counted), rows with a different value for an existing key are recorded as
   flagged corrections (``ops.sink_corrections`` or the table's own conflict table) and never
   applied.

After a fast-path miss the appender stays on the staging path for a while (doubling up to
64 batches) before trying the fast path again, so a replay full of duplicates does not pay for
a failed COPY on every batch.

Staging tables are temporary tables of the connection, created once by :meth:`setup` outside
any batch transaction and emptied by every commit (``ON COMMIT DELETE ROWS``): each is filled
at most once per transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["AppendOutcome", "Column", "FastPathMissError", "TableAppender", "TableSpec"]

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str


@dataclass(frozen=True)
class TableSpec:
    """A stored table as the sink writes it.

    ``conflict_table`` names a table-specific conflict table with a custom insert
    (``conflict_sql``), used instead of the generic ``ops.sink_corrections``.
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    compare: tuple[str, ...]
    conflict_sql: str | None = None

    def __post_init__(self) -> None:
        names = self.column_names
        for col in (*self.key, *self.compare):
            if col not in names:
                raise ValueError(f"{self.name}: column '{col}' of key/compare is not a column")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def pg_types(self) -> list[str]:
        return [c.pg_type for c in self.columns]

    @property
    def identifier(self) -> sql.Identifier:
        schema, _, table = self.name.partition(".")
        return sql.Identifier(schema, table)

    @property
    def staging_name(self) -> str:
        return "_stage_" + self.name.replace(".", "_")

    def column_list(self) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.column_names)

    def copy_statement(self, target: sql.Composable) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            target, self.column_list())


@dataclass
class AppendOutcome:
    """Rows of one append: inserted, absorbed (identical duplicates), corrections."""

    staged: int = 0
    inserted: int = 0
    absorbed: int = 0
    corrections: int = 0
    fast_path: bool = False


class FastPathMissError(Exception):
    """A fast-path COPY met an existing key: roll back and write the batch staged."""

    def __init__(self, table: str) -> None:
        super().__init__(f"an existing key in {table}: retry without the fast path")
        self.table = table


@dataclass
class _Mode:
    skip_fast_batches: int = 0
    penalty: int = 1


@dataclass
class TableAppender:
    """Writes rows of one :class:`TableSpec`; keeps the fast-path mode between batches."""

    spec: TableSpec
    fast_path: bool = True
    _mode: _Mode = field(default_factory=_Mode)

    def append(self, conn: psycopg.Connection, rows: Sequence[Row], *,
               source_topic: str | None = None, staged_already: bool = False,
               allow_fast: bool = True, inserted_keys_into: str | None = None
               ) -> AppendOutcome:
        """Append ``rows`` idempotently inside the caller's open transaction.

        ``staged_already`` means the caller has put exactly these rows in the staging table
        (to reuse it for a derived projection); the fast path is skipped then.
        ``inserted_keys_into`` names a temporary table (the key columns, in key order) that
        receives the keys of the rows the staging path inserted — on the fast path every row
        was inserted and nothing is written there (``AppendOutcome.fast_path`` says which).
        """
        if not rows and not staged_already:
            return AppendOutcome()
        if self.fast_path and allow_fast and not staged_already:
            if self._mode.skip_fast_batches == 0:
                try:
                    self._copy(conn, self.spec.identifier, rows)
                except psycopg.errors.UniqueViolation:
                    self._mode.skip_fast_batches = self._mode.penalty
                    self._mode.penalty = min(self._mode.penalty * 2, 64)
                    raise FastPathMissError(self.spec.name) from None
                self._mode.penalty = 1
                return AppendOutcome(staged=len(rows), inserted=len(rows), fast_path=True)
            self._mode.skip_fast_batches -= 1
        if not staged_already:
            self.stage(conn, rows)
        return self._merge(conn, len(rows), source_topic, inserted_keys_into)

    # ------------------------------------------------------------------ staging

    def setup(self, conn: psycopg.Connection) -> None:
        """Create this connection's temporary staging table (emptied at every commit).

        Call it outside a batch transaction: a rolled-back batch must not take it along.
        """
        conn.execute(sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS").format(sql.Identifier(self.spec.staging_name),
                                            self.spec.identifier))

    def stage(self, conn: psycopg.Connection, rows: Sequence[Row]) -> None:
        """Binary-COPY ``rows`` into the staging table (empty: at most once a transaction)."""
        self._copy(conn, sql.Identifier(self.spec.staging_name), rows)

    def _copy(self, conn: psycopg.Connection, target: sql.Composable,
              rows: Sequence[Row]) -> None:
        with conn.cursor() as cur, cur.copy(self.spec.copy_statement(target)) as copy:
            copy.set_types(self.spec.pg_types)
            for row in rows:
                copy.write_row(row)

    def _merge(self, conn: psycopg.Connection, staged: int, source_topic: str | None,
               inserted_keys_into: str | None = None) -> AppendOutcome:
        spec = self.spec
        stage = sql.Identifier(spec.staging_name)
        key = sql.SQL(", ").join(sql.Identifier(k) for k in spec.key)
        insert = sql.SQL(
            "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} "
            "ON CONFLICT ({key}) DO NOTHING").format(
                table=spec.identifier, cols=spec.column_list(), stage=stage, key=key)
        if inserted_keys_into is not None:
            insert = sql.SQL("WITH inserted AS ({insert} RETURNING {key}) "
                             "INSERT INTO {keys} SELECT {key} FROM inserted").format(
                                 insert=insert, key=key,
                                 keys=sql.Identifier(inserted_keys_into))
        cur = conn.execute(insert)
        inserted = max(cur.rowcount, 0)
        outcome = AppendOutcome(staged=staged, inserted=inserted)
        if inserted < staged:
            if spec.compare:
                outcome.corrections = self._record_corrections(conn, source_topic)
            outcome.absorbed = staged - inserted - outcome.corrections
        return outcome

    def _record_corrections(self, conn: psycopg.Connection, source_topic: str | None) -> int:
        """Record staged rows that differ from the stored row of their key; return how many."""
        spec = self.spec
        join = sql.SQL(" AND ").join(
            sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in spec.key)
        differs = sql.SQL(" OR ").join(
            sql.SQL("s.{0} IS DISTINCT FROM t.{0}").format(sql.Identifier(c))
            for c in spec.compare)
        if spec.conflict_sql is not None:
            query = sql.SQL(
                "WITH diff AS (SELECT s.*, {stored} FROM {stage} s JOIN {table} t ON {join} "
                "WHERE {differs}), ins AS ({custom}) SELECT count(*) FROM diff").format(
                    stored=sql.SQL(", ").join(
                        sql.SQL("t.{} AS {}").format(sql.Identifier(c),
                                                     sql.Identifier("stored_" + c))
                        for c in spec.compare),
                    stage=sql.Identifier(spec.staging_name), table=spec.identifier,
                    join=join, differs=differs, custom=sql.SQL(spec.conflict_sql))
            row = conn.execute(query).fetchone()
            return int(row[0]) if row else 0

        def obj(alias: str, cols: Sequence[str]) -> sql.Composed:
            return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
                sql.SQL("{}, {}.{}").format(sql.Literal(c), sql.Identifier(alias),
                                            sql.Identifier(c)) for c in cols))

        differing = sql.SQL("array_remove(ARRAY[{}], NULL)").format(sql.SQL(", ").join(
            sql.SQL("CASE WHEN s.{0} IS DISTINCT FROM t.{0} THEN {1} END").format(
                sql.Identifier(c), sql.Literal(c)) for c in spec.compare))
        query = sql.SQL(
            "WITH diff AS (SELECT {key} AS natural_key, {stored} AS stored, "
            "{incoming} AS incoming, {differing} AS differs FROM {stage} s "
            "JOIN {table} t ON {join} WHERE {differs_cond}), "
            "ins AS (INSERT INTO ops.sink_corrections (table_name, natural_key, stored, incoming,"
            " differs, incoming_hash, source_topic) SELECT {name}, natural_key, stored, incoming,"
            " differs, md5(incoming::text), {topic} FROM diff "
            "ON CONFLICT (table_name, natural_key, incoming_hash) DO NOTHING) "
            "SELECT count(*) FROM diff").format(
                key=obj("s", spec.key), stored=obj("t", spec.compare),
                incoming=obj("s", spec.compare), differing=differing,
                stage=sql.Identifier(spec.staging_name), table=spec.identifier, join=join,
                differs_cond=differs, name=sql.Literal(spec.name),
                topic=sql.Literal(source_topic))
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0
