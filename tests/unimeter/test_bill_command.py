"""``unimeter bill``: the command a utility uses to check a tariff file against known bills."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tests.billing.helpers import DATA
from unimeter.cli.main import cli


def _bill(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["bill", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def _bill_process(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Through the real entry point, whose error handler prints one line per failure."""
    return subprocess.run([sys.executable, "-m", "unimeter", "bill", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def test_worked_examples_print_tiers_prices_amounts_and_totals() -> None:
    code, out, _ = _bill("--tariff", str(DATA / "beijing_gas.yaml"), "--tariff-id",
                         "BJ-GAS-RES", "--usage", str(DATA / "usage_worked_examples.csv"))
    assert code == 0
    assert "tier 3 v3" in out
    assert "4.23" in out
    assert "507.60" in out
    assert "1845.60  ok" in out
    assert out.rstrip().splitlines()[-1].split()[-1] == "1993.95"


def test_csv_lists_every_price_component(tmp_path: Path) -> None:
    code, out, _ = _bill("--tariff", str(DATA / "beijing_water.yaml"), "--usage",
                         str(DATA / "usage_water.csv"), "--format", "csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("line,account_id")
    assert sum(1 for line in lines if ",sewage_fee," in line) == 5


def test_json_from_stdin_with_an_opening_cycle_volume() -> None:
    code, out, _ = _bill("--tariff", str(DATA / "beijing_gas.yaml"), "--tariff-id",
                         "BJ-GAS-RES", "--cycle-volume", "A=330", "--usage", "-",
                         "--format", "json", stdin="account_id,ts,volume\nA,2020-05-31,60\n")
    assert code == 0
    row, totals = (json.loads(line) for line in out.splitlines())
    assert row["amount"] == "165.40"
    assert [s["volume"] for s in row["segments"]] == ["20", "40"]
    assert totals["amount"] == "165.40"


def test_a_bill_that_differs_exits_1_and_names_the_line() -> None:
    code, out, err = _bill("--tariff", str(DATA / "beijing_gas.yaml"), "--tariff-id",
                           "BJ-GAS-RES", "--usage", "-",
                           stdin="account_id,ts,volume,expected_amount\nA,2020-05-31,5,13.04\n")
    assert code == 1
    assert "EXPECTED 13.04" in out
    assert "lines 2" in err


def test_a_broken_tariff_file_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tariffs:\n  - {tariff_id: T, effective_from: 2026-01-01, "
                   "tiers: [{upper: 10, price: 1}]}\n")
    done = _bill_process("--tariff", str(bad), "--usage", "-", stdin="account_id,ts,volume\n")
    assert done.returncode == 1
    assert "must be open" in done.stderr
    assert "tariff T v1" in done.stderr
    assert "Traceback" not in done.stderr
