"""``unimeter bench``: run the benchmarks and write bench/results (JSON + a markdown table)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import tempfile
from pathlib import Path

import click

from unimeter.config import load_config


def _bench_package() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not (root / "bench" / "_harness.py").exists():
        raise click.ClickException("the benchmarks live in the source checkout's bench/ folder; "
                                   "run `unimeter bench` from a checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root / "bench"


@click.command(name="bench")
@click.option("--only", multiple=True, help="Run only these modules of bench/ (repeatable).")
@click.option("--quick", is_flag=True, help="Fewer repetitions and smaller data sets.")
@click.option("--results", type=click.Path(path_type=Path), default=None,
              help="Folder for the results (default: bench/results).")
def command(only: tuple[str, ...], quick: bool, results: Path | None) -> None:
    """Run every benchmark of bench/; each reports a ratio against a same-run baseline."""
    folder = _bench_package()
    from bench._harness import BenchContext, BenchResult, write_results

    modules = [m.name for m in pkgutil.iter_modules([str(folder)]) if not m.name.startswith("_")]
    if only:
        unknown = set(only) - set(modules)
        if unknown:
            raise click.ClickException(f"unknown benchmark module(s) {sorted(unknown)}; "
                                       f"known: {sorted(modules)}")
        modules = [m for m in modules if m in only]
    all_results: list[BenchResult] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="unimeter-bench-") as scratch:
        ctx = BenchContext(config=load_config(), quick=quick, scratch=Path(scratch),
                           progress=lambda m: click.echo(f"    {m}"))
        for name in modules:
            module = importlib.import_module(f"bench.{name}")
            for bench in getattr(module, "BENCHMARKS", []):
                click.echo(f"== {name}.{bench.__name__}")
                try:
                    produced = list(bench(ctx))
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    # One broken benchmark must not cost the figures of the others: it is
                    # recorded as failed (with why) and the run goes on.
                    failed.append(f"{name}.{bench.__name__}")
                    click.echo(f"   FAILED: {exc!r}", err=True)
                    produced = [BenchResult(name, f"{bench.__name__} (failed)", float("nan"),
                                            "", passed=False, notes=repr(exc)[:500])]
                for result in produced:
                    all_results.append(result)
                    ratio = f"  ratio {result.ratio:.2f}" if result.ratio is not None else ""
                    click.echo(f"   {result.name}: {result.value:,.1f} {result.unit}{ratio}")
    json_path, md_path = write_results(all_results, results or folder / "results")
    click.echo(f"results: {json_path}\ntable:   {md_path}")
    if failed:
        raise click.ClickException(f"{len(failed)} benchmark(s) failed: {', '.join(failed)} "
                                   "(their rows in the table say why)")
