"""The command line: discovery, configuration display, and failures that say what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unimeter.cli.main import _command_modules


def run_cli(*args: str, env: dict[str, str] | None = None,
            keep_env: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; ``keep_env`` keeps the caller's UNIMETER_* settings (service ports)."""
    full_env = {k: v for k, v in os.environ.items()
                if keep_env or not k.startswith("UNIMETER_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "unimeter", *args], capture_output=True,
                          text=True, env=full_env, timeout=120, check=False)


def test_help_lists_every_command_module() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for name in _command_modules():
        assert name in result.stdout
    for name in ("services", "migrate", "topics", "config"):
        assert name in result.stdout


def test_config_show_masks_secrets() -> None:
    result = run_cli("config", "show", "--json",
                     env={"UNIMETER_DATABASE_URL": "postgresql://app:hunter2@db:5432/meters",
                          "UNIMETER_KAFKA_BOOTSTRAP": "kafka-1:9092"})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert "hunter2" not in result.stdout
    assert shown["database"]["url"] == "postgresql://app:********@db:5432/meters"
    assert shown["kafka"]["bootstrap"] == "kafka-1:9092"
    assert shown["external_services"] == ["kafka", "postgres"]


def test_wrong_setting_fails_at_start_with_exit_2(tmp_path: Path) -> None:
    result = run_cli("config", "show", env={"UNIMETER_KAFKA_DEFAULT_PARTITIONS": "0"})
    assert result.returncode == 2
    assert "UNIMETER_KAFKA_DEFAULT_PARTITIONS" in result.stderr
    assert "'0'" in result.stderr


def test_migrate_against_unreachable_database_exits_non_zero() -> None:
    result = run_cli("migrate", env={"UNIMETER_DATABASE_URL":
                                     "postgresql://u:secretpw@127.0.0.1:1/none"})
    assert result.returncode == 1
    assert "cannot connect to the database" in result.stderr
    assert "unimeter services up" in result.stderr
    assert "secretpw" not in result.stderr


def test_topics_create_against_unreachable_kafka_exits_non_zero() -> None:
    result = run_cli("topics", "create", env={"UNIMETER_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.returncode == 1
    assert "Kafka is not reachable" in result.stderr


@pytest.mark.parametrize("module", sorted(_command_modules().values()))
def test_every_command_module_defines_a_documented_command(module: str) -> None:
    import importlib

    import click

    command = importlib.import_module(module).command
    assert isinstance(command, click.Command)
    assert (command.help or "").strip(), f"{module} needs a docstring on its command"


def test_simulate_writes_its_time_line_for_the_fep(tmp_path: Path) -> None:
    """``--clock-file``: the time line the FEP stamps reception by (``fep.clock_file``)."""
    import socket
    import time
    from datetime import datetime, timedelta

    from schemas.timeline import TimeLine

    with socket.socket() as sock:  # a port nobody listens on: the fleet just retries
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clock_file = tmp_path / "clock.json"
    before = time.time()
    result = run_cli("simulate", "--meters", "4", "--kinds", "dtu", "--speed", "600",
                     "--duration", "1", "--start", "2026-05-01T00:00:00+08:00",
                     "--dtu-port", str(port), "--log", str(tmp_path / "sim.jsonl"),
                     "--clock-file", str(clock_file))
    assert result.returncode == 0, result.stderr[-2000:]
    line = TimeLine.from_json(clock_file.read_text(encoding="utf-8"))
    assert line.speed == 600
    assert line.start == datetime.fromisoformat("2026-05-01T00:00:00+08:00")
    assert before < line.anchor < time.time()  # the wall clock, when the fleet started
    assert line.at(line.anchor + 1) - line.start == timedelta(minutes=10)
    # a manual clock has no time line
    result = run_cli("simulate", "--meters", "4", "--speed", "0", "--duration", "0",
                     "--clock-file", str(tmp_path / "manual.json"))
    assert result.returncode == 2
    assert "--clock-file" in result.stderr
    assert not (tmp_path / "manual.json").exists()
