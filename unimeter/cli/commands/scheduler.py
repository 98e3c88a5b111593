"""``unimeter scheduler``: run the periodic jobs (aggregates, retention, data-quality report …).

The jobs and their triggers come from the ``scheduler`` settings (``UNIMETER_SCHEDULER_*``);
``--list`` shows them, ``--once NAME`` runs one now and exits (its exit status says whether it
worked). The long-running form touches ``--heartbeat-file`` for ``unimeter run`` and stops
cleanly on Ctrl-C / SIGTERM, letting a running job finish.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import click

from schemas.settings import load_settings
from unimeter.config import load_config


@click.command(name="scheduler")
@click.option("--list", "list_jobs", is_flag=True, help="Print the jobs and their triggers, exit.")
@click.option("--once", "once", default=None, metavar="NAME",
              help="Run this job now, print what it did and exit.")
@click.option("--only", default=None, metavar="NAMES",
              help="Run only these jobs (comma-separated).")
@click.option("--heartbeat-file", type=click.Path(path_type=Path), default=None,
              help="Touch this file every few seconds while healthy (for `unimeter run`).")
@click.option("-v", "--verbose", is_flag=True, help="Log every job run, not only failures.")
def command(list_jobs: bool, once: str | None, only: str | None, heartbeat_file: Path | None,
            verbose: bool) -> None:
    """Run the scheduled jobs (APScheduler) until interrupted."""
    from unimeter.scheduler import SchedulerRunner, SchedulerSettings, default_jobs

    logging.basicConfig(level=logging.INFO if verbose or once else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("unimeter.scheduler").setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    config = load_config()
    settings = load_settings(SchedulerSettings)
    jobs = default_jobs(settings)
    if only:
        wanted = {n.strip() for n in only.split(",") if n.strip()}
        unknown = wanted - {j.name for j in jobs}
        if unknown:
            raise click.BadParameter(
                f"unknown or disabled job(s) {sorted(unknown)}; enabled: "
                f"{', '.join(j.name for j in jobs) or 'none'}", param_hint="--only")
        jobs = [j for j in jobs if j.name in wanted]
    if list_jobs:
        for job in jobs:
            when = f"cron '{job.cron}' ({config.utility.timezone})" if job.cron else \
                f"every {job.every_s:g} s"
            click.echo(f"  {job.name:<16} {when:<40} {job.target}")
        return
    runner = SchedulerRunner(config, jobs, heartbeat=heartbeat_file)
    if once is not None:
        runner.run_now(once)
        stats = runner.stats[once]
        if stats.failures:
            click.echo(f"{once}: FAILED: {stats.last_error}", err=True)
            sys.exit(1)
        click.echo(f"{once}: done in {stats.last_duration_s:.2f} s")
        return
    if not jobs:
        click.echo("no jobs are enabled (see `unimeter config show` / UNIMETER_SCHEDULER_*)")
    signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
    signal.signal(signal.SIGINT, lambda *_: runner.request_stop())
    click.echo(f"scheduler: {len(jobs)} job(s): {', '.join(j.name for j in jobs)} "
               "(Ctrl-C stops)")
    runner.serve()
    for name, stats in runner.stats.items():
        click.echo(f"  {name:<16} {stats.runs} run(s), {stats.failures} failure(s)"
                   + (f", last error {stats.last_error}" if stats.last_error else ""))
