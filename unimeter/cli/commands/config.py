"""``unimeter config show``: the effective configuration, secrets masked."""

from __future__ import annotations

import json

import click

from unimeter.config import load_config


@click.group(name="config")
def command() -> None:
    """Inspect the effective configuration (environment + $UNIMETER_CONFIG + defaults)."""


@command.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
def show(as_json: bool) -> None:
    """Print every setting in effect, with passwords and URL credentials masked."""
    data = load_config().show()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        import yaml

        click.echo(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False))
