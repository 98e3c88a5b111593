"""``unimeter demo``: run the main job end to end on the local defaults and print a summary."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from simulator.faults import parse_fault_spec
from unimeter.config import load_config
from unimeter.demo import DEFAULT_FAULTS


@click.command(name="demo")
@click.option("--meters", type=click.IntRange(20, 200_000), default=5000, show_default=True,
              help="Fleet size (the default mix of networks scaled to it).")
@click.option("--days", type=click.FloatRange(0.05, 60), default=3.0, show_default=True,
              help="Simulated days.")
@click.option("--minutes", type=click.FloatRange(0.2, 600), default=4.0, show_default=True,
              help="Real minutes the simulated days take (sets the speed).")
@click.option("--speed", type=click.FloatRange(1, 1e6), default=None,
              help="Simulated seconds per real second (overrides --minutes).")
@click.option("--report-hours", type=click.FloatRange(0.25, 24), default=12.0,
              show_default=True,
              help="Simulated hours between reports of DTU meters (and polls of concentrators "
                   "and RTUs); NB-IoT meters report daily.")
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the run's files go (default: <state dir>/demo/<run>).")
@click.option("--keep-running", is_flag=True,
              help="Leave the processes running after the summary (Ctrl-C stops them).")
@click.option("--no-services", is_flag=True,
              help="Do not start local services; use the configured ones as they are.")
@click.option("--api-port", type=int, default=None, help="Port of the API (default: any free).")
@click.option("--faults", default=DEFAULT_FAULTS, show_default=True,
              help="What goes wrong in the fleet, as rates per report ('' = nothing), for "
                   "the VEE to catch: kinds missing spike rollback rollover clock_drift "
                   "duplicate garbage corrupt disconnect.")
@click.option("--seed", type=int, default=20260701, show_default=True)
def command(meters: int, days: float, minutes: float, speed: float | None,
            report_hours: float, run_dir: Path | None, keep_running: bool, no_services: bool,
            api_port: int | None, faults: str, seed: int) -> None:
    """Run the main job end to end: services, schema, topics, a simulated fleet in the ledger
    (customers, accounts, tariffs, prepayment), the FEP, the pipeline (VEE and billing), the
    sink, the control plane, the scheduler and the API under the supervisor; the fleet over
    several simulated days; then a summary and a report with charts.

    The default (5,000 meters, 3 days in 4 minutes) takes about 8-10 minutes on two cores.
    """
    from unimeter.demo.run import DemoOptions, run_demo

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # the demo stops every process it started on the way out

    signal.signal(signal.SIGTERM, interrupted)
    config = load_config()
    try:
        parse_fault_spec(faults)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None
    options = DemoOptions(meters=meters, days=days, sim_seconds=minutes * 60, speed=speed,
                          report_hours=report_hours, run_dir=run_dir,
                          keep_running=keep_running, seed=seed,
                          api_port=api_port, faults=faults)
    result = run_demo(config, options, echo=click.echo, start_services=not no_services)
    if result.supervisor is not None:
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        signal.signal(signal.SIGINT, lambda *_: done.set())
        try:
            done.wait()
        finally:
            click.echo("stopping …")
            result.supervisor.stop()
