"""``unimeter demo``: run the main job end to end on the local defaults and print a summary."""

from __future__ import annotations

import click

from unimeter.config import load_config
from unimeter.db.migrate import migrate
from unimeter.services import services_up
from unimeter.topics import create_topics


@click.command(name="demo")
def command() -> None:
    """Start the services, migrate, create the topics, run the pipeline on a simulated fleet.

    This release runs the foundation only; the parts of the pipeline not built yet are listed
    at the end so nobody mistakes this for the whole job.
    """
    config = load_config()
    click.echo("1/3 local services")
    services_up(config, progress=lambda m: click.echo(f"    {m}"))
    click.echo("2/3 database schema")
    report = migrate(config.database, config.utility)
    click.echo(f"    backend {report.backend}: {len(report.applied)} migrations applied, "
               f"{len(report.already)} already in place")
    click.echo("3/3 Kafka topics")
    topics = create_topics(config.kafka)
    click.echo(f"    {len(topics.created)} created, {len(topics.existing)} already existed")
    click.echo("")
    click.echo("Not in this release yet (see the README's status table): front-end processors, "
               "the simulated fleet, the VEE and billing agents, the storage sink and the "
               "aggregates. Nothing was collected, validated or billed.")
    click.echo(f"Look around: psql '{config.database.url.split('@')[0].split(':')[0]}://…"
               f"@127.0.0.1:{config.services.postgres_port}/unimeter' "
               "(password in .unimeter/postgres/superuser.password)")
