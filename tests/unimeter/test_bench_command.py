"""``unimeter bench``: one failing benchmark is recorded as failed and the others still report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from unimeter.cli.commands.bench import _bench_package, command


def test_a_failing_benchmark_does_not_cost_the_others(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _bench_package()  # puts the checkout's bench/ on the path
    import bench.codec as codec_bench
    from bench._harness import BenchContext, BenchResult

    def broken(ctx: BenchContext) -> list[BenchResult]:
        raise RuntimeError("the broker went away")

    def fine(ctx: BenchContext) -> list[BenchResult]:
        return [BenchResult("test", "fine", 1.0, "x/s")]

    monkeypatch.setattr(codec_bench, "BENCHMARKS", [broken, fine])
    result = CliRunner().invoke(command, ["--only", "codec", "--results", str(tmp_path)])
    assert result.exit_code != 0
    assert "codec.broken" in result.output
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert [r["name"] for r in doc["results"]] == ["broken (failed)", "fine"]
    assert doc["results"][0]["passed"] is False
    assert "the broker went away" in doc["results"][0]["notes"]
    assert "broken (failed)" in (tmp_path / "latest.md").read_text()
