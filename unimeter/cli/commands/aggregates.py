"""``unimeter aggregates``: refresh the hourly/daily/monthly aggregates and show their freshness.

``refresh`` folds in everything that changed since the last run (plain PostgreSQL: the
invalidation log; TimescaleDB: the continuous aggregates' own invalidations), level by
level. ``status`` shows each relation's watermark and last refresh.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import click

from unimeter.config import load_config


def _instant(value: str | None, zone: str) -> datetime | None:
    """An ISO date or date-time; without an offset it is read in the utility's zone."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not an ISO date or date-time "
                                 "(e.g. 2026-07-01 or 2026-07-01T08:00+08:00)") from None
    if len(value) == 10:
        parsed = datetime.combine(parsed.date(), time())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(zone))


@click.group(name="aggregates")
def command() -> None:
    """Refresh the aggregates (plain PostgreSQL and TimescaleDB) and show their freshness."""


@command.command(name="refresh")
@click.option("--from", "start", default=None, help="Only this window: start (ISO date/time).")
@click.option("--to", "end", default=None, help="Only this window: end, exclusive.")
@click.option("--force", is_flag=True,
              help="Recompute the whole window even where nothing changed (needs --from/--to).")
@click.option("--quiet", is_flag=True, help="Only the summary line.")
def refresh(start: str | None, end: str | None, force: bool, quiet: bool) -> None:
    """Fold every change into the hourly, then daily, then monthly level."""
    from aggregates.refresh import refresh_aggregates

    config = load_config()
    zone = config.utility.timezone
    window_start, window_end = _instant(start, zone), _instant(end, zone)
    if force and (window_start is None or window_end is None):
        raise click.UsageError("--force needs a window: give --from and --to")
    report = refresh_aggregates(config.database, start=window_start, end=window_end,
                                force=force,
                                progress=(lambda _m: None) if quiet else
                                (lambda m: click.echo(f"  {m}")))
    rows = f", {report.buckets:,} bucket row(s)" if report.backend == "postgres" else ""
    click.echo(f"refreshed {len(report.levels)} relation(s) on {report.backend} in "
               f"{report.duration_s:.2f} s{rows}")


@command.command(name="status")
def status() -> None:
    """Each aggregate relation's watermark, last refresh and pending changes."""
    import psycopg

    from aggregates.status import aggregate_status

    config = load_config()
    with psycopg.connect(config.database.conninfo("api"), autocommit=True) as conn:
        info = aggregate_status(conn)
    click.echo(f"backend {info.backend}, days and months in {info.timezone}")
    for source, hours in sorted(info.pending_hours.items()):
        click.echo(f"  pending: {hours} hour(s) of {source} changes (run `unimeter "
                   "aggregates refresh`)")
    for rel in info.relations:
        mark = f"{rel.watermark:%Y-%m-%d %H:%M %Z}" if rel.watermark else "-"
        last = f"{rel.last_refresh_at:%Y-%m-%d %H:%M:%S %Z}" if rel.last_refresh_at else "never"
        took = f" ({rel.last_duration_ms} ms)" if rel.last_duration_ms is not None else ""
        click.echo(f"  {rel.relation:<36} watermark {mark:<22} last {last}{took}  "
                   f"{rel.detail}")
