"""``unimeter fep``: run a front-end processor for one or more service points.

Without ``--service-point`` the FEP runs every service point that lists this instance (or no
instance at all) in ``fep.service_points``. Every few seconds it prints one status line:
links and meters held, frames and readings per second, where the data goes (Kafka directly or
the local spool) and how much waits in the spool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from ingest.settings import FepSettings
from schemas.settings import load_settings
from unimeter.config import load_config


@click.command(name="fep")
@click.option("--service-point", "service_points", multiple=True, metavar="NAME",
              help="Service point to run (repeatable); default: all this instance serves.")
@click.option("--instance", default=None, help="This FEP's name (overrides UNIMETER_FEP_INSTANCE).")
@click.option("--registry", type=click.Choice(["postgres", "memory"]), default=None,
              help="Session registry (default: fep.registry; memory needs no database).")
@click.option("--status-every", type=float, default=10.0, show_default=True,
              help="Seconds between status lines (0 = none).")
@click.option("--heartbeat-file", type=click.Path(path_type=Path), default=None,
              help="Touch this file with the status JSON at every status line (for `unimeter "
                   "run`).")
@click.option("--list", "list_points", is_flag=True, help="Print the service points and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Log every session and publisher change.")
def command(service_points: tuple[str, ...], instance: str | None, registry: str | None,
            status_every: float, heartbeat_file: Path | None, list_points: bool,
            verbose: bool) -> None:
    """Run a front-end processor (DTU/concentrator TCP links, MQTT, Modbus polling)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config()
    overrides: dict[str, Any] = {}
    if instance:
        overrides["instance"] = instance
    if registry:
        overrides["registry"] = registry
    settings = load_settings(FepSettings, **overrides)
    if list_points:
        for name, point in settings.service_points.items():
            where = f"{point.host}:{point.port}" if point.transport == "tcp" else point.transport
            served = ", ".join(point.feps) or "every FEP"
            mark = "*" if point.served_by(settings.instance) else " "
            click.echo(f"{mark} {name:<20} {where:<18} {point.protocol:<14} link={point.link:<13}"
                       f"admission={point.admission:<7} served by {served}")
        return
    from ingest.fep import FepRuntime
    from unimeter.process import tune_garbage_collector

    runtime = FepRuntime(settings, config.kafka, database=config.database, mqtt=config.mqtt,
                         service_points=service_points, timezone=config.utility.timezone)
    click.echo(f"FEP {settings.instance}: service points {', '.join(runtime.points)}; "
               f"Kafka {config.kafka.bootstrap}; spool {settings.instance_spool_dir()}")
    tune_garbage_collector()
    asyncio.run(_serve(runtime, status_every, heartbeat_file))


async def _serve(runtime: Any, status_every: float, heartbeat_file: Path | None) -> None:
    task = asyncio.create_task(runtime.run_forever())
    last: dict[str, Any] = {}
    last_at = time.monotonic()
    while not task.done():
        await asyncio.wait({task}, timeout=status_every or None)
        if task.done() or not status_every:
            continue
        snap = runtime.snapshot()
        now = time.monotonic()
        rate = (snap["records_kafka"] + snap["records_spooled"]
                - last.get("records_kafka", 0) - last.get("records_spooled", 0)) / (now - last_at)
        last, last_at = snap, now
        for name, server in runtime.servers.items():
            ports = getattr(server, "port", None)
            snap.setdefault("points", {})[name] = ports
        click.echo(f"[{runtime.instance}] links={snap['links']} meters={snap['meters']} "
                   f"records/s={rate:,.0f} mode={snap['publisher_mode']} "
                   f"spool={snap['spool_bytes']:,}B malformed={snap.get('malformed', 0)} "
                   f"not_acked={snap.get('not_acked', 0)} commands={snap['commands']}")
        if heartbeat_file is not None:
            await asyncio.to_thread(_write_heartbeat, heartbeat_file, snap)
    task.result()


def _write_heartbeat(path: Path, snap: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snap, default=str))
    tmp.replace(path)
