"""The fault run's pieces that need no services: its configuration file and ledger."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.settings import FepSettings
from pipeline.settings import PipelineSettings
from schemas.messages import LedgerMeter
from schemas.settings import KafkaSettings, load_settings
from sinks.settings import SinkSettings
from unimeter.faults.ledger import build_ledger, read_ledger
from unimeter.faults.run import (
    SOURCE_ROOT,
    VEE_RULES,
    FaultRunSpec,
    _process_specs,
    _write_config,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_the_processes_read_the_run_configuration(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="faults.")
    config = tmp_path / "unimeter.yaml"
    _write_config(config, kafka, "postgresql://u:p@127.0.0.1:2/unimeter", 4321, tmp_path, 3)
    monkeypatch.setenv("UNIMETER_CONFIG", str(config))
    fep = load_settings(FepSettings)
    assert fep.service_points["dtu-cjt188"].port == 4321
    assert fep.spool_dir == tmp_path / "spool"
    pipeline = load_settings(PipelineSettings)
    assert pipeline.vee_rules == VEE_RULES
    assert VEE_RULES.exists()
    assert load_settings(SinkSettings).group_id == "faults-sink"
    loaded = load_settings(KafkaSettings)
    assert (loaded.topic_prefix, loaded.default_partitions) == ("faults.", 3)


def test_the_fault_run_ledger_round_trips_through_its_file(tmp_path: Path) -> None:
    meters = [LedgerMeter(meter_id=m, status="active", medium=medium, updated_at=T0)
              for m, medium in (("G1", "gas"), ("W1", "water"), ("G2", "gas"))]
    ledger = build_ledger(meters, effective_from=T0)
    assert {t.tariff_id for t in ledger.tariffs} == {"FAULTS-GAS", "FAULTS-WATER"}
    assert ledger.meter_accounts == {"G1": "ACC-G1", "W1": "ACC-W1", "G2": "ACC-G2"}
    ledger.write(tmp_path / "ledger.jsonl")
    again = read_ledger(tmp_path / "ledger.jsonl")
    assert again.accounts == ledger.accounts
    assert again.tariffs == ledger.tariffs
    assert again.meters == ledger.meters


def test_the_short_run_injects_every_fault_kind_of_the_full_one() -> None:
    full, short = FaultRunSpec(), FaultRunSpec.short()
    assert set(short.kills) == set(full.kills) == {"fep", "pipeline", "sink", "postgres",
                                                   "kafka"}
    assert set(short.outages) == set(full.outages) == {"kafka", "postgres"}
    assert set(short.recovery_kills) == set(full.recovery_kills) == {"fep", "pipeline", "sink"}
    assert full.readings >= 100_000
    assert full.outage_s == 60
    assert full.copies == short.copies == (1, 5)


def test_the_processes_run_the_code_the_run_is_imported_from(tmp_path: Path) -> None:
    """They start in the run directory: without the source root on their path, ``python -m
    unimeter`` there imports whatever checkout the editable install points at (another
    worktree's code under test)."""
    specs = _process_specs(tmp_path / "unimeter.yaml", tmp_path, 4321)
    assert {s.name for s in specs} == {"fep", "pipeline", "sink"}
    for spec in specs:
        assert spec.cwd == tmp_path
        found = subprocess.run(
            [spec.argv[0], "-c", "import unimeter, pipeline; print(unimeter.__file__); "
                                 "print(pipeline.__file__)"],
            env={**os.environ, **spec.env}, cwd=spec.cwd, capture_output=True, text=True,
            check=True).stdout.split()
        assert [Path(f).resolve().parents[1] for f in found] == [SOURCE_ROOT, SOURCE_ROOT]


def test_both_runs_deliver_a_share_of_uploads_past_the_same_meters_next_report() -> None:
    for spec in (FaultRunSpec(), FaultRunSpec.short()):
        assert spec.late > 0
        assert spec.late_after > spec.meters_per_dtu  # a DTU's meters report together
