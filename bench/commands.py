"""The command control plane against the database floor, measured in the same run.

Every submitted command is one transaction that reads the device's facts from the ledger,
applies the safety policy, encodes it with the protocol encoder, inserts it and appends two
records to the hash-chained audit log (requested, approved). Its baseline is the floor of a
durable command store: one transaction per command inserting one row of the same width into
an indexed table. A mass command is measured end to end — preview (policy and encoder for
every device), two approvals, one wave, dispatch into the outbox — against inserting the
same number of rows in one transaction. The audit append (row lock on the chain head, hash,
insert) is measured against a plain insert, one transaction each.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool

from bench._harness import BenchContext, BenchResult

DEMO = Path(__file__).parents[1] / "tests" / "data" / "ledger" / "demo"
CATALOG = ("manufacturers", "vee_groups", "device_types", "org_units", "locations",
           "supply_nodes", "service_points", "fep_assignments", "customers", "tariffs",
           "tariff_versions", "accounts")


def _meters(count: int) -> list[dict[str, object]]:
    return [{"meter_id": f"CM-{i:07d}", "device_type": "gc-g4-188", "status": "active",
             "address": f"{20250000000000 + i}", "parent_device_id": "COL-GE-B1",
             "point_no": i % 2040 + 1, "location_id": "NORTH-GE-B1-101", "medium": "gas",
             "account_id": "A0001"} for i in range(count)]


def _per_row_floor(conn: psycopg.Connection, count: int) -> float:
    conn.execute("CREATE TEMP TABLE floor_rows (id text PRIMARY KEY, device_id text, "
                 "command text, params jsonb, state text, at timestamptz)")
    started = time.perf_counter()
    for i in range(count):
        with conn.transaction():
            conn.execute("INSERT INTO floor_rows VALUES (%s, %s, 'read_now', %s, 'approved', "
                         "now())", (uuid.uuid4().hex, f"CM-{i:07d}", json.dumps({"what": "all"})))
    return count / (time.perf_counter() - started)


def _batch_floor(conn: psycopg.Connection, count: int) -> float:
    conn.execute("CREATE TEMP TABLE floor_batch (id text PRIMARY KEY, device_id text, "
                 "params jsonb)")
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("INSERT INTO floor_batch VALUES (%s, %s, %s)",
                        [(uuid.uuid4().hex, f"CM-{i:07d}", "{}") for i in range(count)])
    return count / (time.perf_counter() - started)


def bench_commands(ctx: BenchContext) -> list[BenchResult]:
    from devices import audit
    from devices.commands import groups
    from devices.commands.dispatch import CommandEngine
    from devices.commands.service import CommandService, make_request
    from devices.commands.settings import CommandSettings
    from devices.importer import bulk_load, import_files
    from unimeter.db.migrate import migrate

    config = ctx.config
    count = 300 if ctx.quick else 2000
    name = f"bench_commands_{uuid.uuid4().hex[:6]}"
    head = config.database.url.rpartition("/")[0]
    with psycopg.connect(f"{head}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    settings = config.database.model_copy(update={"url": f"{head}/{name}", "timescale": "off"})
    try:
        migrate(settings, config.utility)
        conninfo = settings.conninfo("api")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            import_files(conn, [DEMO / f"{k}.csv" for k in CATALOG]
                         + [DEMO / "devices.csv"], actor="bench")
            with conn.transaction():
                bulk_load(conn, "meters", _meters(count))
            floor_rate = _per_row_floor(conn, count)
            batch_rate = _batch_floor(conn, count)
        pool = ConnectionPool(conninfo, min_size=1, max_size=2, open=True)
        service = CommandService(pool, CommandSettings(
            wave_size=count, wave_interval_s=0, anomaly_max_commands=10 * count))
        ctx.progress(f"commands: submitting {count} commands one by one")
        with pool, psycopg.connect(conninfo) as conn:
            started = time.perf_counter()
            for i in range(count):
                service.submit(make_request(device_id=f"CM-{i:07d}", command="read_now",
                                            requested_by="bench", params={"what": "all"}))
            submit_rate = count / (time.perf_counter() - started)

            ctx.progress(f"commands: a mass valve close of {count} meters")
            started = time.perf_counter()
            group = groups.create_group(service, command="valve_close",
                                        params={"cause": "service"},
                                        selector=groups.Selector(location_id="NORTH-GE-B1-101"),
                                        requested_by="bench")
            for approver in ("ap-1", "ap-2"):
                groups.approve_group(service, group.group_id, approver, group.preview_hash)
            engine = CommandEngine(service)
            engine.sweep()
            while engine.dispatch_due():
                pass
            mass_rate = group.device_count / (time.perf_counter() - started)

            ctx.progress(f"commands: {count} audit appends")
            started = time.perf_counter()
            for i in range(count):
                with conn.transaction():
                    audit.append(conn, actor="bench", action="bench.append",
                                 object_type="bench", object_id=str(i), details={"i": i})
            audit_rate = count / (time.perf_counter() - started)
            conn.commit()
            conn.autocommit = True
            verified = audit.verify_chain(conn)
            assert verified.ok
    finally:
        with psycopg.connect(f"{head}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return [
        BenchResult("commands", f"submit {count} commands one by one (facts, policy, encoder, "
                    "insert, 2 audit records)", submit_rate, "commands/s",
                    "one-row insert per transaction", floor_rate,
                    target=">= 100 commands/s per process", passed=submit_rate >= 100),
        BenchResult("commands", f"mass command of {group.device_count} meters: preview, two "
                    "approvals, one wave, dispatch to the outbox", mass_rate, "devices/s",
                    "same rows inserted in one transaction", batch_rate,
                    target=">= 200 devices/s (10,000 meters in under a minute)",
                    passed=mass_rate >= 200),
        BenchResult("commands", f"audit append x{count} (chain head lock, SHA-256, insert)",
                    audit_rate, "records/s", "one-row insert per transaction", floor_rate,
                    target=">= 250 records/s", passed=audit_rate >= 250,
                    notes=f"each append alone: head lock, pipelined insert and head update, "
                          f"commit; commands and mass commands append in batches; "
                          f"verify_chain checked {verified.checked} records"),
    ]


BENCHMARKS = [bench_commands]
