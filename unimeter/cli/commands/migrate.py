"""``unimeter migrate``: create or upgrade the database schema (ordered, idempotent, recorded)."""

from __future__ import annotations

import click

from unimeter.config import load_config
from unimeter.db.migrate import migrate


@click.command(name="migrate")
def command() -> None:
    """Apply the migrations not yet applied; TimescaleDB is used when it is available."""
    config = load_config()
    report = migrate(config.database, config.utility, progress=lambda m: click.echo(f"  {m}"))
    click.echo(f"backend: {report.backend}; applied {len(report.applied)}, "
               f"already applied {len(report.already)}")
