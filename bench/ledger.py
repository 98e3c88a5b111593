"""Ledger bulk loading against raw binary COPY, measured in the same run.

``devices.importer.bulk_load`` stages with binary COPY and merges into the ledger, where the
triggers keep network paths, lifecycle stamps, history and the outbox. The baseline is a raw
binary COPY of the very same rows into a table of the same columns without constraints,
indexes or triggers — the floor any loader pays. Also measured: re-loading the same fleet
(idempotent, nothing changes) and the file import path (CSV parsed and validated row by row).
"""

from __future__ import annotations

import asyncio
import csv
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from bench._harness import BenchContext, BenchResult

DEMO = Path(__file__).parents[1] / "tests" / "data" / "ledger" / "demo"
CATALOG = ("manufacturers", "vee_groups", "device_types", "org_units", "locations",
           "supply_nodes", "service_points", "fep_assignments", "customers", "tariffs",
           "tariff_versions", "accounts")


def _fleet(count: int) -> list[dict[str, Any]]:
    """``count`` meters behind the demo concentrators' collectors, bound to demo accounts."""
    parents = ("COL-GE-B1", "COL-GE-B2", "CON-RV-01")
    accounts = ("A0001", "A0002", "A0004", "A0007")
    installed = datetime(2024, 1, 1, tzinfo=UTC)
    return [{
        "meter_id": f"BM-{i:07d}", "device_type": "gc-g4-188", "serial_no": f"S{i:09d}",
        "address": f"{20250000000000 + i}", "status": "active",
        "parent_device_id": parents[i % 3], "point_no": i % 2040 + 1,
        "location_id": "NORTH-GE-B1-101", "installed_at": installed, "medium": "gas",
        "size": "G4", "register_digits": 5, "register_decimals": 3, "unit": "m3",
        "account_id": accounts[i % 4], "supply_node_id": "PIPE-GE-1",
        "initial_reading": Decimal("0"),
    } for i in range(count)]


_PG_TYPES = {"point_no": "int4", "installed_at": "timestamptz", "register_digits": "int4",
             "register_decimals": "int4", "initial_reading": "numeric"}


def _raw_copy(conn: psycopg.Connection, rows: list[dict[str, Any]]) -> float:
    columns = list(rows[0])
    types = [_PG_TYPES.get(c, "text") for c in columns]
    conn.execute("CREATE TEMP TABLE raw_fleet (" + ", ".join(
        f"{c} {t}" for c, t in zip(columns, types, strict=True)) + ")")
    started = time.perf_counter()
    with conn.transaction(), conn.cursor().copy(
            f"COPY raw_fleet ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row([row[c] for c in columns])
    elapsed = time.perf_counter() - started
    conn.execute("DROP TABLE raw_fleet")
    return elapsed


def bench_bulk_load(ctx: BenchContext) -> list[BenchResult]:
    from devices.importer import bulk_load, import_files
    from unimeter.db.migrate import migrate

    config = ctx.config
    count = 1000 if ctx.quick else 5000
    name = f"bench_ledger_{uuid.uuid4().hex[:6]}"
    head = config.database.url.rpartition("/")[0]
    with psycopg.connect(f"{head}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    settings = config.database.model_copy(update={"url": f"{head}/{name}", "timescale": "off"})
    try:
        migrate(settings, config.utility)
        fleet = _fleet(count)
        with psycopg.connect(settings.conninfo("api"), autocommit=True) as conn:
            import_files(conn, [DEMO / f"{k}.csv" for k in CATALOG]
                         + [DEMO / "devices.csv"], actor="bench")
            ctx.progress(f"ledger: raw COPY of {count} meters")
            raw_s = min(_raw_copy(conn, fleet) for _ in range(3))
            ctx.progress(f"ledger: bulk_load of {count} meters")
            started = time.perf_counter()
            with conn.transaction():
                first = bulk_load(conn, "meters", fleet)
            load_s = time.perf_counter() - started
            assert first.inserted == count
            started = time.perf_counter()
            with conn.transaction():
                again = bulk_load(conn, "meters", fleet)
            reload_s = time.perf_counter() - started
            assert again.unchanged == count
            # The file path: the same fleet as a CSV, parsed and validated, then re-imported.
            path = ctx.scratch / "meters.csv"
            with path.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(fleet[0])
                for row in fleet:
                    writer.writerow([v.isoformat() if isinstance(v, datetime) else v
                                     for v in row.values()])
            started = time.perf_counter()
            report = import_files(conn, [path], actor="bench")
            file_s = time.perf_counter() - started
            ctx.progress(f"ledger: publishing {count} meters from the outbox")
            publish_s, published = asyncio.run(_publish(settings, config.kafka))
            started = time.perf_counter()
            rows = conn.execute("SELECT * FROM ledger.meter_dimensions").fetchall()
            select_s = time.perf_counter() - started
    finally:
        with psycopg.connect(f"{head}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    raw_rate, load_rate = count / raw_s, count / load_s
    return [
        BenchResult("ledger", f"bulk_load {count} meters (devices + meters, triggers, history, "
                    "outbox)", load_rate, "meters/s", "raw binary COPY, no constraints",
                    raw_rate, target=">= 1,000 meters/s (the 5,000-meter demo fleet in < 5 s)",
                    passed=load_rate >= 1000,
                    notes="each row also keeps network paths, lifecycle stamps, history and "
                          "the outbox; the baseline does none of that",
                    extra={"seconds": round(load_s, 3), "raw_seconds": round(raw_s, 4)}),
        BenchResult("ledger", f"bulk_load re-load of {count} unchanged meters",
                    count / reload_s, "meters/s", "raw binary COPY, no constraints", raw_rate,
                    target=">= 10,000 meters/s", passed=count / reload_s >= 10000,
                    extra={"seconds": round(reload_s, 3)}),
        BenchResult("ledger", f"import_files CSV of {count} meters (validated, unchanged)",
                    count / file_s, "meters/s", "raw binary COPY, no constraints", raw_rate,
                    target=">= 1,000 meters/s", passed=count / file_s >= 1000,
                    notes=f"{report.counts['meters'].unchanged} unchanged",
                    extra={"seconds": round(file_s, 3)}),
        BenchResult("ledger", f"outbox publish of {count} new meters (expand, build "
                    "LedgerMeter, encode; no broker)", published / publish_s, "messages/s",
                    "one SELECT of every row of ledger.meter_dimensions",
                    len(rows) / select_s, target=">= 1,000 messages/s",
                    passed=published / publish_s >= 1000,
                    extra={"seconds": round(publish_s, 3), "messages": published}),
    ]


async def _publish(settings: Any, kafka: Any) -> tuple[float, int]:
    from devices.outbox import OutboxPublisher

    async def send(topic: str, key: bytes, value: bytes | None) -> None:
        return None

    async with OutboxPublisher(settings, kafka, send=send) as publisher:
        started = time.perf_counter()
        total = await publisher.drain(timeout_s=600)
        return time.perf_counter() - started, total.messages


BENCHMARKS = [bench_bulk_load]
