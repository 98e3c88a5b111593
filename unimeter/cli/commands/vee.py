"""``unimeter vee``: try VEE rules on exported data, re-validate stored data, data-quality reports.

``unimeter vee run --rules FILE --input IN.csv --output OUT.csv`` validates, estimates and
flags a CSV export (``meter_id,ts,register,value[,unit,status]``) exactly as the stream
would, and writes each value with ``quality,method,flags`` (the rule ids that fired) and
the original value beside any estimate. Rows it cannot read go to ``OUT.rejects.csv``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from schemas.errors import UnimeterError
from vee.groups import default_rules_path, load_rule_set


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
        written = write_csv(result.readings, fh, zone=ruleset.calendar.zone)
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


def _when(value: str, zone: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not an ISO 8601 date or time") from None
    if moment.tzinfo is None:
        from zoneinfo import ZoneInfo

        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment


@command.command(name="revalidate")
@click.option("--from", "start_text", required=True,
              help="Start (ISO 8601; a date or a time without offset is in the utility's zone).")
@click.option("--to", "end_text", required=True, help="End, exclusive (same forms).")
@click.option("--group", default=None, help="Only meters whose validation group is this.")
@click.option("--meter", "meters", multiple=True, help="Only these meters (repeatable).")
@click.option("--rules", "rules_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Rule set (default: pipeline.vee_rules or the shipped one).")
@click.option("--dry-run", is_flag=True, help="Count what would change; publish nothing.")
@click.option("--initial-load", is_flag=True, help="Use the initial-load groups.")
def revalidate_command(start_text: str, end_text: str, group: str | None,
                       meters: tuple[str, ...], rules_path: Path | None, dry_run: bool,
                       initial_load: bool) -> None:
    """Re-validate stored raw readings of a period and publish the values that change, as
    new versions, to readings.validated (the sink stores them)."""
    from pipeline.revalidate import revalidate
    from pipeline.settings import PipelineSettings
    from schemas.settings import load_settings
    from unimeter.config import load_config

    config = load_config()
    zone = config.utility.timezone
    start, end = _when(start_text, zone), _when(end_text, zone)
    if end <= start:
        raise click.BadParameter("--to must be after --from")
    settings = load_settings(PipelineSettings)
    ruleset = load_rule_set(rules_path or settings.vee_rules or default_rules_path(),
                            timezone=zone)
    if group is not None and group not in ruleset.groups:
        raise click.BadParameter(f"unknown group '{group}' (known: "
                                 f"{', '.join(sorted(ruleset.groups))})")
    report = revalidate(config.database, config.kafka, ruleset, start=start, end=end,
                        group=group, meter_ids=list(meters) or None,
                        context_days=config.utility.late_data_days, dry_run=dry_run,
                        initial_load=initial_load, now=datetime.now(UTC),
                        progress=lambda m: click.echo(f"  {m}"))
    verb = "would publish" if dry_run else "published"
    click.echo(f"{report.meters} meters, {report.raw_readings} raw readings, "
               f"{report.compared} values compared: {report.new_versions} changed, "
               f"{verb} {report.new_versions if dry_run else report.published} new versions")


@command.command(name="report")
@click.option("--day", "day_text", default=None,
              help="Local day (YYYY-MM-DD, default: yesterday in the utility's zone).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("dq"), show_default=True,
              help="Report folder: great-expectations project, Data Docs and JSON reports.")
@click.option("--group", "groups", multiple=True, help="Only these VEE groups (repeatable).")
def report_command(day_text: str | None, out_dir: Path, groups: tuple[str, ...]) -> None:
    """Daily data-quality report of stored readings per meter group (JSON and HTML)."""
    from datetime import date, timedelta
    from zoneinfo import ZoneInfo

    import psycopg

    from pipeline.quality_report import daily_report
    from unimeter.config import load_config

    config = load_config()
    zone = config.utility.timezone
    day = (date.fromisoformat(day_text) if day_text
           else datetime.now(ZoneInfo(zone)).date() - timedelta(days=1))
    with psycopg.connect(config.database.conninfo("pipeline"), autocommit=True) as conn:
        report = daily_report(conn, day, out_dir, timezone=zone, groups=list(groups) or None)
    for g in report.groups:
        failed = [e["expectation"] for e in g.expectations if not e["success"]]
        state = "ok" if g.success else f"FAILED: {', '.join(failed)}"
        click.echo(f"  {g.group:<20} {g.readings:>8} readings {g.meters:>6} meters  {state}")
    click.echo(f"JSON: {report.json_path}")
    if report.html_index is not None:
        click.echo(f"HTML: {report.html_index}")
    if not report.success:
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

