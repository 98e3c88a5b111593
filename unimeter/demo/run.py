"""Run the demo: services, schema, topics, the fleet's ledger, the processes, the fleet, the
summary and the report.

Strategy: the demo is an operator's day compressed. It starts (or finds) the local services,
migrates, creates the topics, writes the simulated fleet as ledger import files and imports
them with ``unimeter ledger import`` (exactly what an operator would run), publishes the
ledger and the prepaid accounts' opening payments, then starts every platform process under
the supervisor (:mod:`unimeter.supervisor`), each a real ``unimeter`` command. The simulator
runs in this process on an accelerated clock, showing progress; at the end it stops
reporting and waits until every upload is acknowledged. The demo then waits until the
pipeline, sink, billing and control plane have gone quiet (every count unchanged for a
while), refreshes the aggregates, reads the summary from the database, writes the report
and stops the processes (or leaves them running with ``keep_running``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import yaml

from schemas.settings import config_file_path
from simulator.fleet import Fleet, FleetSpec
from unimeter.config import Config
from unimeter.demo import DEFAULT_FAULTS
from unimeter.demo.ledger import opening_top_ups, plan_ledger, write_ledger
from unimeter.demo.plan import DemoLayout, demo_config, demo_processes, write_config
from unimeter.demo.report import ReportFiles, write_report
from unimeter.demo.summary import DemoSummary, collect_summary, render
from unimeter.errors import UnimeterError
from unimeter.supervisor import Supervisor

__all__ = ["DemoOptions", "DemoResult", "run_demo"]


Echo = Callable[[str], None]


class DemoError(UnimeterError):
    """A step of the demo failed."""


@dataclass(frozen=True)
class DemoOptions:
    meters: int = 5000
    days: float = 3.0
    #: real seconds the simulated days take (sets the speed unless ``speed`` is given)
    sim_seconds: float = 240.0
    speed: float | None = None
    run_dir: Path | None = None
    keep_running: bool = False
    seed: int = 20260701
    api_port: int | None = None
    #: simulated hours between reports of DTU meters and polls of concentrators and RTUs
    report_hours: float = 12.0
    quiet_s: float = 15.0  # counts unchanged this long = drained
    drain_timeout_s: float = 900.0
    ack_timeout_s: float = 90.0
    faults: str = DEFAULT_FAULTS

    @property
    def effective_speed(self) -> float:
        return self.speed or max(1.0, self.days * 86400 / self.sim_seconds)


@dataclass
class DemoResult:
    layout: DemoLayout
    summary: DemoSummary
    report: ReportFiles
    simulator: dict[str, Any]
    supervisor: Supervisor | None  # still running when ``keep_running``


def _run(argv: list[str], env: dict[str, str], echo: Echo, what: str) -> None:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    for line in (proc.stdout + proc.stderr).strip().splitlines()[-12:]:
        echo(f"    {line}")
    if proc.returncode != 0:
        raise DemoError(f"{what} failed with status {proc.returncode}",
                        hint="the lines above say why")


def _merged_config(document: dict[str, Any]) -> dict[str, Any]:
    """The user's own ``$UNIMETER_CONFIG`` (if any) with the demo's sections over it."""
    base: dict[str, Any] = {}
    path = config_file_path()
    if path is not None and path.exists():
        base = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for section, values in document.items():
        merged = dict(base.get(section) or {})
        merged.update(values)
        base[section] = merged
    return base


async def _counts(conn: psycopg.AsyncConnection[Any], until: datetime) -> tuple[int, ...]:
    """What the platform made of the fleet's data up to ``until`` (the end of the fleet's
    reports). Concentrators and RTUs keep being polled while the demo waits, and DL/T 645
    answers are stamped on reception, so their new readings (and what follows from them) are
    left out of the comparison; events and commands count as they are.

    Readings and charges count by key, not by version: a reading polled after ``until``
    re-validates its neighbours (the day rules look at the whole day), and the new versions
    of those older readings — and the charge differences billing posts for them — would
    otherwise keep the counts moving for as long as the polls go on."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM data.raw_readings WHERE received_at <= %(t)s), "
        "(SELECT count(DISTINCT (meter_id, register, ts)) FROM data.validated_readings "
        " WHERE received_at <= %(t)s), "
        "(SELECT count(DISTINCT (meter_id, register, reading_ts)) FROM billing.charges "
        " WHERE period_end <= %(t)s), "
        "(SELECT count(DISTINCT account_id) FROM billing.balance_changes WHERE ts <= %(t)s), "
        "(SELECT count(*) FROM ops.alerts WHERE ts <= %(t)s), "
        "(SELECT count(*) FROM ops.commands), (SELECT count(*) FROM ops.commands WHERE state "
        "IN ('confirmed', 'failed', 'expired', 'cancelled', 'rejected')), "
        "(SELECT count(*) FROM data.device_events WHERE ts <= %(t)s)", {"t": until})
    return tuple(await cur.fetchone() or ())


