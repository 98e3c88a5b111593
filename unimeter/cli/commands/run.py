"""``unimeter run --plan FILE``: supervise unimeter's processes (start, watch, restart, stop)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from unimeter.config import load_config
from unimeter.runplan import load_run_plan
from unimeter.supervisor import Supervisor


@click.command(name="run")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path, exists=True),
              required=True, help="YAML run plan (see unimeter/runplan.py).")
@click.option("--log-dir", type=click.Path(path_type=Path), default=None,
              help="Where process logs go (default: <state dir>/logs).")
def command(plan_path: Path, log_dir: Path | None) -> None:
    """Start the plan's processes in dependency order with health checks, restart crashed
    ones with backoff, and stop everything cleanly on Ctrl-C or SIGTERM."""
    config = load_config()
    specs = load_run_plan(plan_path)
    sup = Supervisor(specs, log_dir=log_dir or config.services.state_dir / "logs",
                     progress=lambda m: click.echo(f"  {m}"))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sup.start()
    click.echo(f"{len(specs)} processes running; Ctrl-C stops them")
    try:
        done.wait()
    finally:
        click.echo("stopping …")
        sup.stop()
