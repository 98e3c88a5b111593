"""The fault run: a simulated fleet reports while FEP, pipeline, sink, PostgreSQL and Kafka are
killed and taken away, then the oracle judges what was stored.

Strategy: everything runs on *private* instances — a Kafka broker and a PostgreSQL server of
the run's own, in ``<out>/services`` on free ports — so a fault run never stops the shared
services other engineers use. The run

1. starts the private broker and database, migrates, creates the topics (prefix ``faults.``)
   and publishes the ledger (the fleet's meters with one postpaid account each and a step
   tariff per medium, :mod:`unimeter.faults.ledger`);
2. starts ``unimeter fep``, ``unimeter pipeline`` and ``unimeter sink`` under the
   :class:`~unimeter.supervisor.Supervisor` (restart always) with a configuration file that
   points them at the private services;
3. runs the simulator in this process (its own thread and event loop): DTU links with
   CJ/T 188 gas and water meters, every upload delivered 1–5 times and out of order — shuffled
   with the link's other uploads, and a share held back past the same meter's next reports,
   so VEE re-validates and billing re-prices with adjustments;
4. after a warm-up, injects the faults of the :class:`FaultRunSpec` in a seeded random order
   at random moments — ``kill -9`` of each process kind and of the broker and the database
   (each restarted), each process kind killed *again while it recovers* (1–15 s after the
   supervisor restarted it, ``recovery_kill_after_s``: starting, joining its group, restoring
   its state, seeking — where a worker's restart once lost input, see
   ``pipeline/_consumer.py``), the broker stopped for ``outage_s`` and the database stopped
   for ``outage_s`` — and measures, for each, when the component was back and when stored rows
   grew again;
5. stops the simulator once it has sent the wanted readings and every fault is done, waits
   until the stored rows stop changing, stops the processes and the services, and runs the
   oracle (:mod:`unimeter.faults.oracle`) on the simulator's log and the stored rows.

The report (:func:`run_faults` returns it; the CLI prints and writes it as JSON) holds the
spec, the machine, each fault with its timings, the processes' restarts and the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import random
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from schemas.settings import DatabaseSettings, KafkaSettings, UtilitySettings
from unimeter.config import Config
from unimeter.faults.ledger import FaultLedger, build_ledger
from unimeter.faults.oracle import Verdict
from unimeter.supervisor import HealthCheck, ProcessSpec, Supervisor

__all__ = ["FaultRecord", "FaultRunSpec", "run_faults"]

PROCESS_KINDS = ("fep", "pipeline", "sink")
SERVICE_KINDS = ("postgres", "kafka")
TOPIC_PREFIX = "faults."
#: The fault run's VEE rules: delivery checks only (see the file's comment for why).
VEE_RULES = Path(__file__).with_name("vee_rules.yaml")


@dataclass(frozen=True)
class FaultRunSpec:
    """What a fault run does. The defaults are the full run of ``make faults``."""

    readings: int = 100_000          # stop the fleet once it has sent this many readings
    gas_meters: int = 1400
    water_meters: int = 700
    meters_per_dtu: int = 8
    speed: float = 150.0             # simulated seconds per second (hourly reports: 1 per 24 s)
    copies: tuple[int, int] = (1, 5)  # every upload delivered this many times
    reorder: int = 8                 # uploads of a link shuffled together
    reorder_hold_s: float = 0.3
    late: float = 0.02               # share of uploads held back behind later ones ...
    late_after: int = 12             # ... until this many later uploads of the link went
    kills: tuple[str, ...] = (*PROCESS_KINDS, *SERVICE_KINDS)
    #: killed, then killed again while the restarted process recovers
    recovery_kills: tuple[str, ...] = PROCESS_KINDS
    recovery_kill_after_s: tuple[float, float] = (1.0, 15.0)
    outages: tuple[str, ...] = SERVICE_KINDS
    outage_s: float = 60.0
    warmup_s: float = 20.0
    gap_s: tuple[float, float] = (8.0, 20.0)  # random wait between faults
    drain_timeout_s: float = 1500.0
    settle_s: float = 20.0           # stored rows unchanged this long = drained
    #: After the last fault the fleet keeps reporting at least this long — longer than the
    #: simulator's acknowledgement timeout (10 s), so uploads the last fault left
    #: unacknowledged are sent again and acknowledged before the fleet stops.
    tail_s: float = 15.0
    seed: int = 20261127
    partitions: int = 4

    @classmethod
    def short(cls) -> FaultRunSpec:
        """The CI version: a small fleet, one kill of each kind, outages of a few seconds."""
        return cls(readings=1_000, gas_meters=32, water_meters=16, meters_per_dtu=4,
                   speed=360.0, late=0.05, outage_s=6.0, warmup_s=6.0, gap_s=(1.0, 3.0),
                   drain_timeout_s=120.0, settle_s=6.0, partitions=2)


@dataclass
class FaultRecord:
    """One injected fault: what, when (seconds since the fleet started), how it recovered."""

    kind: str                 # kill | kill-recovering | outage
    target: str               # fep | pipeline | sink | postgres | kafka
    at_s: float
    down_s: float = 0.0       # how long the target was kept away (outages)
    restored_s: float | None = None   # fault -> target healthy again
    flowing_s: float | None = None    # fault -> stored raw readings growing again
    validated_flowing_s: float | None = None
    detail: str = ""


@dataclass
class _Services:
    kafka: Any
    postgres: Any
    root: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_services(config: Config, root: Path, progress: Callable[[str], None]) -> _Services:
    """Private Kafka and PostgreSQL in ``root`` on free ports (the jars shared by link)."""
    from unimeter.services.kafka import LocalKafka
    from unimeter.services.postgres import LocalPostgres

    (root / "kafka").mkdir(parents=True, exist_ok=True)
    shared_lib = config.services.state_dir / "kafka" / "lib"
    if shared_lib.exists() and not (root / "kafka" / "lib").exists():
        os.symlink(shared_lib.resolve(), root / "kafka" / "lib")
    settings = config.services.model_copy(update={
        "state_dir": root, "kafka_port": _free_port(), "kafka_controller_port": _free_port(),
        "postgres_port": _free_port(), "mosquitto_port": _free_port(), "kafka_heap": "512m"})
    progress(f"private Kafka on :{settings.kafka_port}, PostgreSQL on :{settings.postgres_port}"
             f" (state {root})")
    kafka = LocalKafka(settings)
    kafka.start()
    postgres = LocalPostgres(settings)
    try:
        postgres.start()
    except BaseException:
        kafka.stop()
        raise
    return _Services(kafka=kafka, postgres=postgres, root=root)


def _stop_services(services: _Services) -> None:
    for service in (services.postgres, services.kafka):
        with contextlib.suppress(Exception):
            service.stop()


def _publish(kafka: KafkaSettings, ledger: FaultLedger) -> None:
    from kafka import KafkaProducer

    from schemas import codec
    from schemas.messages import LedgerAccount, LedgerMeter, LedgerTariff

    topics = {LedgerMeter: "ledger.meters", LedgerAccount: "ledger.accounts",
              LedgerTariff: "ledger.tariffs"}
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=20)
    try:
        for message in ledger.messages():
            producer.send(kafka.topic(topics[type(message)]),
                          codec.encode(message, producer="faults"), key=message.key())
        producer.flush(timeout=60)
    finally:
        producer.close()


class _StoredCounter:
    """Row counts of the private database (None while it is away)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def counts(self) -> tuple[int, int, int] | None:
        """Raw readings, validated versions, charges."""
        full = self.full_counts()
        return None if full is None else full[:3]

    def full_counts(self) -> tuple[int, int, int, int] | None:
        """Raw readings, validated versions, charges, validated keys (first versions)."""
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM data.raw_readings), "
                    "(SELECT count(*) FROM data.validated_readings), "
                    "(SELECT count(*) FROM billing.charges), "
                    "(SELECT count(*) FROM data.validated_readings WHERE version = 1)"
                ).fetchone()
        except psycopg.Error:
            return None
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])


