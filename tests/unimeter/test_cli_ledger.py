"""``unimeter ledger`` end to end through the real CLI, against a per-test database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugins.services import DbHandle
from tests.unimeter.test_cli import run_cli

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "data" / "ledger"


def test_import_export_and_topology_commands(database: DbHandle, tmp_path: Path) -> None:
    env = {"UNIMETER_DATABASE_URL": database.settings.url}
    first = run_cli("ledger", "import", str(DATA / "demo"), env=env, keep_env=True)
    assert first.returncode == 0, first.stderr
    assert "meters" in first.stdout
    again = run_cli("ledger", "import", str(DATA / "demo"), env=env, keep_env=True)
    assert again.returncode == 0, again.stderr
    assert "changed 0 row(s)" in again.stdout

    problems = tmp_path / "problems.csv"
    bad = run_cli("ledger", "import", str(DATA / "bad" / "meters.csv"), "--problems",
                  str(problems), env=env, keep_env=True)
    assert bad.returncode == 1
    assert "meters.csv:9: meters 'GM-0105' [account_id]: unknown account 'A9999'" in bad.stderr
    assert "nothing was changed" in bad.stderr
    assert len(problems.read_text(encoding="utf-8").splitlines()) == 12  # header + 11

    exported = run_cli("ledger", "export", "--kind", "billing", "-o", str(tmp_path / "x.xlsx"),
                       env=env, keep_env=True)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "x.xlsx").stat().st_size > 0

    path = run_cli("ledger", "topology", "path", "GM-0002", "--json", env=env, keep_env=True)
    assert path.returncode == 0, path.stderr
    assert json.loads(path.stdout)["link"]["service_point"] == "SP-376"
    changes = run_cli("ledger", "history", "GM-0002", env=env, keep_env=True)
    assert changes.returncode == 0, changes.stderr
    assert "insert" in changes.stdout
    assert "import " in changes.stdout  # the reason names the imported files
    missing = run_cli("ledger", "topology", "under", "NOPE", env=env, keep_env=True)
    assert missing.returncode == 1
    assert "no device 'NOPE'" in missing.stderr


def test_sync_exception_commands(database: DbHandle) -> None:
    env = {"UNIMETER_DATABASE_URL": database.settings.url}
    with database.connect("api") as conn:
        conn.execute("INSERT INTO ledger.sync_exceptions (kind, topic, entity, entity_id, "
                     "reason) VALUES ('conflict', 'sync.in.meters', 'meter', 'GM-1', 'stale')")
    listed = run_cli("sync", "exceptions", env=env, keep_env=True)
    assert listed.returncode == 0, listed.stderr
    assert "conflict" in listed.stdout
    assert "1 exception(s)" in listed.stdout
    done = run_cli("sync", "resolve", "1", "--note", "resent", env=env, keep_env=True)
    assert done.returncode == 0, done.stderr
    assert "0 exception(s)" in run_cli("sync", "exceptions", env=env, keep_env=True).stdout
    missing = run_cli("sync", "resolve", "99", "--note", "x", env=env, keep_env=True)
    assert missing.returncode == 1
    assert "no sync exception #99" in missing.stderr
