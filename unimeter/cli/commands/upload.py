"""``unimeter upload FILE``: import a handheld or offline-DTU upload (CSV, JSON, hex dump).

The file is validated completely first; one bad line rejects the whole file, and the report
lists every rejected line with its number and reason (``--report`` writes it as JSON). A valid
file is published in one Kafka transaction and recorded by its SHA-256, so importing the same
file again is refused unless ``--force``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path

import click

from schemas.errors import UnimeterError
from unimeter.config import load_config


@click.command(name="upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "hex"]), default=None,
              help="File format (default: from the extension).")
@click.option("--source", type=click.Choice(["handheld", "offline_dtu", "manual"]),
              default="handheld", show_default=True, help="Where the readings come from.")
@click.option("--protocol", default=None, help="Protocol of hex lines that name none.")
@click.option("--service-point", default="", help="Service point the devices belong to "
                                                  "(admission check).")
@click.option("--by", "imported_by", default=None, help="Who imports (default: OS user).")
@click.option("--dry-run", is_flag=True, help="Validate and report only.")
@click.option("--force", is_flag=True, help="Import even if this file was imported before.")
@click.option("--no-ledger", is_flag=True, help="Skip the ledger check (meters by meter_id "
                                                "only; for commissioning).")
@click.option("--report", "report_path", type=click.Path(path_type=Path), default=None,
              help="Write the validation report (JSON) here.")
def command(file: Path, fmt: str | None, source: str, protocol: str | None, service_point: str,
            imported_by: str | None, dry_run: bool, force: bool, no_ledger: bool,
            report_path: Path | None) -> int:
    """Import an upload file into readings.raw, all or nothing."""
    return asyncio.run(_upload(file, fmt, source, protocol, service_point,
                               imported_by or getpass.getuser(), dry_run, force, no_ledger,
                               report_path))


async def _upload(file: Path, fmt: str | None, source: str, protocol: str | None,
                  service_point: str, imported_by: str, dry_run: bool, force: bool,
                  no_ledger: bool, report_path: Path | None) -> int:
    from ingest.files import find_import, parse_upload, publish_upload, record_import
    from ingest.ledger import LedgerView
    from ingest.protocols import stack_for_protocol

    config = load_config()
    ledger = None
    if not no_ledger:
        ledger = LedgerView()
        click.echo("reading the ledger (ledger.meters) …")
        await ledger.follow(config.kafka, client_id=f"{config.kafka.client_id}-upload",
                            ready_timeout_s=30)
        await ledger.stop()
        click.echo(f"  {len(ledger.meters):,} meters known")
    result = parse_upload(file, fmt=fmt, ledger=ledger, stack_for=stack_for_protocol,
                          default_protocol=protocol, service_point=service_point, source=source,
                          timezone=config.utility.timezone, producer=f"upload-{imported_by}")
    report = result.report()
    if report_path is not None:
        await asyncio.to_thread(report_path.write_text, json.dumps(report, indent=2))
    click.echo(f"{file.name}: {result.lines} line(s), {len(result.readings)} reading(s), "
               f"{len(result.rejected)} rejected")
    for rejected in result.rejected[:200]:
        click.echo(f"  line {rejected.line}: {rejected.reason}")
    if len(result.rejected) > 200:
        click.echo(f"  … {len(result.rejected) - 200} more (see --report)")
    if result.rejected:
        click.secho("nothing imported: fix every rejected line and upload the file again",
                    fg="red", err=True)
        return 1
    if not result.readings:
        click.secho("nothing to import: the file holds no readings", fg="red", err=True)
        return 1
    if dry_run:
        click.echo("dry run: valid, nothing imported")
        return 0
    previous = None
    try:
        previous = await find_import(config.database, result.sha256)
    except Exception as exc:  # the record is a convenience; Kafka is the store
        click.echo(f"  (cannot check earlier imports: {exc})")
    if previous and not force:
        click.secho(f"this file was imported on {previous['imported_at']} by "
                    f"{previous['imported_by']} ({previous['readings']} readings); use --force "
                    "to import it again", fg="yellow", err=True)
        return 1

    async def record(res: object, import_id: str) -> None:
        try:
            await record_import(config.database, result, import_id, source=source,
                                imported_by=imported_by)
        except Exception as exc:
            click.echo(f"  (imported, but not recorded in ops.file_imports: {exc})")

    try:
        import_id = await publish_upload(result, config.kafka, producer=f"upload-{imported_by}",
                                         record=record)
    except UnimeterError:
        raise
    click.echo(f"imported {len(result.readings)} reading(s) in one transaction "
               f"(import {import_id})")
    return 0
