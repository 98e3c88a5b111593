"""The scheduler: jobs resolve at start-up, run on their triggers, and failures are contained."""

from __future__ import annotations

import time
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