async def _publish_top_ups(config: Config, top_ups: list[tuple[str, Decimal]],
                           ts: datetime) -> None:
    from aiokafka import AIOKafkaProducer

    from schemas import codec
    from schemas.messages import TopUp

    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=20)
    await producer.start()
    try:
        topic = config.kafka.topic("billing.topups")
        futures = []
        for account_id, amount in top_ups:
            msg = TopUp(top_up_id=f"demo-opening-{account_id}", account_id=account_id,
                        amount=amount, ts=ts, channel="demo", reason="opening payment")
            futures.append(await producer.send(topic, codec.encode(msg, producer="demo"),
                                               key=msg.key()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def run_demo(config: Config, options: DemoOptions, *, echo: Echo = print,
             start_services: bool = True) -> DemoResult:
    from aggregates.refresh import refresh_aggregates
    from unimeter.db.migrate import migrate
    from unimeter.topics import create_topics

    started = time.monotonic()
    steps = 8
    overrides: dict[str, str] = {}  # settings every process of the run gets in its environment
    run_name = f"{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:4]}"
    layout = DemoLayout.create(options.run_dir or config.services.state_dir / "demo" / run_name,
                               api_port=options.api_port)
    echo(f"unimeter demo: {options.meters:,} meters, {options.days:g} simulated day(s) at "
         f"{options.effective_speed:,.0f}x; run directory {layout.run_dir}")
    if start_services:
        from unimeter.services import services_up

        echo(f"1/{steps} local services")
        services_up(config, progress=lambda m: echo(f"    {m}"))
        config, overrides = _demo_namespace(config, echo)
    else:
        echo(f"1/{steps} services: using those configured (not starting any)")
    echo(f"2/{steps} database schema and Kafka topics")
    report = migrate(config.database, config.utility)
    topics = create_topics(config.kafka)
    echo(f"    {report.backend}: {len(report.applied)} migration(s) applied, "
         f"{len(report.already)} in place; {len(topics.created)} topic(s) created, "
         f"{len(topics.existing)} existed (prefix '{config.kafka.topic_prefix}')")

    # -- the fleet and its ledger
    start = _simulation_start(options.days, config.utility.timezone)
    spec = FleetSpec(seed=options.seed).scaled(options.meters)
    fleet = Fleet(spec, start, timezone=config.utility.timezone)
    plan = plan_ledger(fleet, seed=options.seed)
    echo(f"3/{steps} the fleet's ledger: {len(fleet.meters):,} meters on "
         f"{len(fleet.links):,} links; customers "
         + ", ".join(f"{k} {v:,}" for k, v in sorted(plan.customer_types().items()))
         + f"; {len(plan.prepaid()):,} prepaid accounts")
    write_ledger(fleet, plan, layout.ledger_dir)
    speed = options.effective_speed
    # DTU and electricity meters report every ``report_hours`` simulated hours, NB-IoT
    # meters daily; concentrators and RTUs are polled as often (real seconds: at least 10)
    report_every_s = options.report_hours * 3600
    poll_every_s = max(10.0, report_every_s / speed)
    document = _merged_config(demo_config(fleet, layout, run_name=run_name, speed=speed,
                                          poll_every_s=poll_every_s,
                                          report_every_s=report_every_s))
    write_config(document, layout)
    env = {**os.environ, "UNIMETER_CONFIG": str(layout.config_file), **overrides}
    python = [sys.executable, "-m", "unimeter"]
    _run([*python, "ledger", "import", str(layout.ledger_dir), "--actor", "demo"], env, echo,
         "ledger import")
    _run([*python, "ledger", "publish", "--once"], env, echo, "ledger publish")
    top_ups = opening_top_ups(plan)
    asyncio.run(_publish_top_ups(config, top_ups, start - timedelta(hours=1)))
    echo(f"    {len(top_ups):,} opening payments ({sum(a for _i, a in top_ups):,.0f} CNY) "
         f"published to {config.kafka.topic('billing.topups')}")

    # -- the platform's processes
    echo(f"4/{steps} platform processes under the supervisor (logs in {layout.log_dir})")
    sup = Supervisor(demo_processes(layout, {"UNIMETER_CONFIG": str(layout.config_file),
                                             **overrides}),
                     log_dir=layout.log_dir, progress=lambda m: echo(f"    {m}"))
    stopped = False
    try:
        sup.start()
        echo(f"5/{steps} the simulated fleet ({options.days:g} day(s) from "
             f"{start:%Y-%m-%d %H:%M} UTC at {speed:,.0f}x, ~{options.days * 86400 / speed:.0f} s)")
        sim_summary = asyncio.run(_simulate(config, fleet, document, layout, options, speed,
                                            echo, drain_step=f"6/{steps}"))
        if not options.keep_running:
            # nothing changes the database any more: the summary equals what stays there
            echo("    stopping the processes")
            sup.stop()
            stopped = True
        echo(f"7/{steps} aggregates")
        refreshed = refresh_aggregates(config.database)
        echo(f"    refreshed {len(refreshed.levels)} relation(s) on {refreshed.backend} in "
             f"{refreshed.duration_s:.1f} s")
        echo(f"8/{steps} summary and report")
        from simulator.log import read_log

        log = read_log(layout.simulator_log)
        with psycopg.connect(config.database.conninfo("owner"), autocommit=True) as conn:
            summary = collect_summary(conn, log, zone=config.utility.timezone)
        psql = _psql_line(config)
        text = render(summary, psql=psql, api_url=layout.api_url,
                      report=str(layout.report_dir / "index.html"))
        files = write_report(summary.days, layout.report_dir,
                             title=f"unimeter demo {run_name}: {len(fleet.meters):,} meters, "
                                   f"{options.days:g} day(s)", summary_text=text)
        (layout.run_dir / "summary.txt").write_text(text + "\n", encoding="utf-8")
        (layout.run_dir / "summary.json").write_text(
            json.dumps(_jsonable(asdict(summary)), default=str, indent=1), encoding="utf-8")
        echo("")
        echo(text)
        echo("")
        echo(f"demo finished in {time.monotonic() - started:.0f} s; processes "
             + ("keep running (Ctrl-C stops them)" if options.keep_running else "stopped"))
        return DemoResult(layout=layout, summary=summary, report=files,
                          simulator=sim_summary,
                          supervisor=None if stopped else sup)
    except BaseException:
        if not stopped:
            sup.stop()
        raise


#: the demo's own database on the local PostgreSQL, and the suffix of its topic prefix
DEMO_DATABASE = "unimeter_demo"
DEMO_TOPIC_SUFFIX = "demo."
_held_locks: list[Any] = []  # the lock stays held until the process exits


def _demo_namespace(config: Config, echo: Echo) -> tuple[Config, dict[str, str]]:
    """Give the run a clean database and topics of its own on the local services.

    A demo started again on the same services would otherwise meet the last run's data: the
    new pipeline (a new application id) reads the old ``readings.raw`` from the start, the
    database holds the old rows (a run the same day replays the same meters and times), and
    the summary counts both. So the demo works in database ``unimeter_demo`` and under topic
    prefix ``<prefix>demo.``, both emptied at the start of each run; the platform's own
    database and topics are never touched. One demo at a time per state directory (a lock
    held until the demo exits); services given from outside are used as they are."""
    import fcntl

    lock_path = config.services.state_dir / "demo" / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UnimeterError("another `unimeter demo` is running on these services",
                            where=str(lock_path),
                            hint="wait until it ends (or stop it with Ctrl-C), or give this "
                                 "one its own services: --no-services with UNIMETER_DATABASE_URL"
                                 " and UNIMETER_KAFKA_TOPIC_PREFIX") from None
    _held_locks.append(handle)
    overrides: dict[str, str] = {}
    database, kafka = config.database, config.kafka
    notes = []
    if "postgres" not in config.external:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(config.database.url)
        admin_url = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
        url = urlunsplit(parts._replace(path=f"/{DEMO_DATABASE}"))
        database = database.model_copy(update={"url": url})
        overrides["UNIMETER_DATABASE_URL"] = url
        notes.append(f"database {DEMO_DATABASE} (new)")
    if "kafka" not in config.external:
        from unimeter.topics import delete_topics_with_prefix

        prefix = f"{config.kafka.topic_prefix}{DEMO_TOPIC_SUFFIX}"
        old = delete_topics_with_prefix(config.kafka, prefix)
        kafka = kafka.model_copy(update={"topic_prefix": prefix})
        overrides["UNIMETER_KAFKA_TOPIC_PREFIX"] = prefix
        notes.append(f"topics '{prefix}*'" + (f" ({len(old)} of the last run deleted)"
                                              if old else ""))
    if notes:
        echo(f"    this run's own {' and '.join(notes)}; the platform's are not touched")
    return replace(config, database=database, kafka=kafka), overrides


def _simulation_start(days: float, zone: str) -> datetime:
    """Whole days start at the utility's local midnight and end before now (every day of the
    report is complete); otherwise ``days`` before now, on the hour."""
    from zoneinfo import ZoneInfo

    now = datetime.now(UTC)
    if days == int(days):
        today = now.astimezone(ZoneInfo(zone)).date()
        first = today - timedelta(days=int(days))
        return datetime(first.year, first.month, first.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    return (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)


def _psql_line(config: Config) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(config.database.url)
    where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
    hint = ""
    if "postgres" not in config.external:
        hint = (f"  (password in {config.services.state_dir / 'postgres' / 'superuser.password'};"
                " or SET ROLE unimeter_analyst for the analyst's view)")
    return f"psql 'postgresql://{parts.username}@{where}'{hint}"


async def _simulate(config: Config, fleet: Fleet, document: dict[str, Any],
                    layout: DemoLayout, options: DemoOptions, speed: float,
                    echo: Echo, *, drain_step: str) -> dict[str, Any]:
    from simulator.clock import shared_clock
    from simulator.runner import Simulator, SimulatorSettings

    settings = SimulatorSettings(**document["simulator"])
    mqtt = config.mqtt.model_copy(update={"topic_root": document["mqtt"]["topic_root"]})
    total = options.days * 86400
    # One time line for the fleet and the FEP: it starts a moment from now and slows to
    # real speed where the simulated days end, so no meter clock runs ahead into the real
    # future while the platform catches up.
    clock = shared_clock(layout.clock_file, fleet.start, speed,
                         until=fleet.start + timedelta(seconds=total))
    await asyncio.sleep(clock.starts_in())
    sim = Simulator(settings, spec=fleet.spec, clock=clock, mqtt=mqtt,
                    log_path=layout.simulator_log, seed=options.seed, faults=options.faults)
    await sim.start()
    conn = await psycopg.AsyncConnection.connect(config.database.conninfo("owner"),
                                                 autocommit=True)
    try:
        last = 0.0
        while True:
            await asyncio.sleep(1.0)
            elapsed = sim.clock.elapsed().total_seconds()
            if time.monotonic() - last >= 5 or elapsed >= total:
                last = time.monotonic()
                await _progress(sim, conn, elapsed, total, echo)
            if elapsed >= total:
                break
        sim.stop_reporting()
        reports_end = sim.clock.now()  # the clock runs at real speed from here on
        deadline = time.monotonic() + options.ack_timeout_s
        while sim.summary()["unacked"] and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(1.0)  # the simulator has no event for "all acknowledged"
        unacked = sim.summary()["unacked"]
        echo(f"    fleet stopped reporting; {unacked:,} upload(s) left unacknowledged")
        # the devices stay connected while the platform catches up: valve commands billing
        # decides now still reach their meters
        echo(f"{drain_step} waiting for the pipeline, sink, billing and commands to drain "
             "(the fleet stays connected for commands)")
        await _drain(conn, options, echo, until=reports_end)
    finally:
        await conn.close()
        summary = await sim.stop()
    return summary


async def _progress(sim: Any, conn: psycopg.AsyncConnection[Any], elapsed: float,
                    total: float, echo: Echo) -> None:
    s = sim.summary()
    cur = await conn.execute("SELECT (SELECT count(*) FROM data.raw_readings), "
                             "(SELECT count(*) FROM data.validated_readings), "
                             "(SELECT count(*) FROM billing.charges)")
    raw, validated, charges = await cur.fetchone() or (0, 0, 0)
    echo(f"    day {elapsed / 86400:4.2f}/{total / 86400:g}  sim {s['sim_now'][:16]}  "
         f"frames sent {s.get('frames_sent', 0):,} acked {s.get('acked_frames', 0):,} "
         f"polled {s.get('requests_answered', 0):,} | stored raw {raw:,} validated "
         f"{validated:,} charges {charges:,}")


async def _drain(conn: psycopg.AsyncConnection[Any], options: DemoOptions,
                 echo: Echo, *, until: datetime) -> None:
    """Until every count stayed unchanged for ``quiet_s`` (or ``drain_timeout_s`` passed)."""
    deadline = time.monotonic() + options.drain_timeout_s
    previous = await _counts(conn, until)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(2.5)
        now = await _counts(conn, until)
        if now != previous:
            previous, quiet_since = now, time.monotonic()
            echo(f"    raw {now[0]:,} validated {now[1]:,} charges {now[2]:,} "
                 f"alerts {now[4]:,} commands {now[5]:,} ({now[6]:,} finished)")
        elif time.monotonic() - quiet_since >= options.quiet_s:
            return
    echo(f"    still changing after {options.drain_timeout_s:.0f} s; summarising anyway")


def _jsonable(value: Any) -> Any:
    """``asdict`` output with tuple keys joined (``('valve_close', 'confirmed')`` ->
    ``'valve_close confirmed'``) so it can be written as JSON."""
    if isinstance(value, dict):
        return {(" ".join(map(str, k)) if isinstance(k, tuple) else k): _jsonable(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
