"""``unimeter simulate``: a fleet of simulated meters speaking the real protocols to the FEPs.

CJ/T 188 gas and water meters behind DTUs connect to the FEP's DTU service point, NB-IoT gas
meters publish through MQTT; they report on a simulated clock (``--speed`` simulated seconds
per real second), answer commands, and inject faults on demand (``--faults`` rates, or the
``--control-port``). Everything sent and acknowledged goes to the log (``--log``), the input of
the fault-test oracle (format: ``simulator/log.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from unimeter.config import load_config


@click.command(name="simulate")
@click.option("--meters", type=int, default=10_000, show_default=True,
              help="Fleet size (the default mix scaled to it).")
@click.option("--speed", type=float, default=None,
              help="Simulated seconds per real second (default: simulator.speed, 1).")
@click.option("--days", type=float, default=None, help="Stop after this many simulated days.")
@click.option("--duration", type=float, default=None, help="Stop after this many real seconds.")
@click.option("--start", "start_text", default=None,
              help="Simulated start (ISO 8601 with zone; default: now).")
@click.option("--kinds", default="dtu,nbiot,concentrator,modbus", show_default=True,
              help="Which links to run: dtu, nbiot, concentrator, modbus (comma-separated).")
@click.option("--faults", default="", help="Fault rates, e.g. 'spike=0.001,disconnect=0.0005' "
                                           "(kinds: missing spike rollback rollover clock_drift "
                                           "duplicate garbage corrupt disconnect).")
@click.option("--delivery", default="",
              help="Deliver DTU uploads several times and out of order, e.g. "
                   "'copies=1-5,reorder=8,hold=0.5' (fault tests).")
@click.option("--log", "log_path", type=click.Path(path_type=Path), default=None,
              help="Sent/acknowledged log (JSON Lines; default .unimeter/simulator/<run>.jsonl).")
@click.option("--log-frames", is_flag=True, help="Keep every frame's hex in the log.")
@click.option("--burst", is_flag=True, help="Ignore the schedule: keep every link busy "
                                            "(throughput tests).")
@click.option("--control-port", type=int, default=None,
              help="Accept 'inject KIND TARGET [COUNT]' / 'rate KIND VALUE' / 'stats' lines.")
@click.option("--fep-host", default=None, help="Host of the FEP (default simulator.fep_host).")
@click.option("--dtu-port", type=int, default=None, help="Port of the DTU service point.")
@click.option("--publish-ledger", is_flag=True,
              help="Publish the fleet's meters to ledger.meters first (no control plane); "
                   "with --duration 0, only that.")
@click.option("--export-fleet", type=click.Path(path_type=Path), default=None,
              help="Write the fleet as a ledger import CSV and exit.")
@click.option("--nbiot-protocol", default="cjt188-2004", show_default=True,
              help="What the NB-IoT meters speak: cjt188-2004, or a JSON map such as "
                   "nbiot-json:nbiot-gas (set the FEP's MQTT service point to the same).")
@click.option("--nbiot-pack", type=click.IntRange(0, 1000), default=None,
              help="NB-IoT JSON meters upload their last N hourly registers in each report "
                   "(the map's series; default simulator.nbiot_pack, 0 = off). With --burst "
                   "they upload their backlog since --start, N hours a message.")
@click.option("--clock-file", type=click.Path(path_type=Path), default=None,
              help="Write the fleet's simulated time line here as it starts; give the FEP the "
                   "same path (fep.clock_file) and it stamps reception in simulated time, so "
                   "an accelerated fleet's clocks and untimed readings agree with the "
                   "platform's. Never for a real fleet.")
@click.option("--seed", type=int, default=20260701, show_default=True)
def command(meters: int, speed: float | None, days: float | None, duration: float | None,
            start_text: str | None, kinds: str, faults: str, delivery: str, log_path: Path | None,
            log_frames: bool, burst: bool, control_port: int | None, fep_host: str | None,
            dtu_port: int | None, publish_ledger: bool, export_fleet: Path | None,
            nbiot_protocol: str, nbiot_pack: int | None, clock_file: Path | None,
            seed: int) -> None:
    """Run a simulated meter fleet against the FEPs."""
    from schemas.settings import load_settings
    from simulator.clock import SimClock
    from simulator.fleet import Fleet, FleetSpec
    from simulator.runner import Simulator, SimulatorSettings

    config = load_config()
    overrides: dict[str, object] = {}
    if speed is not None:
        overrides["speed"] = speed
    if fep_host:
        overrides["fep_host"] = fep_host
    if dtu_port:
        overrides["dtu_port"] = dtu_port
    if nbiot_pack is not None:
        overrides["nbiot_pack"] = nbiot_pack
    if delivery:
        from simulator.runner import parse_delivery

        try:
            overrides["delivery"] = parse_delivery(delivery)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--delivery") from None
    settings = load_settings(SimulatorSettings, **overrides)
    if nbiot_protocol != "cjt188-2004":
        from simulator.devices import behaviour_for

        try:
            behaviour_for(nbiot_protocol)
        except Exception as exc:
            raise click.BadParameter(str(exc), param_hint="--nbiot-protocol") from None
    spec = FleetSpec(seed=seed, nbiot_protocol=nbiot_protocol).scaled(meters)
    start = datetime.fromisoformat(start_text) if start_text else datetime.now(UTC).replace(
        microsecond=0)
    if start.tzinfo is None:
        raise click.BadParameter("the start needs a time zone, e.g. 2026-01-01T00:00:00+08:00",
                                 param_hint="--start")
    if export_fleet is not None:
        rows = Fleet(spec, start).export_csv(export_fleet)
        click.echo(f"{rows} meters written to {export_fleet}")
        return
    wanted = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = set(wanted) - {"dtu", "nbiot", "concentrator", "modbus"}
    if unknown:
        raise click.BadParameter(f"unknown link kinds {sorted(unknown)} (known: dtu, nbiot, "
                                 "concentrator, modbus)", param_hint="--kinds")
    if clock_file is not None and settings.speed <= 0:
        raise click.BadParameter("a manual clock (speed 0) has no time line to share",
                                 param_hint="--clock-file")
    clock = SimClock(start, settings.speed)
    if log_path is None:
        log_path = settings.log_dir / f"sim-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.jsonl"
    try:
        sim = Simulator(settings, spec=spec, clock=clock, mqtt=config.mqtt, log_path=log_path,
                        faults=faults, frames_hex=log_frames, burst=burst, seed=seed)
    except ValueError as exc:  # e.g. packs, but no JSON map with a series
        raise click.UsageError(str(exc)) from None
    click.echo(f"simulating {sim.fleet.counts()['meters']:,} meters "
               f"({', '.join(f'{k}={v}' for k, v in sim.fleet.counts().items() if k != 'meters')})"
               f" at {settings.speed:g}× from {start.isoformat()}; log {log_path}")
    if publish_ledger:
        asyncio.run(_publish_ledger(sim, config))
        if duration == 0:  # only the ledger
            return
    if clock_file is not None:
        from simulator.clock import shared_clock

        # simulated time starts with the fleet (the ledger publication above took real time)
        sim.clock = shared_clock(clock_file, start, settings.speed)
        click.echo(f"simulated time line in {clock_file} (the FEP's fep.clock_file)")
        time.sleep(sim.clock.starts_in())
    asyncio.run(_run(sim, wanted, days, duration, control_port))


async def _publish_ledger(sim: object, config: object) -> None:
    from aiokafka import AIOKafkaProducer

    from schemas import codec

    kafka = config.kafka  # type: ignore[attr-defined]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=20)
    await producer.start()
    try:
        entries = sim.fleet.ledger()  # type: ignore[attr-defined]
        futures = [await producer.send(kafka.topic("ledger.meters"),
                                       codec.encode(m, producer="simulator"), key=m.key())
                   for m in entries]
        await asyncio.gather(*futures)
        click.echo(f"published {len(entries):,} meters to {kafka.topic('ledger.meters')}")
    finally:
        await producer.stop()


async def _run(sim: object, kinds: tuple[str, ...], days: float | None,
               duration: float | None, control_port: int | None) -> None:
    import signal

    from simulator.runner import Simulator

    assert isinstance(sim, Simulator)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.start(kinds=kinds, control_port=control_port)
    await asyncio.sleep(0.2)
    endpoints = sim.modbus_endpoints()
    if endpoints:
        click.echo(f"Modbus RTUs: {len(endpoints)} units, e.g. {endpoints[0]} (endpoints of a "
                   "'modbus' collection plan; all of them with `stats` on the control port)")
    started = time.monotonic()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)
            s = sim.summary()
            click.echo(f"sim {s['sim_now'][:19]}  sent {s.get('frames_sent', 0):,}  "
                       f"acked {s.get('acked_frames', 0):,}  unacked {s['unacked']:,}  "
                       f"answers {s.get('requests_answered', 0):,}  faults {s['faults']}")
            if duration is not None and time.monotonic() - started >= duration:
                break
            if days is not None and (sim.clock.elapsed().total_seconds() >= days * 86400):
                break
    finally:
        summary = await sim.stop()
        click.echo(json.dumps(summary, indent=2, default=str))
