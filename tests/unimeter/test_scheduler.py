"""The scheduler: jobs resolve at start-up, run on their triggers, and failures are contained."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from unimeter.config import Config
from unimeter.errors import ConfigurationError
from unimeter.scheduler import JobSpec, SchedulerRunner

calls_seen: list[tuple[str, Any]] = []


def record(config: Config, tag: str = "") -> None:
    calls_seen.append((tag, config.utility.timezone))


def explode(config: Config) -> None:
    raise RuntimeError("aggregate table locked")


def test_interval_jobs_run_and_failures_are_counted(config: Config) -> None:
    calls_seen.clear()
    runner = SchedulerRunner(config, [
        JobSpec("tick", "tests.unimeter.test_scheduler:record", every_s=0.2,
                kwargs={"tag": "t"}),
        JobSpec("boom", "tests.unimeter.test_scheduler:explode", every_s=0.2),
    ])
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(calls_seen) < 2 or
                                               runner.stats["boom"].failures < 2):
            time.sleep(0.05)
    finally:
        runner.stop()
    assert calls_seen[0] == ("t", config.utility.timezone)
    assert runner.stats["boom"].failures >= 2
    assert runner.stats["boom"].last_error == "RuntimeError: aggregate table locked"
    assert runner.stats["tick"].failures == 0


def test_wrong_target_and_cron_fail_at_start(config: Config) -> None:
    with pytest.raises(ConfigurationError, match="cannot be imported"):
        SchedulerRunner(config, [JobSpec("x", "aggregates.nope:refresh", every_s=60)])
    with pytest.raises(ConfigurationError, match="bad cron"):
        SchedulerRunner(config, [JobSpec("x", "tests.unimeter.test_scheduler:record",
                                         cron="99 * * * *")])
    with pytest.raises(ConfigurationError, match="exactly one"):
        JobSpec("x", "m:f")


def test_run_now(config: Config) -> None:
    calls_seen.clear()
    runner = SchedulerRunner(config, [JobSpec("nightly", "tests.unimeter.test_scheduler:record",
                                              cron="5 2 * * *", kwargs={"tag": "n"})])
    runner.run_now("nightly")
    assert calls_seen == [("n", config.utility.timezone)]
    with pytest.raises(ConfigurationError, match="no job named"):
        runner.run_now("hourly")


def test_default_jobs_follow_the_settings() -> None:
    from unimeter.scheduler import SchedulerSettings, default_jobs

    names = [j.name for j in default_jobs(SchedulerSettings())]
    assert names == ["aggregates", "retention", "quality-report", "vee-close-days"]
    jobs = default_jobs(SchedulerSettings(aggregates_every_s=0, ledger_publish_every_s=10,
                                          retention_cron="", quality_report_cron="0 2 * * *",
                                          quality_report_dir="/tmp/dq", vee_close_days_cron=""))
    assert [(j.name, j.every_s, j.cron) for j in jobs] == [
        ("ledger-publish", 10, None), ("quality-report", None, "0 2 * * *")]
    assert jobs[1].kwargs == {"out_dir": "/tmp/dq"}


def test_heartbeat_is_touched_while_serving_and_stops_after(config: Config,
                                                            tmp_path: Path) -> None:
    calls_seen.clear()
    beat = tmp_path / "run" / "scheduler.alive"
    runner = SchedulerRunner(config, [JobSpec("tick", "tests.unimeter.test_scheduler:record",
                                              every_s=0.1)],
                             heartbeat=beat, heartbeat_every_s=0.1)
    thread = threading.Thread(target=runner.serve)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not beat.exists():
            time.sleep(0.02)
        first = beat.stat().st_mtime_ns
        while time.monotonic() < deadline and beat.stat().st_mtime_ns == first:
            time.sleep(0.02)
        assert beat.stat().st_mtime_ns > first  # touched again, not only once
        # The job's first run is its own timer (0.1 s after start, later on a loaded machine):
        # wait for it rather than assume it came before the heartbeat's second touch.
        while time.monotonic() < deadline and not calls_seen:
            time.sleep(0.02)
    finally:
        runner.request_stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert calls_seen  # the job ran while serving
    stopped_at = beat.stat().st_mtime_ns
    time.sleep(0.3)
    assert beat.stat().st_mtime_ns == stopped_at


@pytest.mark.integration
def test_scheduler_command_runs_the_aggregates_job(config: Config, database: Any,
                                                   tmp_path: Path) -> None:
    """``unimeter scheduler`` as a process: a stored reading reaches the hourly aggregate
    through the interval job, the heartbeat is kept, SIGTERM stops it with status 0."""
    import os
    import signal
    import subprocess
    import sys
    from datetime import UTC, datetime

    import psycopg

    from sinks.postgres import PostgresSink
    from tests.sinks.fleet import batch, reading

    sink = PostgresSink(database.settings.conninfo("sink"), consumer_group="scheduler-test")
    stored = sink.write(batch([reading(1, datetime(2026, 7, 1, 3, tzinfo=UTC)),
                               reading(1, datetime(2026, 7, 1, 4, tzinfo=UTC))]))
    sink.close()
    assert not stored.rejected
    url = database.settings.url
    beat = tmp_path / "scheduler.alive"
    env = {**os.environ, "UNIMETER_DATABASE_URL": url,
           "UNIMETER_SCHEDULER_AGGREGATES_EVERY_S": "0.5",
           "UNIMETER_SCHEDULER_RETENTION_CRON": "", "UNIMETER_SCHEDULER_QUALITY_REPORT_CRON": ""}
    proc = subprocess.Popen([sys.executable, "-m", "unimeter", "scheduler", "-v",
                             "--heartbeat-file", str(beat)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        hourly = 0
        while time.monotonic() < deadline and not hourly:
            time.sleep(0.3)
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM agg.meter_consumption_hourly"
                                   ).fetchone()
                hourly = row[0] if row else 0
        assert hourly >= 1
        assert beat.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "aggregates" in text
    assert "failure(s)" in text
    assert "0 failure(s)" in text.split("aggregates", 2)[-1]
