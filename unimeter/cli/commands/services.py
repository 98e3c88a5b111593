"""``unimeter services up | down | status | fetch``: the local Kafka, PostgreSQL and Mosquitto."""

from __future__ import annotations

from pathlib import Path

import click

from unimeter.config import load_config
from unimeter.services import SERVICE_NAMES, services_down, services_status, services_up

_only = click.option("--only", "only", multiple=True, type=click.Choice(SERVICE_NAMES),
                     help="Act on these services only (repeatable).")
_started_file = click.option(
    "--started-file", type=click.Path(path_type=Path), default=None,
    help="up: record what this call started; down: stop only what is recorded there.")


@click.group(name="services")
def command() -> None:
    """Local services for development, tests and the demo (no Docker needed)."""


@command.command()
@_only
@_started_file
def up(only: tuple[str, ...], started_file: Path | None) -> None:
    """Start the local services that are not given from outside. Starting twice is harmless."""
    config = load_config()
    services_up(config, only or SERVICE_NAMES, started_file=started_file,
                progress=lambda m: click.echo(f"  {m}"))
    _print_status(config)


@command.command()
@_only
@_started_file
def down(only: tuple[str, ...], started_file: Path | None) -> None:
    """Stop the local services (data is kept)."""
    services_down(load_config(), only or SERVICE_NAMES, started_file=started_file,
                  progress=lambda m: click.echo(f"  {m}"))


@command.command()
def status() -> None:
    """Each service: state, address, pid and the path of its log file."""
    _print_status(load_config())


@command.command()
def fetch() -> None:
    """Resolve the Kafka broker jars from Maven Central (done by `up` when missing)."""
    from unimeter.services.kafka import LocalKafka

    kafka = LocalKafka(load_config().services)
    click.echo(f"resolving kafka_2.13 {kafka.settings.kafka_version} into {kafka.lib} …")
    kafka.fetch()
    click.echo(f"ok: {len(list(kafka.lib.glob('*.jar')))} jars in {kafka.lib}")


def _print_status(config: object) -> None:
    from unimeter.config import Config

    assert isinstance(config, Config)
    for st in services_status(config):
        colour = {"running": "green", "external": "cyan"}.get(st.state, "yellow")
        line = f"{st.name:<10} {click.style(st.state, fg=colour):<20} {st.address}"
        if st.pid:
            line += f"  pid {st.pid}"
        click.echo(line)
        if st.detail:
            click.echo(f"{'':<10} {st.detail}")
        if st.log:
            click.echo(f"{'':<10} log: {st.log}")
