"""``unimeter pipeline``: run the stream-processing worker(s) (VEE, billing and other agents).

One worker process runs every configured agent of ``pipeline/`` in one faust app; with
``--workers N`` the command starts N worker processes in the same consumer group (Kafka
shares the partitions among them) and stops them together. Each worker keeps its state in
``<data_dir>/<prefix><app_id>/worker-<i>/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from pipeline.settings import PipelineSettings
from schemas.settings import load_settings
from unimeter.config import load_config


def _settings(agents: tuple[str, ...], store: str | None, data_dir: Path | None,
              heartbeat_file: Path | None) -> PipelineSettings:
    overrides: dict[str, object] = {}
    if agents:
        overrides["agents"] = tuple(a for item in agents for a in item.split(",") if a)
    if store:
        overrides["store"] = store
    if data_dir:
        overrides["data_dir"] = data_dir
    if heartbeat_file:
        overrides["heartbeat_file"] = heartbeat_file
    return load_settings(PipelineSettings, **overrides)


@click.command(name="pipeline")
@click.option("--agents", multiple=True,
              help="Agents to run, comma-separated (default: every agent of pipeline/).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes to start (default: pipeline.workers).")
@click.option("--store", type=click.Choice(["rocksdb://", "memory://"]), default=None,
              help="State store (default: pipeline.store).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="State directory (default: pipeline.data_dir).")
@click.option("--heartbeat-file", type=click.Path(path_type=Path), default=None,
              help="Touch this file every 5 s while healthy (for `unimeter run`).")
@click.option("--worker-index", type=int, default=None, hidden=True)
@click.option("--list-agents", is_flag=True, help="Print the agents found and exit.")
def command(agents: tuple[str, ...], workers: int | None, store: str | None,
            data_dir: Path | None, heartbeat_file: Path | None, worker_index: int | None,
            list_agents: bool) -> None:
    """Run the faust worker(s): readings.raw -> VEE -> readings.validated, and the other
    agents, with the ledger tables fed from the ledger.* topics."""
    from pipeline.app import create_app, discover_agents
    from unimeter.process import tune_garbage_collector

    if list_agents:
        for name in discover_agents():
            click.echo(name)
        return
    config = load_config()
    settings = _settings(agents, store, data_dir, heartbeat_file)
    count = workers or settings.workers
    if worker_index is None and count > 1:
        _run_many(count, sys.argv[1:])
        return
    index = worker_index or 0
    app = create_app(settings, config.kafka, config.utility, worker_index=index)
    if not app.faust.agents:
        raise click.ClickException("no pipeline agent is configured or installed; see "
                                   "`unimeter pipeline --list-agents`")
    click.echo(f"pipeline worker {index}: app {app.app_id}, agents "
               f"{', '.join(sorted(app.faust.agents)) or 'none'}, store {settings.store}, "
               f"data {app.data_dir}, broker {config.kafka.bootstrap}")
    import faust

    worker = faust.Worker(app.faust, loglevel=settings.log_level, quiet=True,
                          redirect_stdouts=False)
    # faust's terminal spinner, kept at log levels from "warning" up, lowers the root
    # logger to DEBUG so it can spin on every record: every debug call of aiokafka and
    # faust (several per produced message) then builds a LogRecord that the handler drops
    # — 7 % of the worker's CPU in the VEE agent benchmark. No spinner, no such records.
    worker.spinner = None
    tune_garbage_collector()
    worker.execute_from_commandline()


def _run_many(count: int, argv: list[str]) -> None:
    """Start ``count`` workers as child processes and stop them together."""
    base = [sys.executable, "-m", "unimeter", *_strip_workers(argv)]
    children = [subprocess.Popen([*base, "--worker-index", str(i)], env=os.environ.copy())
                for i in range(count)]
    click.echo(f"started {count} pipeline workers: pids "
               f"{', '.join(str(c.pid) for c in children)}")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    try:
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.5)
        status = next((c.returncode for c in children if c.returncode), 0)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    if status:
        raise click.ClickException(f"a pipeline worker exited with status {status}; see its "
                                   "log above")


def _strip_workers(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--workers":
            skip = True
            continue
        if item.startswith("--workers="):
            continue
        out.append(item)
    return out
