"""``unimeter export``: write validated readings or aggregates to Parquet, one file per local day.

Files land in ``OUT/<data set>/day=YYYY-MM-DD/`` (Hive layout: pyarrow, pandas, DuckDB and
Spark read the folder as one partitioned data set). Exporting a day again replaces its file.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from unimeter.config import load_config


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date (YYYY-MM-DD)") from None


@click.command(name="export")
@click.argument("datasets", nargs=-1, required=True, metavar="DATASET...")
@click.option("--from", "start", required=True, help="First local day (YYYY-MM-DD).")
@click.option("--to", "end", default=None, help="Last local day, inclusive (default: --from).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("export"),
              show_default=True, help="Folder of the data sets.")
@click.option("--analyst", is_flag=True,
              help="Only what the analyst role may see (no account ids), read as that role.")
def command(datasets: tuple[str, ...], start: str, end: str | None, out: Path,
            analyst: bool) -> None:
    """Export DATASET... (validated_readings, raw_readings, <hierarchy>_<level>, or all)."""
    from sinks.parquet import DATASETS, export_parquet

    names = list(DATASETS) if datasets == ("all",) else list(datasets)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise click.BadParameter(f"unknown data set(s) {', '.join(unknown)}; known: all, "
                                 f"{', '.join(DATASETS)}", param_hint="DATASET")
    if analyst and datasets == ("all",):
        names = [n for n in names if DATASETS[n].analyst_relation is not None]
    config = load_config()
    first = _day(start)
    last = _day(end) if end else first
    for name in names:
        report = export_parquet(config.database, name, first, last, out,
                                timezone=config.utility.timezone, analyst=analyst,
                                progress=lambda m: click.echo(f"  {m}"))
        click.echo(f"{name}: {report.rows:,} rows in {len(report.files)} file(s) over "
                   f"{report.days} day(s), {report.duration_s:.1f} s -> {out / name}")
