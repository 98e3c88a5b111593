"""Shared pieces of the control-plane commands (``command``, ``device``, ``audit``).

The console acts on the database directly, as the ``api`` role, through the same library the
HTTP API uses — every check, approval rule and audit record is the same. Who acts is
``--as NAME``, else ``$UNIMETER_OPERATOR``, else the login name; what the console does is
audited under that name with origin ``cli``.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import click

from devices.commands.service import CommandService, direct_source
from devices.commands.settings import CommandSettings
from schemas.settings import load_settings
from unimeter.config import Config, load_config

__all__ = [
    "actor_option",
    "as_json_option",
    "echo_json",
    "echo_table",
    "make_service",
    "parse_duration",
    "parse_params",
    "resolve_actor",
]

actor_option = click.option("--as", "actor", metavar="NAME", default=None,
                            help="Who acts (default: $UNIMETER_OPERATOR, else your login name).")
as_json_option = click.option("--json", "as_json", is_flag=True,
                              help="Print JSON instead of a table.")


def resolve_actor(actor: str | None) -> str:
    return actor or os.environ.get("UNIMETER_OPERATOR") or getpass.getuser()


def make_service(config: Config | None = None) -> CommandService:
    config = config or load_config()
    return CommandService(direct_source(config.database.conninfo("api")),
                          load_settings(CommandSettings))


def parse_params(pairs: Sequence[str], params_json: str | None) -> dict[str, Any]:
    """``-p key=value`` pairs (a value that is JSON is taken as JSON) and/or a JSON object."""
    out: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--params-json") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--params-json")
        out.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not key=value", param_hint="-p")
        try:
            parsed = json.loads(value)
            # Money and ids stay strings: "100.50" must not become a float.
            out[key] = value if isinstance(parsed, float) else parsed
        except json.JSONDecodeError:
            out[key] = value
    return out


_DURATION = re.compile(r"^(\d+)\s*([smhd])$")


def parse_duration(text: str | None) -> timedelta | None:
    if text is None:
        return None
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"'{text}' is not a duration like 30m, 2h or 1d",
                                 param_hint="--ttl")
    n, unit = int(match[1]), match[2]
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: n})


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str, ensure_ascii=False, indent=2))


def echo_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    rows = [{c: "" if r.get(c) is None else str(_plain(r.get(c))) for c in columns}
            for r in rows]
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        click.echo("  ".join(r[c].ljust(widths[c]) for c in columns).rstrip())
