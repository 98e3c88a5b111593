"""The short fault run (CI): a small fleet delivering every upload 1–5 times out of order, one
``kill -9`` of the FEP, the pipeline worker, the sink, PostgreSQL and Kafka, and short outages
of Kafka and PostgreSQL — on private instances — and the oracle finds nothing lost, nothing
stored twice, and consumption and charges equal to the recomputation from the log.

The full run (100,000 readings, 60 s outages) is ``make faults``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unimeter.faults.report import format_verdict, write_report
from unimeter.faults.run import (
    PROCESS_KINDS,
    SERVICE_KINDS,
    FaultRunSpec,
    remove_run_dir,
    run_faults,
)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_short_fault_run_loses_nothing_and_doubles_nothing(config: Any, tmp_path: Path) -> None:
    spec = FaultRunSpec.short()
    report = run_faults(config, spec, tmp_path, progress=print)
    remove_run_dir(report)  # the private services' data (the verdict is computed)
    verdict = report.pop("verdict")
    write_report(tmp_path / "faults.json", verdict, report)
    print(format_verdict(verdict))
    injected = {(f["kind"], f["target"]) for f in report["faults"]}
    assert injected == ({("kill", t) for t in (*PROCESS_KINDS, *SERVICE_KINDS)}
                        | {("outage", t) for t in SERVICE_KINDS}
                        | {("kill-recovering", t) for t in PROCESS_KINDS})
    again = [f for f in report["faults"] if f["kind"] == "kill-recovering"]
    assert all(f["detail"].startswith("killed again") for f in again), again
    assert all(f["restored_s"] is not None for f in report["faults"]), report["faults"]
    assert "timeout" not in report["drained"], report["drained"]
    assert verdict.sent >= spec.readings
    assert verdict.acknowledged > 0.9 * verdict.sent
    assert verdict.lost == 0, verdict.examples
    assert verdict.duplicated == 0, verdict.examples
    assert verdict.wrong == 0, verdict.examples
    assert verdict.billing["stored_charges"] > 0
    assert verdict.billing["misrounded_charges"] == 0, verdict.examples
    assert verdict.totals_equal, (verdict.consumption, verdict.billing, verdict.examples)
    assert json.loads((tmp_path / "faults.json").read_text())["verdict"]["passed"] is True
