"""The scheduler process: periodic jobs of every package, run by APScheduler.

Strategy: a job is a named import path (``package.module:function``) with a trigger (a cron
expression in the utility's time zone, or an interval) and keyword arguments. The function
receives the effective :class:`~unimeter.config.Config` as its first argument. Jobs are
resolved at start-up, so a wrong path fails then, not at 02:00. Each job runs at most once at
a time and missed runs coalesce into one. Success and failure are counted and logged per job;
a job that raises is logged with its traceback and retried at its next trigger, never
stopping the scheduler. The process touches a heartbeat file so the supervisor can see it is
alive.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from schemas.settings import ComponentSettings
from unimeter.config import Config
from unimeter.errors import ConfigurationError

__all__ = ["JobSpec", "JobStats", "SchedulerRunner", "SchedulerSettings", "default_jobs",
           "resolve"]

log = logging.getLogger("unimeter.scheduler")


@dataclass(frozen=True)
class JobSpec:
    name: str
    target: str  # "package.module:function"
    cron: str | None = None  # five-field cron, in the utility's zone
    every_s: float | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    jitter_s: int = 0

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every_s is None):
            raise ConfigurationError(f"job '{self.name}' needs exactly one of cron or every_s")


@dataclass
class JobStats:
    runs: int = 0
    failures: int = 0
    last_error: str = ""
    last_duration_s: float = 0.0


def resolve(target: str) -> Callable[..., Any]:
    """Import ``package.module:function``; a wrong path is a configuration error."""
    module_name, _, attr = target.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"scheduled job target '{target}' cannot be imported: {exc}",
                                 hint="check the job list of the scheduler") from None
    if not callable(func):
        raise ConfigurationError(f"scheduled job target '{target}' is not callable")
    return func  # type: ignore[no-any-return]


class SchedulerSettings(ComponentSettings):
    """Which periodic jobs ``unimeter scheduler`` runs, and when (0 or "" turns a job off).

    Cron expressions have five fields (minute hour day month weekday) in the utility's zone.
    """

    section: ClassVar[str] = "scheduler"

    aggregates_every_s: float = Field(
        default=300.0, ge=0,
        description="Fold new readings into the hourly/daily/monthly aggregates (plain "
                    "PostgreSQL; on TimescaleDB the continuous-aggregate policies do it and "
                    "the job only reports that).")
    retention_cron: str = Field(default="30 3 * * *",
                                description="Apply the retention settings (storage policies).")
    quality_report_cron: str = Field(
        default="15 1 * * *", description="Daily data-quality report of yesterday (local day).")
    quality_report_dir: Path | None = Field(
        default=None, description="Where the data-quality reports go (default: "
                                  "<services.state_dir>/dq).")
    ledger_publish_every_s: float = Field(
        default=0.0, ge=0,
        description="Publish queued ledger changes to the ledger.* topics (0 = off; run "
                    "`unimeter ledger publish` as its own process instead).")
    vee_close_days_cron: str = Field(
        default="20 * * * *",
        description="Judge the day rules (spike) of the last day of meters that stopped "
                    "reporting: the stream judges a day when a value at or after its end "
                    "arrives, so a silent meter's last day stays open until this job "
                    "re-validates it from stored data (new versions only where the verdict "
                    "changes).")
    vee_close_days_grace_h: float = Field(
        default=6.0, ge=0, le=24 * 14,
        description="Hours after the end of a local day before a silent meter's day is "
                    "judged (late values may still come).")
    vee_close_days_lookback_h: float = Field(
        default=48.0, gt=0, le=24 * 60,
        description="How far back (hours, before the grace) days are still found, so runs "
                    "the scheduler missed are caught up; a day judged already publishes "
                    "nothing again.")
    jitter_s: int = Field(default=0, ge=0, le=3600,
                          description="Random delay added to interval jobs.")


def default_jobs(settings: SchedulerSettings) -> list[JobSpec]:
    """The jobs :class:`SchedulerSettings` turns on, in a stable order."""
    jobs: list[JobSpec] = []
    if settings.aggregates_every_s > 0:
        jobs.append(JobSpec("aggregates", "unimeter.jobs:refresh_aggregates",
                            every_s=settings.aggregates_every_s, jitter_s=settings.jitter_s))
    if settings.ledger_publish_every_s > 0:
        jobs.append(JobSpec("ledger-publish", "unimeter.jobs:publish_ledger",
                            every_s=settings.ledger_publish_every_s, jitter_s=settings.jitter_s))
    if settings.retention_cron:
        jobs.append(JobSpec("retention", "unimeter.jobs:apply_retention",
                            cron=settings.retention_cron))
    if settings.quality_report_cron:
        kwargs: dict[str, Any] = {}
        if settings.quality_report_dir is not None:
            kwargs["out_dir"] = str(settings.quality_report_dir)
        jobs.append(JobSpec("quality-report", "unimeter.jobs:quality_report",
                            cron=settings.quality_report_cron, kwargs=kwargs))
    if settings.vee_close_days_cron:
        jobs.append(JobSpec("vee-close-days", "unimeter.jobs:close_vee_days",
                            cron=settings.vee_close_days_cron,
                            kwargs={"grace_h": settings.vee_close_days_grace_h,
                                    "lookback_h": settings.vee_close_days_lookback_h}))
    return jobs


class SchedulerRunner:
    """Runs a list of jobs until stopped."""

    def __init__(self, config: Config, jobs: list[JobSpec], *,
                 heartbeat: Path | None = None, heartbeat_every_s: float = 5.0) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.config = config
        self.jobs = jobs
        self.stats = {job.name: JobStats() for job in jobs}
        self.heartbeat = heartbeat
        self.heartbeat_every_s = heartbeat_every_s
        self._funcs = {job.name: resolve(job.target) for job in jobs}
        self._scheduler = BackgroundScheduler(timezone=config.utility.timezone)
        self._stop = threading.Event()
        for job in jobs:
            self._scheduler.add_job(self._run, trigger=self._trigger(job), args=[job],
                                    id=job.name, name=job.name, max_instances=1,
                                    coalesce=True, misfire_grace_time=300)

    def _trigger(self, job: JobSpec) -> Any:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        if job.cron is not None:
            try:
                return CronTrigger.from_crontab(job.cron, timezone=self.config.utility.timezone)
            except ValueError as exc:
                raise ConfigurationError(f"job '{job.name}': bad cron '{job.cron}': {exc}",
                                         hint="use five fields: minute hour day month weekday"
                                         ) from None
        return IntervalTrigger(seconds=job.every_s, jitter=job.jitter_s or None)

    def _run(self, job: JobSpec) -> None:
        stats = self.stats[job.name]
        started = time.monotonic()
        try:
            result = self._funcs[job.name](self.config, **job.kwargs)
            log.info("job %s done in %.2f s%s", job.name, time.monotonic() - started,
                     f": {result}" if result else "")
        except Exception as exc:  # a failing job must never stop the scheduler
            stats.failures += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", job.name)
        finally:
            stats.runs += 1
            stats.last_duration_s = time.monotonic() - started

    def run_now(self, name: str) -> None:
        """Run one job immediately in this thread (``unimeter scheduler --once NAME``)."""
        job = next((j for j in self.jobs if j.name == name), None)
        if job is None:
            raise ConfigurationError(f"no job named '{name}'",
                                     hint=f"known: {', '.join(j.name for j in self.jobs)}")
        self._run(job)

    def start(self) -> None:
        self._scheduler.start()

    def _beat(self) -> None:
        """Touch the heartbeat file while the scheduler thread is alive (never after)."""
        if self.heartbeat is None or not self._scheduler.running:
            return
        self.heartbeat.parent.mkdir(parents=True, exist_ok=True)
        self.heartbeat.touch()

    def stop(self) -> None:
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def request_stop(self) -> None:
        """Make :meth:`serve` return (safe from a signal handler); running jobs finish first."""
        self._stop.set()

    def serve(self) -> None:
        """Run until :meth:`stop`; touch the heartbeat file every few seconds."""
        self.start()
        try:
            self._beat()
            while not self._stop.wait(self.heartbeat_every_s):
                self._beat()
        finally:
            if self._scheduler.running:
                self._scheduler.shutdown(wait=True)
