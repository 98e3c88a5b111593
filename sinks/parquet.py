"""Parquet export of validated readings and aggregates, one file per local day.

Strategy: PostgreSQL streams each day of a data set with ``COPY (SELECT …) TO STDOUT (FORMAT
CSV)``, already cast to types Arrow's CSV reader parses natively (timestamps as epoch
microseconds, numerics rounded to 9 decimals, booleans as 0/1, arrays joined); pyarrow reads the
stream batch by batch with an explicit schema and writes it with a ``ParquetWriter`` — no
Python object per value, and memory bounded by one batch, whatever the size of the day.

Files are laid out Hive-style, partitioned by the local day of the utility's zone (a monthly
aggregate row sits in the partition of its month's first day)::

    <out>/<data set>/day=2026-07-10/<data set>-2026-07-10.parquet

A day is written to a temporary file and renamed into place, so an interrupted export never
leaves half a file, and exporting a day again replaces it. Money and volumes are
``decimal128(38, 9)``; times are ``timestamp[us, UTC]``.
"""

from __future__ import annotations

import io
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from schemas.settings import DatabaseSettings
from sinks.errors import SinkError

__all__ = ["DATASETS", "Dataset", "ExportReport", "export_parquet"]

DECIMAL = pa.decimal128(38, 9)
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Col:
    """One exported column: its name and kind (text, ts, decimal, int, bool, list, date)."""

    name: str
    kind: str = "text"

    def select(self) -> str:
        ident = f'"{self.name}"'
        return {
            "ts": f"(extract(epoch FROM {ident}) * 1000000)::bigint",
            "decimal": f"round({ident}, 9)",
            "bool": f"{ident}::int",
            "list": f"array_to_string({ident}, ',')",
            "date": f"{ident}::text",
        }.get(self.kind, ident) + f" AS {ident}"

    def csv_type(self) -> pa.DataType:
        return {"ts": pa.int64(), "decimal": DECIMAL, "int": pa.int64(), "bool": pa.int8(),
                "date": pa.date32()}.get(self.kind, pa.string())

    def arrow_type(self) -> pa.DataType:
        return {"ts": TIMESTAMP, "bool": pa.bool_()}.get(self.kind, self.csv_type())


@dataclass(frozen=True)
class Dataset:
    """An exportable relation: where it lives, its time column and its columns."""

    name: str
    relation: str
    time_column: str
    columns: tuple[Col, ...]
    analyst_relation: str | None = None
    order_by: str = ""

    def schema(self, columns: tuple[Col, ...]) -> pa.Schema:
        return pa.schema([(c.name, c.arrow_type()) for c in columns])


def _aggregate(name: str, groups: tuple[Col, ...], measures: tuple[Col, ...],
               analyst: bool) -> Dataset:
    return Dataset(name, f"agg.{name}", "bucket", (Col("bucket", "ts"), *groups, *measures),
                   analyst_relation=f"analyst.{name}" if analyst else None,
                   order_by="bucket")


_CONSUMPTION = (Col("consumption", "decimal"), Col("reading_count", "int"),
                Col("interval_count", "int"), Col("estimated_count", "int"),
                Col("min_consumption", "decimal"), Col("max_consumption", "decimal"))
_METER = (Col("meter_id"), Col("register"), Col("unit"), Col("medium"), Col("account_id"),
          Col("tariff_id"))
_DIMENSION = (Col("medium"), Col("register"), Col("unit"), Col("customer_type"), Col("region"),
              Col("org_unit"), Col("supply_node"), Col("tariff_id"))
_TIER = (Col("account_id"), Col("tariff_id"), Col("tier", "int"), Col("component"),
         Col("price_period"))
_TIER_MEASURES = (Col("volume", "decimal"), Col("amount", "decimal"),
                  Col("segment_count", "int"), Col("provisional_count", "int"),
                  Col("min_volume", "decimal"), Col("max_volume", "decimal"))

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("validated_readings", "data.validated_readings_current", "ts", (
        Col("meter_id"), Col("register"), Col("ts", "ts"), Col("version", "int"),
        Col("value", "decimal"), Col("unit"), Col("quality"), Col("method"),
        Col("flags", "list"), Col("kind"), Col("consumption", "decimal"),
        Col("interval_start", "ts"), Col("original_value", "decimal"),
        Col("account_id"), Col("customer_type"), Col("region"), Col("org_unit"),
        Col("supply_node"), Col("tariff_id"), Col("medium"), Col("source")),
        analyst_relation="analyst.validated_readings", order_by="meter_id, register, ts"),
    Dataset("raw_readings", "data.raw_readings", "ts", (
        Col("meter_id"), Col("register"), Col("ts", "ts"), Col("value", "decimal"),
        Col("unit"), Col("kind"), Col("received_at", "ts"), Col("source"), Col("device_id"),
        Col("fep"), Col("protocol"), Col("status", "list"), Col("frame_id")),
        analyst_relation="data.raw_readings", order_by="meter_id, register, ts"),
    *(_aggregate(f"meter_consumption_{lvl}", _METER, _CONSUMPTION, True)
      for lvl in ("hourly", "daily", "monthly")),
    *(_aggregate(f"dimension_consumption_{lvl}", _DIMENSION, _CONSUMPTION, True)
      for lvl in ("hourly", "daily", "monthly")),
    *(_aggregate(f"tier_consumption_{lvl}", _TIER, _TIER_MEASURES, False)
      for lvl in ("hourly", "daily", "monthly")),
)}


