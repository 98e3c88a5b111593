"""``unimeter sync``: exchange changes with the utility's customer/billing system (CIS).

Examples::

    unimeter sync                              # the long-running process (Ctrl-C stops)
    unimeter sync initial cis-export/*.xlsx     # the initial batch from files
    unimeter sync availability --day 2026-07-09 # publish one day's data availability now
    unimeter sync exceptions                    # changes not applied, newest first
    unimeter sync resolve 17 --note "resent by the CIS"
"""

from __future__ import annotations

import asyncio
import getpass
import signal
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from unimeter.config import load_config


@click.group(name="sync", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Synchronise with the customer/billing system: sync.in.* in, sync.out.* out.

    Without a subcommand it runs the long-running process (`unimeter sync run`).
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(run)


@command.command(name="run")
def run() -> None:
    """Apply CIS changes, report device status/alarms/exceptions/availability, retry parked
    changes, and publish the ledger outbox (standby while another publisher leads)."""
    from devices.sync import SyncService, SyncSettings
    from schemas.settings import load_settings

    config = load_config()
    settings = load_settings(SyncSettings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        service = SyncService(config.database, config.kafka,
                              timezone=config.utility.timezone, settings=settings)
        click.echo(f"sync: {config.kafka.topic('sync.in.*')} -> ledger, platform -> "
                   f"{config.kafka.topic('sync.out.*')} (Ctrl-C stops)")
        try:
            stats = await service.run(stop)
        finally:
            await service.stop()
        click.echo(f"applied {stats.applied}, duplicates {stats.duplicates}, pending "
                   f"{stats.pending}, rejected {stats.rejected}, conflicts {stats.conflicts}, "
                   f"sent to the CIS {stats.outbound}")

    asyncio.run(main())


@command.command(name="initial")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and count, change nothing.")
def initial(files: tuple[Path, ...], dry_run: bool) -> None:
    """Load the CIS's initial batch (customers, accounts, tariffs, meters …) from files,
    all validated first and applied all or nothing, as the import does."""
    from unimeter.cli.commands.ledger import import_

    ctx = click.get_current_context()
    ctx.invoke(import_, files=files, kind=None, dry_run=dry_run,
               actor=f"sync:initial:{getpass.getuser()}", problems_file=None)


@command.command(name="availability")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]),
              help="Local day (default: yesterday in the utility's zone).")
def availability(day: datetime | None) -> None:
    """Publish per-meter data availability of one day on sync.out.data_availability."""
    from devices.sync import SyncService

    config = load_config()
    zone = ZoneInfo(config.utility.timezone)
    wanted: date = day.date() if day else (datetime.now(zone) - timedelta(days=1)).date()

    async def main() -> int:
        async with SyncService(config.database, config.kafka,
                               timezone=config.utility.timezone) as service:
            return await service.publish_availability(wanted)

    count = asyncio.run(main())
    click.echo(f"published availability of {count} meter(s) for {wanted.isoformat()}")


@command.command(name="exceptions")
@click.option("--all", "show_all", is_flag=True, help="Also resolved ones.")
@click.option("--limit", default=50, show_default=True)
def exceptions(show_all: bool, limit: int) -> None:
    """CIS changes not applied (rejects and conflicts), newest first."""
    from unimeter.cli.commands.ledger import _api_connection

    with _api_connection(load_config()) as conn:
        rows = conn.execute(
            "SELECT exception_id, kind, status, topic, entity, entity_id, attempts, "
            "received_at, reason FROM ledger.sync_exceptions "
            "WHERE %s OR status <> 'resolved' ORDER BY exception_id DESC LIMIT %s",
            (show_all, limit)).fetchall()
    for r in rows:
        click.echo(f"#{r[0]:<6} {r[1]:<8} {r[2]:<8} {r[3]:<26} {r[4]} {r[5]} "
                   f"(x{r[6]}, {r[7]:%Y-%m-%d %H:%M}): {r[8]}")
    click.echo(f"{len(rows)} exception(s)")


@command.command(name="resolve")
@click.argument("exception_id", type=int)
@click.option("--note", required=True, help="How it was resolved.")
def resolve(exception_id: int, note: str) -> None:
    """Mark a reject or conflict as resolved (after fixing it at the CIS or in the ledger)."""
    from unimeter.cli.commands.ledger import _api_connection
    from unimeter.errors import UnimeterError

    with _api_connection(load_config()) as conn:
        row = conn.execute(
            "UPDATE ledger.sync_exceptions SET status = 'resolved', resolved_at = now(), "
            "resolved_by = %s, resolution = %s WHERE exception_id = %s "
            "RETURNING exception_id", (f"cli:{getpass.getuser()}", note, exception_id)
        ).fetchone()
    if row is None:
        raise UnimeterError(f"no sync exception #{exception_id}",
                            hint="list them with `unimeter sync exceptions --all`")
    click.echo(f"resolved #{exception_id}")
