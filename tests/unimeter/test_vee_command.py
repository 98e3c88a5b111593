"""`unimeter vee run|check|rules` — the offline run a utility uses on exported data."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner

from unimeter.cli.main import cli

DATA = Path(__file__).parents[1] / "data" / "vee"
RULES = Path(__file__).parents[2] / "vee" / "rulesets" / "default.yaml"


def test_vee_run_writes_quality_method_flags_and_the_original_value(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["vee", "run", "--rules", str(RULES), "--input",
                                      str(DATA / "export.csv"), "--output", str(out)])
    assert result.exit_code == 1, result.output  # two rows of the export are unusable
    assert "2 rows refused" in result.output
    rows = list(csv.DictReader(out.open()))
    assert {"quality", "method", "flags", "original_value"} <= set(rows[0])
    spike = next(r for r in rows if r["original_value"] == "1045.000")
    assert spike["quality"] == "estimated"
    assert "spike" in spike["flags"].split(";")
    assert spike["value"] != "1045.000"
    gap = [r for r in rows if r["meter_id"] == "GM-0001" and "missing" in r["flags"]]
    assert len(gap) == 2
    wrap = next(r for r in rows if r["meter_id"] == "GM-0002" and r["value"] == "2.300")
    assert wrap["flags"] == "rollover"
    assert wrap["consumption"] == "3.800"
    assert wrap["ts"] == "2026-07-06T09:00:00+08:00"  # written in the rule set's time zone
    rejects = list(csv.DictReader((tmp_path / "out.rejects.csv").open()))
    assert [(r["line"], r["column"]) for r in rejects] == [("14", "ts"), ("15", "ts")]
    assert "no UTC offset" in rejects[1]["reason"]


def test_vee_run_refuses_a_file_without_the_required_header(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("meter,time,val\nM,2026-01-01T00:00:00Z,1\n")
    result = CliRunner().invoke(cli, ["vee", "run", "--rules", str(RULES), "--input", str(bad),
                                      "--output", str(tmp_path / "o.csv")])
    assert result.exit_code == 1
    assert "required column missing" in str(result.exception)


def test_vee_check_and_rules() -> None:
    check = CliRunner().invoke(cli, ["vee", "check", str(RULES)])
    assert check.exit_code == 0, check.output
    assert "estimation" in check.output
    rules = CliRunner().invoke(cli, ["vee", "rules"])
    assert "spike" in rules.output
    assert "tolerance_pct=200" in rules.output