@dataclass
class ExportReport:
    dataset: str
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    days: int = 0
    duration_s: float = 0.0


class _CopyStream(io.RawIOBase):
    """The bytes of a ``COPY … TO STDOUT`` as a readable file for Arrow's CSV reader."""

    def __init__(self, chunks: Iterator[bytes | bytearray | memoryview]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = bytes(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def export_parquet(database: DatabaseSettings, dataset: str, start: date, end: date,
                   out: Path, *, timezone: str, analyst: bool = False,
                   progress: Callable[[str], None] = lambda _m: None) -> ExportReport:
    """Export the local days ``start`` … ``end`` (inclusive) of ``dataset`` to ``out``.

    ``analyst=True`` exports only what the analyst role may see (no account ids), reading the
    analyst views as the analyst role; otherwise the export acts as the ``api`` role.
    """
    spec = DATASETS.get(dataset)
    if spec is None:
        raise SinkError(f"unknown data set '{dataset}'",
                        hint=f"choose one of: {', '.join(DATASETS)}")
    if end < start:
        raise SinkError(f"empty export window: {end} is before {start}")
    relation, columns = spec.relation, spec.columns
    if analyst:
        if spec.analyst_relation is None:
            raise SinkError(f"'{dataset}' has no analyst view (it is per account)",
                            hint="export it without --analyst, as an operator")
        relation = spec.analyst_relation
    report = ExportReport(dataset)
    started = time.monotonic()
    zone = ZoneInfo(timezone)
    role = "analyst" if analyst else "api"
    with psycopg.connect(database.conninfo(role), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        if analyst:
            available = {r[0] for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attnum > 0 AND NOT attisdropped", (relation,))}
            columns = tuple(c for c in columns if c.name in available)
        day = start
        while day <= end:
            lo = datetime(day.year, day.month, day.day, tzinfo=zone)
            hi = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
            rows = _export_day(conn, spec, relation, columns, lo, hi,
                               out / dataset / f"day={day.isoformat()}",
                               f"{dataset}-{day.isoformat()}.parquet")
            if rows:
                report.files.append(out / dataset / f"day={day.isoformat()}" /
                                    f"{dataset}-{day.isoformat()}.parquet")
                report.rows += rows
                progress(f"{dataset} {day}: {rows:,} rows")
            report.days += 1
            day += timedelta(days=1)
    report.duration_s = time.monotonic() - started
    return report


def _export_day(conn: psycopg.Connection, spec: Dataset, relation: str,
                columns: tuple[Col, ...], lo: datetime, hi: datetime, folder: Path,
                filename: str) -> int:
    select = ", ".join(c.select() for c in columns)
    order = f" ORDER BY {spec.order_by}" if spec.order_by else ""
    query = (f"COPY (SELECT {select} FROM {relation} WHERE \"{spec.time_column}\" >= "
             f"'{lo.isoformat()}'::timestamptz AND \"{spec.time_column}\" < "
             f"'{hi.isoformat()}'::timestamptz{order}) TO STDOUT (FORMAT CSV, HEADER false)")
    schema = spec.schema(columns)
    target = folder / filename
    temporary = folder / f".{filename}.partial"
    rows = 0
    writer: pq.ParquetWriter | None = None
    with conn.cursor() as cur, cur.copy(query) as copy:
        chunks = iter(copy)
        first = next(chunks, None)
        if first is None:  # nothing that day (Arrow refuses an empty CSV)
            for _ in chunks:
                pass
            target.unlink(missing_ok=True)  # an earlier export of a day that is empty now
            return 0
        reader = pa_csv.open_csv(
            pa.PythonFile(_CopyStream(itertools.chain([first], chunks)), mode="r"),
            read_options=pa_csv.ReadOptions(column_names=[c.name for c in columns],
                                            block_size=8 << 20),
            convert_options=pa_csv.ConvertOptions(
                column_types={c.name: c.csv_type() for c in columns},
                strings_can_be_null=True, quoted_strings_can_be_null=False,
                null_values=[""]))
        for batch in reader:
            table = pa.Table.from_batches([batch]).cast(schema)
            if writer is None:
                folder.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(temporary, schema, compression="zstd")
            writer.write_table(table)
            rows += table.num_rows
    if writer is None:
        target.unlink(missing_ok=True)
        return 0
    writer.close()
    os.replace(temporary, target)
    return rows
