"""``unimeter bill``: price a usage CSV against a tariff file and print the charges.

A utility checks a tariff file against bills it knows: every row is priced by the billing
engine the stream uses (tier, unit price, amount per segment), then totals per account and
overall. Rows with an ``expected_amount`` that differs are flagged and the exit status is 1.
The formats are documented in ``docs/tariff-file.md`` and :mod:`billing.offline`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import click

from billing.money import to_decimal
from billing.offline import OfflineRun, bill_usage, parse_usage, segment_label
from billing.tariff_file import load_tariff_file
from unimeter.config import load_config


def _opening(values: tuple[str, ...]) -> dict[str, Decimal]:
    out = {}
    for item in values:
        account_id, sep, volume = item.partition("=")
        try:
            if not sep or not account_id:
                raise ValueError(item)
            out[account_id] = to_decimal(volume)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not ACCOUNT=VOLUME",
                                     param_hint="--cycle-volume") from None
    return out


@click.command(name="bill")
@click.option("--tariff", "tariff_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tariff file (YAML, see docs/tariff-file.md).")
@click.option("--usage", "usage_file", required=True, type=click.File("r", encoding="utf-8"),
              help="Usage CSV: account_id,ts,volume[,start,meter_id,tariff_id,"
                   "expected_amount]; '-' reads standard input.")
@click.option("--tariff-id", default=None,
              help="Tariff of accounts the tariff file does not list (default: its only one).")
@click.option("--cycle-volume", multiple=True, metavar="ACCOUNT=VOLUME",
              help="Volume the account already used in its tier cycle (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text",
              show_default=True, help="text for people, csv one line per segment, json lines.")
def command(tariff_path: Path, usage_file: TextIO, tariff_id: str | None,
            cycle_volume: tuple[str, ...], fmt: str) -> None:
    """Price a usage CSV against a tariff file: per-row charges and totals."""
    config = load_config()
    tariffs = load_tariff_file(tariff_path, default_timezone=config.utility.timezone)
    rows = parse_usage(usage_file, tariffs.timezone, source=usage_file.name)
    run = bill_usage(tariffs, rows, default_tariff_id=tariff_id,
                     opening_cycle_volumes=_opening(cycle_volume))
    {"text": _text, "csv": _csv, "json": _json}[fmt](run, sys.stdout)
    if run.mismatches:
        lines = ", ".join(str(r.row.line) for r in run.mismatches)
        click.echo(f"{len(run.mismatches)} row(s) differ from expected_amount (lines {lines})",
                   err=True)
        sys.exit(1)


def _local(run: OfflineRun, ts: Any) -> str:
    return str(ts.astimezone(run.timezone).isoformat(timespec="seconds"))


def _text(run: OfflineRun, out: TextIO) -> None:
    w = out.write
    w(f"{'line':>5}  {'account':<12} {'ts':<25} {'volume':>11}  {'segment':<26}"
      f"{'unit price':>11} {'amount':>12}\n")
    for result in run.results:
        row, charge = result.row, result.charge
        w(f"{row.line:>5}  {row.account_id:<12} {_local(run, row.ts):<25} {row.volume:>11}\n")
        for seg in charge.segments:
            w(f"{'':>5}  {'':<12} {'':<25} {seg.volume:>11}  {segment_label(seg):<26}"
              f"{seg.unit_price:>11} {seg.amount:>12}\n")
        check = {None: "", True: "  ok", False: f"  EXPECTED {row.expected_amount}"}
        w(f"{'':>5}  {'':<12} {'':<25} {'':>11}  {'row total':<26}{'':>11} "
          f"{charge.amount:>12}{check[result.matches]}\n")
    w("\nTotals\n")
    for account_id, totals in sorted(run.totals.items()):
        w(f"  {account_id:<12} {totals.rows:>5} rows  volume {totals.volume:>12}  "
          f"amount {totals.amount:>12}\n")
        for (tier, component, unit), (volume, amount) in sorted(totals.by_tier.items()):
            label = f"tier {tier}" + ("" if component == "total" else f" {component}")
            w(f"  {'':<12} {label:<24} {volume:>12} × {unit:<8} = {amount:>12}\n")
    w(f"  {'TOTAL':<12} {len(run.results):>5} rows  volume {run.volume:>12}  "
      f"amount {run.amount:>12}\n")


def _csv(run: OfflineRun, out: TextIO) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["line", "account_id", "meter_id", "ts", "volume", "tier", "component",
                     "period", "tariff_id", "tariff_version", "segment_volume", "unit_price",
                     "amount", "row_amount", "expected_amount", "matches"])
    for result in run.results:
        row, charge = result.row, result.charge
        for seg in charge.segments or ():
            writer.writerow([row.line, row.account_id, charge.meter_id, _local(run, row.ts),
                             row.volume, seg.tier, seg.component, seg.period, seg.tariff_id,
                             seg.tariff_version, seg.volume, seg.unit_price, seg.amount,
                             charge.amount, row.expected_amount or "",
                             "" if result.matches is None else str(result.matches).lower()])
    out.write(buffer.getvalue())


def _json(run: OfflineRun, out: TextIO) -> None:
    for result in run.results:
        row, charge = result.row, result.charge
        out.write(json.dumps({
            "line": row.line, "account_id": row.account_id, "meter_id": charge.meter_id,
            "ts": _local(run, row.ts), "volume": str(row.volume),
            "amount": str(charge.amount), "cycle_id": charge.cycle_id,
            "cycle_volume_after": str(charge.cycle_volume_after),
            "segments": [{"tier": s.tier, "component": s.component, "period": s.period,
                          "tariff_id": s.tariff_id, "tariff_version": s.tariff_version,
                          "volume": str(s.volume), "unit_price": str(s.unit_price),
                          "amount": str(s.amount)} for s in charge.segments],
            "expected_amount": None if row.expected_amount is None else str(row.expected_amount),
            "matches": result.matches}) + "\n")
    out.write(json.dumps({"totals": {a: {"rows": t.rows, "volume": str(t.volume),
                                         "amount": str(t.amount)}
                                     for a, t in sorted(run.totals.items())},
                          "volume": str(run.volume), "amount": str(run.amount)}) + "\n")
