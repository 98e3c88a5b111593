"""The scheduler's jobs: thin entry points over the packages, each taking the :class:`Config`.

Every function here is named in :func:`unimeter.scheduler.default_jobs` and may be run by hand
with ``unimeter scheduler --once NAME``. Each returns a one-line account of what it did (the
scheduler logs it) and raises on failure (the scheduler counts and logs it, and runs the job
again at its next trigger).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from unimeter.config import Config

__all__ = ["apply_retention", "close_vee_days", "publish_ledger", "quality_report",
           "refresh_aggregates"]


def refresh_aggregates(config: Config, *, on_timescale: bool = False) -> str:
    """Fold pending changes into the hourly, daily and monthly aggregates.

    On TimescaleDB the continuous-aggregate policies refresh on their own schedule, so the job
    only says so, unless ``on_timescale`` asks for an immediate refresh there too.
    """
    from aggregates.refresh import backend
    from aggregates.refresh import refresh_aggregates as refresh

    if not on_timescale:
        with psycopg.connect(config.database.conninfo("api"), autocommit=True,
                             connect_timeout=10) as conn:
            if backend(conn) == "timescale":
                return "TimescaleDB: the continuous-aggregate policies refresh (skipped)"
    report = refresh(config.database)
    return (f"{len(report.levels)} relation(s) on {report.backend}, "
            f"{report.buckets} bucket row(s)")


def apply_retention(config: Config) -> str:
    """Apply the retention settings (TimescaleDB policies or batched deletes)."""
    from schemas.settings import load_settings
    from sinks.retention import apply_retention as apply
    from sinks.settings import RetentionSettings

    actions = apply(config.database, load_settings(RetentionSettings), config.utility)
    return "; ".join(f"{a.relation}: {a.action}" for a in actions)


def quality_report(config: Config, *, out_dir: str | None = None,
                   day: str | None = None) -> str:
    """The data-quality report of one local day (default: yesterday in the utility's zone)."""
    from pipeline.quality_report import daily_report

    zone = config.utility.timezone
    the_day = (date.fromisoformat(day) if day
               else datetime.now(ZoneInfo(zone)).date() - timedelta(days=1))
    folder = Path(out_dir) if out_dir else config.services.state_dir / "dq"
    with psycopg.connect(config.database.conninfo("pipeline"), autocommit=True,
                         connect_timeout=10) as conn:
        report = daily_report(conn, the_day, folder, timezone=zone)
    failed = [g.group for g in report.groups if not g.success]
    return (f"{the_day}: {len(report.groups)} group(s)"
            + (f", failed: {', '.join(failed)}" if failed else ", all passed")
            + f"; {report.json_path}")


def publish_ledger(config: Config, *, timeout_s: float = 120.0) -> str:
    """Publish what is queued in the ledger outbox to the compacted ``ledger.*`` topics."""
    import asyncio

    from devices.outbox import OutboxPublisher

    async def main() -> str:
        publisher = OutboxPublisher(config.database, config.kafka)
        await publisher.start()
        try:
            total = await publisher.drain(timeout_s=timeout_s)
        finally:
            await publisher.stop()
        return f"{total.messages} message(s) from {total.rows} change(s)"

    return asyncio.run(main())


def close_vee_days(config: Config, *, grace_h: float = 6.0, lookback_h: float = 48.0,
                   dry_run: bool = False, now: datetime | None = None) -> str:
    """Judge the day rules (spike) of the last day of meters that stopped reporting, once
    that day ended more than ``grace_h`` hours ago; publishes new versions of what changes
    (:func:`pipeline.revalidate.close_open_days`)."""
    from datetime import UTC

    from pipeline.revalidate import close_open_days
    from pipeline.settings import PipelineSettings
    from schemas.settings import load_settings
    from vee.groups import default_rules_path, load_rule_set

    settings = load_settings(PipelineSettings)
    ruleset = load_rule_set(settings.vee_rules or default_rules_path(),
                            timezone=config.utility.timezone)
    report = close_open_days(config.database, config.kafka, ruleset,
                             now=now or datetime.now(UTC), grace=timedelta(hours=grace_h),
                             lookback=timedelta(hours=lookback_h),
                             context_days=config.utility.late_data_days, dry_run=dry_run)
    verb = "would publish" if dry_run else "published"
    return (f"{report.meters} meter(s) with an open last day, {len(report.days or {})} "
            f"day(s); {verb} {report.new_versions if dry_run else report.published} "
            "new version(s)")
