"""``unimeter faults check | run``: the fault-test oracle, and the fault run that feeds it.

``check`` compares a simulator log with what a database stored (raw and validated readings,
charges) and prints the verdict: per class (ok, lost, duplicated, mismatched, unconfirmed,
unexpected) and the consumption and billing recomputations. Exit status 1 when it fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group(name="faults")
def command() -> None:
    """Fault tests: break things on purpose, then prove nothing was lost or doubled."""


@command.command()
@click.option("--log", "log_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="The simulator's sent/acknowledged log (unimeter simulate --log).")
@click.option("--ledger", "ledger_path", type=click.Path(exists=True, path_type=Path),
              default=None, help="The accounts and tariffs billed with (ledger.jsonl of a "
                                 "fault run); without it billing is not recomputed.")
@click.option("--database-url", default=None,
              help="Where the rows are (default: the configured database).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the verdict as JSON here.")
def check(log_path: Path, ledger_path: Path | None, database_url: str | None,
          json_path: Path | None) -> None:
    """Classify every reading of LOG against the stored rows and recompute the totals."""
    from simulator.log import read_log
    from unimeter.config import load_config
    from unimeter.faults.ledger import read_ledger
    from unimeter.faults.oracle import judge
    from unimeter.faults.report import format_verdict, write_report
    from unimeter.faults.stored import read_stored_rows

    config = load_config()
    log = read_log(log_path)
    if not log.meters:
        raise click.ClickException(f"{log_path} names no meter: is it a simulator log "
                                   "(unimeter-sim-log, written with --log)?")
    rows = read_stored_rows(database_url or config.database.url, log.meters)
    kwargs: dict[str, object] = {}
    if ledger_path is not None:
        ledger = read_ledger(ledger_path)
        kwargs = {"accounts": ledger.accounts, "meter_accounts": ledger.meter_accounts,
                  "tariffs": ledger.tariffs}
    verdict = judge(log, rows, timezone=config.utility.timezone, **kwargs)  # type: ignore[arg-type]
    click.echo(format_verdict(verdict))
    if json_path is not None:
        write_report(json_path, verdict, {"log": str(log_path)})
    sys.exit(0 if verdict.passed else 1)


@command.command()
@click.option("--short", is_flag=True, help="The CI version: small fleet, short outages.")
@click.option("--readings", type=int, default=None, help="Readings the fleet sends at least "
                                                         "(full run: 100,000).")
@click.option("--outage-s", type=float, default=None, help="How long Kafka and PostgreSQL are "
                                                           "kept down (full run: 60).")
@click.option("--speed", type=float, default=None, help="Simulated seconds per second.")
@click.option("--seed", type=int, default=None, help="Seed of the fleet and the fault plan.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path(".unimeter/faults"), show_default=True,
              help="Where the run's services, logs, simulator log and report go.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the report here (e.g. bench/results/faults.json).")
@click.option("--keep", is_flag=True, help="Keep the private services' data after a pass.")
def run(short: bool, readings: int | None, outage_s: float | None, speed: float | None,
        seed: int | None, out_dir: Path, json_path: Path | None, keep: bool) -> None:
    """Kill and cut off every component while a fleet reports; then judge with the oracle.

    Runs on private Kafka and PostgreSQL instances of its own (never the shared ones).
    """
    import dataclasses
    import signal
    from datetime import UTC, datetime

    from unimeter.config import load_config
    from unimeter.faults.report import format_verdict, write_report
    from unimeter.faults.run import FaultRunSpec, remove_run_dir, run_faults

    # SIGTERM (a CI timeout, Ctrl-C from a supervisor) unwinds like Ctrl-C, so the private
    # services and the supervised processes are stopped on the way out
    def _terminate(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        sys.exit(143)

    signal.signal(signal.SIGTERM, _terminate)
    spec = FaultRunSpec.short() if short else FaultRunSpec()
    changes = {k: v for k, v in {"readings": readings, "outage_s": outage_s, "speed": speed,
                                 "seed": seed}.items() if v is not None}
    spec = dataclasses.replace(spec, **changes)  # type: ignore[arg-type]
    out_dir = out_dir.resolve()
    report = run_faults(load_config(), spec, out_dir, progress=click.echo)
    verdict = report.pop("verdict")
    click.echo("")
    click.echo("faults injected:")
    for f in report["faults"]:
        click.echo(f"  {f['at_s']:7.1f}s  {f['kind']:<15} {f['target']:<9} back after "
                   f"{f['restored_s']}s, raw rows flowing after {f['flowing_s']}s, validated "
                   f"after {f['validated_flowing_s']}s {f['detail']}")
    click.echo(format_verdict(verdict))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = [out_dir / f"faults-{stamp}.json", *([json_path] if json_path else [])]
    for path in paths:
        write_report(path, verdict, report)
    click.echo(f"report: {', '.join(str(p) for p in paths)}")
    if verdict.passed and not keep:
        remove_run_dir(report)
    sys.exit(0 if verdict.passed else 1)