class _SimulatorThread(threading.Thread):
    """The simulator's own event loop in a thread of this process."""

    def __init__(self, simulator: Any) -> None:
        super().__init__(name="simulator", daemon=True)
        self.simulator = simulator
        self.stopping = threading.Event()
        self.summary: dict[str, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the run
            self.error = exc

    async def _main(self) -> None:
        await self.simulator.start(kinds=("dtu",))
        # a threading.Event set by the run's thread: polled, since asyncio cannot wait on it
        while not self.stopping.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.25)
        self.summary = await self.simulator.stop()

    @property
    def readings_sent(self) -> int:
        return int(self.simulator.log.counts.get("reading", 0))


#: The source tree this run is imported from: its processes run the same code (they start in
#: the run directory, where ``python -m unimeter`` would otherwise import whatever checkout
#: the environment's editable install points at).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _process_specs(config_file: Path, run_dir: Path, fep_port: int) -> list[ProcessSpec]:
    path = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {"UNIMETER_CONFIG": str(config_file), "UNIMETER_SERVICES_STATE_DIR":
           str(run_dir / "services"), "PYTHONPATH": path}
    python = sys.executable
    common: dict[str, Any] = {"env": env, "restart": "always", "max_restarts": 100,
                              "restart_window_s": 600.0, "ready_timeout_s": 180.0,
                              "cwd": run_dir}
    return [
        ProcessSpec(name="sink", argv=(python, "-m", "unimeter", "sink", "--quiet"),
                    **common),
        ProcessSpec(name="pipeline", argv=(python, "-m", "unimeter", "pipeline",
                                           "--heartbeat-file", str(run_dir / "pipeline.alive")),
                    health=HealthCheck(heartbeat_file=run_dir / "pipeline.alive",
                                       heartbeat_max_age_s=60.0), **common),
        ProcessSpec(name="fep", argv=(python, "-m", "unimeter", "fep", "--registry", "memory",
                                      "--status-every", "10"),
                    health=HealthCheck(tcp_port=fep_port), **common),
    ]


