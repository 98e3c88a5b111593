"""``unimeter sink``: store the data topics in PostgreSQL / TimescaleDB (idempotent, durable).

Consumes readings (validated and raw), device events, billing, alerts and command results;
writes each partition's batch in one transaction and commits the Kafka offsets only after the
database commit. While the database is down it backs off and advances nothing; records it
cannot store go to ``dlq.sink`` with the reason.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click

from schemas.settings import load_settings
from unimeter.config import load_config


@click.command(name="sink")
@click.option("--topics", default=None,
              help="Comma-separated catalog topics (default: every stored topic).")
@click.option("--group", default=None,
              help="Consumer group (default: <topic prefix>-sink, e.g. unimeter-sink).")
@click.option("--archive-frames", is_flag=True, default=None,
              help="Also archive frames.raw into data.raw_frames.")
@click.option("--until-idle", type=float, default=None, metavar="SECONDS",
              help="Stop once nothing arrived for this long and everything is committed.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def command(topics: str | None, group: str | None, archive_frames: bool | None,
            until_idle: float | None, quiet: bool) -> None:
    """Run the storage sink until interrupted (Ctrl-C / SIGTERM stop it cleanly)."""
    from sinks.postgres import Backoff, PostgresSink
    from sinks.runner import SinkRunner, tune_garbage_collector
    from sinks.settings import SinkSettings
    from sinks.stores import StoreContext

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config()
    overrides: dict[str, Any] = {}
    if topics is not None:
        overrides["topics"] = topics
    if group is not None:
        overrides["group_id"] = group
    if archive_frames:
        overrides["archive_frames"] = True
    settings = load_settings(SinkSettings, **overrides)
    consumer_group = settings.group_for(config.kafka)
    sink = PostgresSink(
        config.database.conninfo("sink"), consumer_group=consumer_group,
        context=StoreContext(timezone=config.utility.timezone, fast_path=settings.fast_path),
        max_batch_records=settings.batch_max_records,
        backoff=Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000))

    def show(snapshot: dict[str, Any]) -> None:
        if quiet:
            return
        down = (f", database down {snapshot['database_down_s']:.0f} s"
                if snapshot["database_down_s"] else "")
        click.echo(f"  {snapshot['rows_per_s']:>10,.0f} rows/s"
                   f"  {snapshot['rows_written']:>12,} rows"
                   f"  lag {snapshot['lag']:,}  absorbed {snapshot['duplicates_absorbed']:,}"
                   f"  corrections {snapshot['corrections']:,}"
                   f"  dead-lettered {snapshot['dead_lettered']:,}{down}")

    runner = SinkRunner(sink, config.kafka, settings, on_progress=show)
    tune_garbage_collector()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"sink: group {consumer_group}, topics {', '.join(runner.topics)}")
    metrics = runner.run(stop, until_idle_s=until_idle)
    click.echo(f"stored {metrics.rows_written:,} rows from {metrics.records_in:,} records; "
               f"absorbed {metrics.absorbed:,} duplicates, {metrics.corrections:,} corrections, "
               f"{metrics.dead_lettered:,} dead-lettered")
