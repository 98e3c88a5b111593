"""``unimeter api``: serve the HTTP API and manage its tokens (``api token create``).

Examples::

    unimeter api                                   # http://127.0.0.1:8080, docs at /docs
    unimeter api --host 0.0.0.0 --port 8080
    unimeter api token create --user li --role operator --region R1
    unimeter api token create --user billing-sync --role billing
    unimeter api token list
    unimeter api token revoke 3f9c0a1b2c3d
"""

from __future__ import annotations

import click
import psycopg

from api.auth import ROLES, create_token, revoke_token
from api.settings import ApiSettings
from devices.commands.settings import CommandSettings
from schemas.settings import load_settings
from unimeter.cli._control import as_json_option, echo_json, echo_table, resolve_actor
from unimeter.config import load_config


@click.group(name="api", invoke_without_command=True)
@click.option("--host", default=None, help="Address to listen on (default from settings).")
@click.option("--port", default=None, type=int, help="Port (default from settings).")
@click.pass_context
def command(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, documentation at /docs)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from api.app import create_app

    config = load_config()
    settings = load_settings(ApiSettings)
    app = create_app(config.database, kafka=config.kafka, settings=settings,
                     command_settings=load_settings(CommandSettings), utility=config.utility)
    bind_host, bind_port = host or settings.host, port or settings.port
    click.echo(f"unimeter API on http://{bind_host}:{bind_port} (docs at /docs)")
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="info", access_log=True)


@command.group(name="token")
def token() -> None:
    """API tokens: who may call, with which roles, in which regions."""


def _connect() -> psycopg.Connection:
    return psycopg.connect(load_config().database.conninfo("api"))


@token.command(name="create")
@click.option("--user", required=True, help="Who the token belongs to (audited as actor).")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES),
              help="A role (repeatable).")
@click.option("--region", "regions", multiple=True,
              help="Limit to this region (repeatable); none = every region.")
@click.option("--description", default="")
def create(user: str, roles: tuple[str, ...], regions: tuple[str, ...],
           description: str) -> None:
    """Create a token and print its secret (shown only now)."""
    with _connect() as conn:
        token_id, secret = create_token(conn, user=user, roles=roles,
                                        regions=list(regions) or None,
                                        description=description,
                                        created_by=resolve_actor(None))
    click.echo(f"token {token_id} for {user} ({', '.join(sorted(roles))}"
               f"{'; regions ' + ', '.join(regions) if regions else ''}):")
    click.echo(secret)


@token.command(name="list")
@as_json_option
def list_(as_json: bool) -> None:
    """Tokens (never their secrets)."""
    with _connect() as conn:
        rows = conn.execute("SELECT token_id, user_name, roles, regions, created_at, "
                            "last_used_at, revoked_at, description FROM ops.api_tokens "
                            "ORDER BY created_at").fetchall()
    data = [{"token_id": r[0], "user": r[1], "roles": ",".join(r[2]),
             "regions": ",".join(r[3]) if r[3] is not None else "*", "created_at": r[4],
             "last_used_at": r[5], "revoked_at": r[6], "description": r[7]} for r in rows]
    if as_json:
        echo_json(data)
    else:
        echo_table(data, ("token_id", "user", "roles", "regions", "last_used_at",
                          "revoked_at"))


@token.command(name="revoke")
@click.argument("token_id")
def revoke(token_id: str) -> int:
    """Revoke a token (API servers stop accepting it within their cache time)."""
    with _connect() as conn:
        done = revoke_token(conn, token_id)
    click.echo("revoked" if done else f"no active token {token_id}")
    return 0 if done else 1
