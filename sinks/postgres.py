"""The PostgreSQL / TimescaleDB sink: one transaction per partition batch.

Strategy: :meth:`PostgresSink.write` receives the records of one topic partition. Each record
is turned into rows by the store of its message type (:mod:`sinks.stores`); a record whose
type has no store, or whose rows cannot be built, is rejected at once with the reason. The
rest is written in **one transaction** together with the partition's progress row
(``ops.sink_progress``), so when ``write`` returns, the rows are durable and the runner may
commit the offsets.

Failures are sorted by their SQLSTATE:

* the connection dropped, the server is shutting down or out of resources, a serialization
  failure or deadlock (classes 08, 40, 53, 57, 58; ``OperationalError``) → the database is
  away: :class:`~sinks.errors.SinkBackpressureError` with an exponential back-off, the batch is
  re-read from Kafka later, nothing advances;
* a data exception or integrity violation (classes 22, 23) → some record cannot be stored:
  the batch is split in halves, each written in its own transaction, down to the single
  records that fail, which are rejected with the database's message (everything else is
  stored);
* anything else (permissions, a missing table) → :class:`~sinks.errors.SinkError`: retrying
  will not help, an operator must act.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from sinks.base import BatchingSink, Rejected, SinkBatch, SinkRecord, TopicPartition, WriteResult
from sinks.errors import SinkBackpressureError, SinkError
from sinks.stores import Store, StoreContext, store_for
from sinks.tables import FastPathMissError

__all__ = ["Backoff", "PostgresSink", "classify"]

_TRANSIENT_CLASSES = {"08", "40", "53", "57", "58"}
_TRANSIENT_STATES = {"55P03", "55006"}  # lock not available, object in use
_RECORD_CLASSES = {"22", "23"}


def classify(exc: psycopg.Error) -> str:
    """'transient', 'record' or 'fatal' for a database error (see the module docstring)."""
    state = exc.sqlstate or ""
    if state[:2] in _RECORD_CLASSES:
        return "record"
    if (isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            or state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES):
        return "transient"
    return "fatal"


@dataclass
class Backoff:
    """Exponential back-off with jitter, reset by a success."""

    initial_s: float = 0.5
    maximum_s: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.maximum_s, self.initial_s * (2 ** self.attempt))
        self.attempt += 1
        return float(delay * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        self.attempt = 0


#: (record, its store, its prepared rows) — a plain tuple: built once per record.
_Item = tuple[SinkRecord, Store, Any]


class PostgresSink(BatchingSink):
    """Stores batches of decoded messages in PostgreSQL or TimescaleDB, idempotently."""

    def __init__(self, conninfo: str, *, consumer_group: str,
                 context: StoreContext | None = None, max_batch_records: int = 20_000,
                 backoff: Backoff | None = None, connect_timeout_s: int = 5) -> None:
        super().__init__(max_batch_records=max_batch_records)
        self.conninfo = conninfo
        self.consumer_group = consumer_group
        self.context = context or StoreContext()
        self.backoff = backoff or Backoff()
        self.connect_timeout_s = connect_timeout_s
        #: Consumer lag per partition, kept up to date by the runner (stored with progress).
        self.lag: dict[TopicPartition, int] = {}
        self._stores: dict[str, Store] = {}
        self._conn: psycopg.Connection | None = None
        self._ready: set[int] = set()
        #: Seconds spent in the database by the last write (for metrics).
        self.last_write_s = 0.0

    # ------------------------------------------------------------------ connection

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = None
            self._ready = set()
            self._conn = psycopg.connect(self.conninfo, autocommit=True,
                                         connect_timeout=self.connect_timeout_s)
        return self._conn

    def _setup(self, conn: psycopg.Connection, stores: Sequence[Store]) -> None:
        """Create the stores' temporary tables on this connection, outside any transaction."""
        for store in stores:
            if id(store) not in self._ready:
                store.setup(conn)
                self._ready.add(id(store))

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def _store(self, schema: str) -> Store | None:
        store = self._stores.get(schema)
        if store is None:
            cls = store_for(schema)
            if cls is None:
                return None
            # one instance per class: a store serving several types writes their rows with
            # one COPY and stages them once a transaction, as its appender expects
            store = next((s for s in self._stores.values() if type(s) is cls), None)
            store = self._stores[schema] = store or cls(self.context)
        return store

    # ------------------------------------------------------------------ write

    def write(self, batch: SinkBatch) -> WriteResult:
        result = WriteResult()
        items: list[_Item] = []
        # Consecutive records are nearly always of one type: look the store up once per run.
        last_schema, store = "", None
        for record in batch.records:
            schema = record.message.SCHEMA
            if schema != last_schema:
                last_schema, store = schema, self._store(schema)
            if store is None:
                result.rejected.append(Rejected(record, {
                    "error": "NoStoreForSchema",
                    "reason": f"the sink stores no '{schema}' messages",
                    "hint": "add a store for this type (CONTRIBUTING.md, 'How to add a sink') "
                            "or route the topic elsewhere"}))
                continue
            try:
                items.append((record, store, store.prepare(record.message)))
            except Exception as exc:  # a record the store cannot turn into rows
                result.rejected.append(Rejected(record, {
                    "error": type(exc).__name__, "reason": f"cannot build rows: {exc}",
                    "where": f"{type(store).__name__}.prepare"}))
        started = time.monotonic()
        try:
            result.merge(self._write_isolating(batch, items, len(result.rejected)))
        finally:
            self.last_write_s = time.monotonic() - started
        self.backoff.reset()
        return result

    def _write_isolating(self, batch: SinkBatch, items: list[_Item],
                         rejected_before: int) -> WriteResult:
        """Write ``items``; on a record-level error split until the bad records are found."""
        try:
            return self._transaction(batch, items, rejected_before, progress=True)
        except psycopg.Error as exc:
            kind = classify(exc)
            if kind == "transient":
                self._drop_connection()
                raise self._backpressure(exc) from None
            if kind == "fatal":
                raise SinkError(f"the database refused the batch: {_first_line(exc)}",
                                where=f"{batch.tp.topic}[{batch.tp.partition}]",
                                hint="check the migrations and the sink role's privileges; "
                                     "nothing was committed", sqlstate=exc.sqlstate) from None
        # A record-level error: isolate it.
        result = WriteResult()
        self._isolate(batch, items, result)
        self._progress_only(batch, result, rejected_before)
        return result

    def _isolate(self, batch: SinkBatch, items: list[_Item], result: WriteResult) -> None:
        if not items:
            return
        try:
            result.merge(self._transaction(batch, items, 0, progress=False))
            return
        except psycopg.Error as exc:
            kind = classify(exc)
            if kind == "transient":
                self._drop_connection()
                raise self._backpressure(exc) from None
            if kind == "fatal":
                raise SinkError(f"the database refused a record: {_first_line(exc)}",
                                where=f"{batch.tp.topic}[{batch.tp.partition}]",
                                sqlstate=exc.sqlstate) from None
            if len(items) == 1:
                result.rejected.append(Rejected(items[0][0], {
                    "error": type(exc).__name__, "reason": _first_line(exc),
                    "sqlstate": exc.sqlstate or "", "where": _where(exc),
                    "hint": "the record violates a column type or constraint of its table"}))
                return
        half = len(items) // 2
        self._isolate(batch, items[:half], result)
        self._isolate(batch, items[half:], result)

    def _transaction(self, batch: SinkBatch, items: Sequence[_Item], rejected: int, *,
                     progress: bool) -> WriteResult:
        conn = self._connection()
        groups: dict[int, tuple[Store, list[Any]]] = {}
        for _record, store, prepared in items:
            group = groups.get(id(store))
            if group is None:
                group = groups[id(store)] = (store, [])
            group[1].append(prepared)
        self._setup(conn, [store for store, _ in groups.values()])
        try:
            return self._attempt(conn, batch, groups, rejected, progress=progress, fast=True)
        except FastPathMissError:
            # A key of the batch exists already: the transaction is rolled back; write the
            # whole batch again through staging (duplicates absorbed, corrections flagged).
            return self._attempt(conn, batch, groups, rejected, progress=progress, fast=False)

    def _attempt(self, conn: psycopg.Connection, batch: SinkBatch,
                 groups: dict[int, tuple[Store, list[Any]]], rejected: int, *,
                 progress: bool, fast: bool) -> WriteResult:
        result = WriteResult()
        with conn.transaction():
            for store, prepared in groups.values():
                result.merge(store.write(conn, prepared, batch.tp.topic, fast=fast))
            if progress:
                self._record_progress(conn, batch, result, rejected)
        return result

    def _progress_only(self, batch: SinkBatch, result: WriteResult, rejected: int) -> None:
        try:
            conn = self._connection()
            with conn.transaction():
                self._record_progress(conn, batch, result, rejected + len(result.rejected))
        except psycopg.Error as exc:
            if classify(exc) == "transient":
                self._drop_connection()
                raise self._backpressure(exc) from None
            raise

    def _record_progress(self, conn: psycopg.Connection, batch: SinkBatch,
                         result: WriteResult, rejected: int) -> None:
        conn.execute(
            "INSERT INTO ops.sink_progress AS p (consumer_group, topic, partition, next_offset,"
            " rows_written, duplicates_absorbed, corrections, dead_lettered, lag) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET "
            "next_offset = greatest(p.next_offset, excluded.next_offset), "
            "rows_written = p.rows_written + excluded.rows_written, "
            "duplicates_absorbed = p.duplicates_absorbed + excluded.duplicates_absorbed, "
            "corrections = p.corrections + excluded.corrections, "
            "dead_lettered = p.dead_lettered + excluded.dead_lettered, "
            "lag = excluded.lag, updated_at = now()",
            (self.consumer_group, batch.tp.topic, batch.tp.partition, batch.next_offset,
             result.rows_written, result.absorbed, result.corrections, rejected,
             self.lag.get(batch.tp)))

    def _backpressure(self, exc: psycopg.Error) -> SinkBackpressureError:
        delay = self.backoff.next()
        return SinkBackpressureError(
            f"the database is unavailable ({_first_line(exc)}); retrying in {delay:.1f} s",
            retry_after=delay, hint="nothing was committed; the batch will be re-read")

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _where(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [p for p in (diag.table_name, diag.column_name, diag.constraint_name) if p]
    return ".".join(parts) if parts else (diag.context or "")[:200]


def rows_by_table(results: Sequence[WriteResult]) -> dict[str, int]:
    """Sum of rows per table over several results (for reports)."""
    out: dict[str, int] = defaultdict(int)
    for result in results:
        for table, count in result.rows.items():
            out[table] += count
    return dict(out)
