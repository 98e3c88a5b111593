"""``unimeter vee``: try VEE rules on exported data, re-validate stored data, data-quality reports.

``unimeter vee run --rules FILE --input IN.csv --output OUT.csv`` validates, estimates and
flags a CSV export (``meter_id,ts,register,value[,unit,status]``) exactly as the stream
would, and writes each value with ``quality,method,flags`` (the rule ids that fired) and
the original value beside any estimate. Rows it cannot read go to ``OUT.rejects.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from schemas.errors import UnimeterError
from vee.groups import load_rule_set


@click.group(name="vee")
def command() -> None:
    """Validation, estimation and editing: offline runs, re-validation, quality reports."""


@command.command(name="run")
@click.option("--rules", "rules_path", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="Rule-set YAML (see vee/rulesets/default.yaml).")
@click.option("--input", "input_path", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="CSV: meter_id,ts,register,value[,unit,status,kind,interval_s]")
@click.option("--output", "output_path", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="CSV written with quality, method, flags, original value.")
@click.option("--medium", default="gas", show_default=True,
              type=click.Choice(["gas", "water", "heat", "electricity"]),
              help="Medium of meters the rule file does not describe.")
@click.option("--timezone", default=None, help="Zone of local days (default: the rule "
                                               "set's calendar, else Asia/Shanghai).")
@click.option("--initial-load", is_flag=True,
              help="Use the initial-load groups (history-free checks) for every value.")
def run_command(rules_path: Path, input_path: Path, output_path: Path, medium: str,
                timezone: str | None, initial_load: bool) -> None:
    """Run a rule set over a CSV export and write the validated values."""
    from vee.batch import read_csv, run_batch, write_csv, write_errors
    from vee.model import MeterInfo

    ruleset = load_rule_set(rules_path, timezone=timezone)
    try:
        with input_path.open(encoding="utf-8-sig", newline="") as fh:
            readings, errors = read_csv(fh)
    except OSError as exc:
        raise UnimeterError(f"cannot read the input: {exc.strerror}", where=str(input_path),
                            hint="give an existing CSV file") from None
    if errors and errors[0].line == 1:
        raise UnimeterError(errors[0].reason, where=f"{input_path}:1",
                            hint="the first line must be a header: meter_id,ts,register,value")

    def meter_info(meter_id: str) -> MeterInfo:
        return ruleset.meter_info(meter_id, MeterInfo(meter_id=meter_id, medium=medium))

    result = run_batch(readings, ruleset, meter_info, initial_load=initial_load)
    with output_path.open("w", encoding="utf-8", newline="") as fh:
        written = write_csv(result.readings, fh)
    counts: dict[str, int] = {}
    for o in result.readings:
        counts[o.quality] = counts.get(o.quality, 0) + 1
    summary = ", ".join(f"{n} {q}" for q, n in sorted(counts.items()))
    click.echo(f"{result.inputs} values read, {written} written to {output_path} ({summary})"
               + (f"; {result.duplicates} duplicates dropped" if result.duplicates else ""))
    if errors:
        rejects = output_path.with_suffix(".rejects.csv")
        with rejects.open("w", encoding="utf-8", newline="") as fh:
            write_errors(errors, fh)
        first = errors[0]
        click.echo(f"{len(errors)} rows refused (first: line {first.line}, column "
                   f"{first.column}: {first.reason}); they are in {rejects}", err=True)
        sys.exit(1)


@command.command(name="check")
@click.argument("rules_path", type=click.Path(path_type=Path, dir_okay=False))
def check_command(rules_path: Path) -> None:
    """Check a rule-set file and print its groups."""
    ruleset = load_rule_set(rules_path)
    for group in ruleset.groups.values():
        items = [r.id for r in group.rules] or [m.id for m in group.methods]
        applies = ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in group.applies_to.items())
        click.echo(f"{group.id:<20} {group.purpose:<16} {applies or '(default)':<40} "
                   f"{' '.join(items)}")
    click.echo(f"ok: {len(ruleset.groups)} groups, {len(ruleset.meters)} meter overrides")


@command.command(name="rules")
def rules_command() -> None:
    """List the validation rules and estimation methods with their parameters."""
    from vee.registry import ESTIMATION_METHODS, VALIDATION_RULES, _load_builtins

    _load_builtins()
    registries: tuple[tuple[str, dict[str, Any]], ...] = (
        ("validation rules", VALIDATION_RULES), ("estimation methods", ESTIMATION_METHODS))
    for title, registry in registries:
        click.echo(f"{title}:")
        seen = set()
        for rule_id, cls in sorted(registry.items()):
            if cls in seen or rule_id != cls.id:
                continue
            seen.add(cls)
            params = ", ".join(f"{n}={f.default!r}" for n, f in cls.Params.model_fields.items())
            aliases = f" (also {', '.join(cls.aliases)})" if cls.aliases else ""
            doc = (cls.__doc__ or "").strip().splitlines()[0]
            click.echo(f"  {rule_id}{aliases}: {doc}")
            if params:
                click.echo(f"      {params}")

