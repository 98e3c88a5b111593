"""Shared benchmark machinery: timing, CPU accounting, results as JSON and markdown."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["BenchContext", "BenchResult", "cpu_seconds", "machine", "process_cpu_seconds", "rate",
           "write_results"]


@dataclass
class BenchContext:
    """What a benchmark may use: the effective config, a quick flag, a scratch directory."""

    config: Any
    quick: bool
    scratch: Path
    progress: Callable[[str], None] = print


@dataclass
class BenchResult:
    component: str
    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    passed: bool | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.baseline_value:
            return None
        return self.value / self.baseline_value


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, its waited-for children included) of process ``pid`` so
    far, from ``/proc``; 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rate(fn: Callable[[], int], *, repeat: int = 5, min_time: float = 0.2) -> float:
    """Items per second of ``fn`` (which returns how many items it processed): the median of
    ``repeat`` runs, each run at least ``min_time`` seconds long."""
    results = []
    for _ in range(repeat):
        done, started = 0, time.perf_counter()
        while True:
            done += fn()
            elapsed = time.perf_counter() - started
            if elapsed >= min_time:
                break
        results.append(done / elapsed)
    return statistics.median(results)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_results(results: list[BenchResult], folder: Path) -> tuple[Path, Path]:
    """``bench/results/<stamp>.json`` + ``latest.json`` and a markdown table ``latest.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc: dict[str, Any] = {"at": stamp, "machine": machine(),
           "results": [{**asdict(r), "ratio": r.ratio} for r in results]}
    path = folder / f"{stamp}.json"
    path.write_text(json.dumps(doc, indent=2, default=str))
    (folder / "latest.json").write_text(json.dumps(doc, indent=2, default=str))
    lines = [f"# Benchmarks — {stamp}", "",
             f"Machine: {doc['machine']['processor']}, {doc['machine']['cpu_count']} cores, "
             f"Python {doc['machine']['python']}", "",
             "| component | benchmark | value | baseline | ratio | target | pass |",
             "|---|---|---:|---|---:|---|:---:|"]
    for r in results:
        base = f"{r.baseline_name}: {r.baseline_value:,.0f}" if r.baseline_value else ""
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        ok = {True: "yes", False: "**no**", None: ""}[r.passed]
        lines.append(f"| {r.component} | {r.name} | {r.value:,.1f} {r.unit} | {base} | "
                     f"{ratio} | {r.target or ''} | {ok} |")
    md = folder / "latest.md"
    md.write_text("\n".join(lines) + "\n")
    return path, md