def _write_config(path: Path, kafka: KafkaSettings, database_url: str, fep_port: int,
                  run_dir: Path, partitions: int) -> None:
    doc = {
        "kafka": {"bootstrap": kafka.bootstrap, "topic_prefix": kafka.topic_prefix,
                  "default_partitions": partitions},
        "database": {"url": database_url},
        "fep": {"instance": "fep-faults", "spool_dir": str(run_dir / "spool"),
                "registry": "memory", "kafka_ack_timeout_s": 5.0, "ledger_plans": False,
                "service_points": {"dtu-cjt188": {
                    "transport": "tcp", "protocol": "cjt188-2004", "link": "dtu",
                    "host": "127.0.0.1", "port": fep_port, "link_protocol": "dtu-text",
                    "max_connections_per_source": 10_000}}},
        "pipeline": {"data_dir": str(run_dir / "pipeline"), "ledger_wait_s": 60.0,
                     "vee_rules": str(VEE_RULES)},
        "sink": {"group_id": "faults-sink"},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "processor": platform.processor() or
            platform.machine()}


def run_faults(config: Config, spec: FaultRunSpec, out_dir: Path, *,
               progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the faults of ``spec`` (see the module docstring); returns the report."""
    from schemas.settings import load_settings
    from simulator.clock import SimClock
    from simulator.fleet import FleetSpec
    from simulator.log import read_log
    from simulator.runner import DeliverySettings, Simulator, SimulatorSettings
    from unimeter.db.migrate import migrate
    from unimeter.faults.oracle import judge
    from unimeter.faults.stored import read_stored_rows
    from unimeter.topics import create_topics

    rng = random.Random(spec.seed)
    run_dir = out_dir / datetime.now(UTC).strftime("run-%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # The services' state lives under the state directory, not the run directory: a
    # PostgreSQL socket path must stay under 107 bytes (pytest's tmp_path is longer).
    services = _start_services(
        config, config.services.state_dir.resolve() / "private"
        / f"faults-{run_dir.name[4:]}-{random.Random().randrange(16**4):04x}", progress)
    supervisor: Supervisor | None = None
    sim_thread: _SimulatorThread | None = None
    faults: list[FaultRecord] = []
    try:
        database_url = services.postgres.url()
        database = DatabaseSettings(url=database_url)
        utility = load_settings(UtilitySettings)
        report = migrate(database, utility)
        progress(f"migrated ({report.backend}, {len(report.applied)} migrations)")
        kafka = KafkaSettings(bootstrap=services.kafka.bootstrap, topic_prefix=TOPIC_PREFIX,
                              default_partitions=spec.partitions)
        create_topics(kafka)
        start = datetime(2026, 11, 1, tzinfo=UTC)
        fleet_spec = FleetSpec(seed=spec.seed, gas_dtu_meters=spec.gas_meters,
                               water_dtu_meters=spec.water_meters, electricity_dtu_meters=0,
                               electricity_meters=0, nbiot_meters=0, modbus_rtus=0,
                               meters_per_dtu=spec.meters_per_dtu)
        fep_port = _free_port()
        delivery = DeliverySettings(copies_min=spec.copies[0], copies_max=spec.copies[1],
                                    reorder=spec.reorder, reorder_hold_s=spec.reorder_hold_s,
                                    late=spec.late, late_after=spec.late_after)
        sim_settings = SimulatorSettings(dtu_port=fep_port, speed=spec.speed,
                                         ack_timeout_s=10.0, heartbeat_s=30.0,
                                         reconnect_delay_s=0.5, delivery=delivery)
        log_path = run_dir / "sim.jsonl"
        simulator = Simulator(sim_settings, spec=fleet_spec, clock=SimClock(start, spec.speed),
                              log_path=log_path, seed=spec.seed)
        ledger = build_ledger(simulator.fleet.ledger(), effective_from=start - timedelta(days=1))
        ledger.write(run_dir / "ledger.jsonl")
        _publish(kafka, ledger)
        progress(f"ledger: {len(ledger.meters):,} meters, {len(ledger.accounts):,} accounts, "
                 f"{len(ledger.tariffs)} tariffs")
        config_file = run_dir / "unimeter.yaml"
        _write_config(config_file, kafka, database_url, fep_port, run_dir, spec.partitions)
        supervisor = Supervisor(_process_specs(config_file, run_dir, fep_port),
                                log_dir=run_dir / "logs", progress=progress)
        supervisor.start()
        progress("fep, pipeline and sink running under supervision")
        counter = _StoredCounter(database_url)
        sim_thread = _SimulatorThread(simulator)
        sim_thread.start()
        fleet_started = time.monotonic()

        def since() -> float:
            return round(time.monotonic() - fleet_started, 1)

        plan = ([("kill", t) for t in spec.kills] + [("outage", t) for t in spec.outages]
                + [("kill-recovering", t) for t in spec.recovery_kills])
        rng.shuffle(plan)
        time.sleep(spec.warmup_s)
        for kind, target in plan:
            time.sleep(rng.uniform(*spec.gap_s))
            record = _inject(kind, target, spec, supervisor, services, counter, since, rng)
            faults.append(record)
            progress(f"[{record.at_s:7.1f}s] {kind} {target}: back after "
                     f"{record.restored_s}s, raw rows flowing after {record.flowing_s}s, "
                     f"validated after {record.validated_flowing_s}s; "
                     f"{sim_thread.readings_sent:,} readings sent")
        faults_done = time.monotonic()
        while (sim_thread.readings_sent < spec.readings
               or time.monotonic() - faults_done < spec.tail_s):
            if sim_thread.error is not None:
                raise sim_thread.error
            time.sleep(1.0)
        progress(f"[{since():7.1f}s] {sim_thread.readings_sent:,} readings sent: stopping the "
                 "fleet")
        sim_thread.stopping.set()
        sim_thread.join(timeout=60)
        sent_done = since()
        drained = _drain(counter, spec, progress)
        progress(f"[{since():7.1f}s] stored rows stable ({drained})")
        process_states = {p.spec.name: {"restarts": len(p.restarts), "state": p.state}
                          for p in supervisor.status()}
        supervisor.stop()
        supervisor = None
        log = read_log(log_path)
        rows = read_stored_rows(database_url, log.meters)
        verdict: Verdict = judge(log, rows, accounts=ledger.accounts,
                                 meter_accounts=ledger.meter_accounts, tariffs=ledger.tariffs,
                                 timezone=utility.timezone)
        return {
            "name": "faults", "kind": "full" if spec.readings >= 100_000 else "short",
            "finished_at": datetime.now(UTC).isoformat(), "machine": _machine(),
            "spec": asdict(spec), "run_dir": str(run_dir),
            "services_dir": str(services.root),
            "wall_s": round(time.monotonic() - started, 1), "fleet_s": sent_done,
            "simulator": {k: v for k, v in (sim_thread.summary or {}).items()
                          if isinstance(v, int | float | str)},
            "faults": [asdict(f) for f in faults], "processes": process_states,
            "drained": drained, "verdict": verdict,
        }
    finally:
        if sim_thread is not None and sim_thread.is_alive():
            sim_thread.stopping.set()
            sim_thread.join(timeout=30)
        if supervisor is not None:
            supervisor.stop()
        _stop_services(services)


def _inject(kind: str, target: str, spec: FaultRunSpec, supervisor: Supervisor,
            services: _Services, counter: _StoredCounter, since: Callable[[], float],
            rng: random.Random) -> FaultRecord:
    before = counter.counts() or (0, 0, 0)
    record = FaultRecord(kind=kind, target=target, at_s=since())
    t0 = time.monotonic()
    if target in PROCESS_KINDS:
        old_pid = supervisor.pid_of(target)
        _kill_process(supervisor, target)
        if kind == "kill-recovering":
            if supervisor.wait_restarted(target, old_pid, timeout=120.0):
                after = rng.uniform(*spec.recovery_kill_after_s)
                time.sleep(after)
                _kill_process(supervisor, target)
                record.detail = f"killed again {after:.1f} s after its restart"
            else:
                record.detail = "not restarted within 120 s: no second kill"
        time.sleep(1.0)  # let the monitor see the death before asking for health
    else:
        service = services.kafka if target == "kafka" else services.postgres
        if kind == "kill":
            service.kill()
            record.detail = "SIGKILL, restarted at once"
        else:
            service.stop()
            record.down_s = spec.outage_s
            record.detail = f"stopped for {spec.outage_s:g} s"
            time.sleep(spec.outage_s)
        for attempt in range(3):  # a start that fails under load is tried again
            try:
                service.start()
                break
            except Exception as exc:
                record.detail += f"; start {attempt + 1} failed: {exc}"
                time.sleep(2.0)
        record.restored_s = round(time.monotonic() - t0, 1)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (record.flowing_s is None
                                           or record.validated_flowing_s is None
                                           or record.restored_s is None):
        if record.restored_s is None and supervisor.wait_healthy(target, timeout=0.2):
            record.restored_s = round(time.monotonic() - t0, 1)
        now = counter.counts()
        if now is not None:
            if record.flowing_s is None and now[0] > before[0]:
                record.flowing_s = round(time.monotonic() - t0, 1)
            if record.validated_flowing_s is None and now[1] > before[1]:
                record.validated_flowing_s = round(time.monotonic() - t0, 1)
        time.sleep(0.5)
    return record


def _kill_process(supervisor: Supervisor, target: str) -> None:
    supervisor.kill(target)
    if target == "pipeline":  # "back" = the new worker's own heartbeat, not the old one
        with contextlib.suppress(FileNotFoundError):
            (supervisor.log_dir.parent / "pipeline.alive").unlink()


def _drain(counter: _StoredCounter, spec: FaultRunSpec, progress: Callable[[str], None]
           ) -> dict[str, Any]:
    """Wait until every raw reading has a validated version and the stored row counts have
    stopped changing for ``settle_s`` (everything in flight is stored)."""
    deadline = time.monotonic() + spec.drain_timeout_s
    last: tuple[int, int, int, int] | None = None
    stable_since = time.monotonic()
    waited = time.monotonic()
    shown = 0.0
    while time.monotonic() < deadline:
        now = counter.full_counts()
        if now != last:
            last, stable_since = now, time.monotonic()
            if now is not None and time.monotonic() - shown >= 10:
                shown = time.monotonic()
                progress(f"    stored: {now[0]:,} raw, {now[3]:,} validated keys "
                         f"({now[1]:,} versions), {now[2]:,} charges")
        elif (now is not None and now[3] >= now[0]
              and time.monotonic() - stable_since >= spec.settle_s):
            return {"raw": now[0], "validated": now[1], "validated_keys": now[3],
                    "charges": now[2], "waited_s": round(time.monotonic() - waited, 1)}
        time.sleep(2.0)
    return {"timeout": True, "last": last, "waited_s": round(time.monotonic() - waited, 1)}


def remove_run_dir(report: dict[str, Any]) -> None:
    """Delete a passed run's state (logs and data of the private services)."""
    shutil.rmtree(Path(report["services_dir"]), ignore_errors=True)
