"""``unimeter ledger import | export | publish | topology``: the device ledger from the shell.

Examples::

    unimeter ledger import tests/data/ledger/demo/*.csv      # all or nothing, re-runnable
    unimeter ledger import ledger.xlsx --dry-run             # what would change
    unimeter ledger export -o ledger.xlsx                    # everything, one sheet per kind
    unimeter ledger export --kind topology -o topo/          # CSV files
    unimeter ledger publish                                  # outbox -> ledger.* topics
    unimeter ledger history GM-0002                          # who changed what, and why
    unimeter ledger topology under CON-GE-01                 # everything below a concentrator
    unimeter ledger topology path GM-0002                    # head-end ... meter ... tariff
    unimeter ledger topology meters NORTH-GE-B1              # the meters of a building
    unimeter ledger topology geojson -o map.geojson
    unimeter ledger topology graph --root CON-GE-01 --layer network --layer billing
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import psycopg

from unimeter.config import Config, load_config
from unimeter.errors import DatabaseUnavailableError


@contextlib.contextmanager
def _api_connection(config: Config) -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(config.database.conninfo("api"), autocommit=True)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to the ledger database: {str(exc).strip().splitlines()[0]}",
            hint="start it with `unimeter services up` and create the schema with "
                 "`unimeter migrate`") from None
    with conn:
        yield conn


def _echo_json(data: Any, output: Path | None) -> None:
    text = json.dumps(data, ensure_ascii=False, indent=2, default=str)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


@click.group(name="ledger")
def command() -> None:
    """The device ledger: import/export, publish to the stream, topology."""


@command.command(name="import")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=True, path_type=Path))
@click.option("--kind", help="What a CSV file holds when its name does not say "
                             "(meters, devices, customers, accounts, locations …).")
@click.option("--dry-run", is_flag=True, help="Validate and count, change nothing.")
@click.option("--actor", default=None, help="Who imports (recorded in the history); "
                                            "default: the login name.")
@click.option("--problems", "problems_file", type=click.Path(path_type=Path),
              help="Also write every problem to this CSV file.")
def import_(files: tuple[Path, ...], kind: str | None, dry_run: bool, actor: str | None,
            problems_file: Path | None) -> None:
    """Import CSV/Excel FILES (or folders of them): all validated, then all applied or none."""
    from devices.errors import ImportRejectedError
    from devices.importer import import_files

    paths: list[Path] = []
    for item in files:
        paths.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in (
            ".csv", ".xlsx", ".tsv")) if item.is_dir() else [item])
    config = load_config()
    with _api_connection(config) as conn:
        try:
            report = import_files(conn, paths, actor=actor or f"cli:{getpass.getuser()}",
                                  timezone=config.utility.timezone, kind=kind,
                                  dry_run=dry_run)
        except ImportRejectedError as exc:
            problems = exc.context.get("problems", [])
            for problem in problems[:200]:
                click.echo(str(problem), err=True)
            if len(problems) > 200:
                click.echo(f"… and {len(problems) - 200} more", err=True)
            if problems_file is not None:
                import csv

                with problems_file.open("w", encoding="utf-8", newline="") as fh:
                    writer = csv.writer(fh)
                    writer.writerow(["source", "line", "kind", "key", "column", "reason"])
                    for p in problems:
                        writer.writerow([p.source, p.line, p.kind, p.key, p.column, p.reason])
            raise
    for kind_name, count in report.counts.items():
        click.echo(f"  {kind_name:<18} {count.rows:>7} rows  {count.inserted:>6} new  "
                   f"{count.updated:>6} changed  {count.unchanged:>6} unchanged")
    verb = "would change" if dry_run else "changed"
    click.echo(f"{'dry run: ' if dry_run else ''}{verb} {report.changed} row(s) from "
               f"{len(paths)} file(s)")


@command.command(name="export")
@click.option("--kind", "kinds", multiple=True,
              help="Kinds or groups (all, catalog, topology, billing, customers, equipment, "
                   "meters, devices …); repeatable. Default: all.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="A .xlsx workbook, or a folder for one CSV file per kind.")
def export(kinds: tuple[str, ...], output: Path) -> None:
    """Export the ledger in the import format (it imports back unchanged)."""
    from zoneinfo import ZoneInfo

    from devices.importer import export_ledger, resolve_kinds

    try:
        wanted = resolve_kinds(kinds or ("all",))
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--kind") from None
    config = load_config()
    with _api_connection(config) as conn:
        counts = export_ledger(conn, output, wanted, ZoneInfo(config.utility.timezone))
    for kind_name, count in counts.items():
        click.echo(f"  {kind_name:<18} {count:>7} rows")
    click.echo(f"exported to {output}")


@command.command(name="publish")
@click.option("--once", is_flag=True, help="Publish what is queued now and exit.")
@click.option("--all", "republish", is_flag=True,
              help="First queue every meter, account, tariff version and VEE group again.")
@click.option("--batch-size", default=5000, show_default=True, type=click.IntRange(1, 100000))
def publish(once: bool, republish: bool, batch_size: int) -> None:
    """Publish ledger changes from the outbox to the compacted ledger.* topics."""
    from devices.outbox import OutboxPublisher, enqueue_all

    config = load_config()

    async def main() -> None:
        publisher = OutboxPublisher(config.database, config.kafka, batch_size=batch_size)
        try:
            await publisher.start()
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(f"cannot connect to the ledger database: {exc}",
                                           hint="run `unimeter services up`") from None
        try:
            if republish:
                conn = await psycopg.AsyncConnection.connect(config.database.conninfo("api"))
                try:
                    queued = await enqueue_all(conn)
                finally:
                    await conn.close()
                click.echo(f"queued {queued} entities for republication")
            if once:
                total = await publisher.drain(timeout_s=600)
            else:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                click.echo(f"publishing to {config.kafka.topic('ledger.*')} (Ctrl-C stops)")
                total = await publisher.run(stop, on_batch=lambda r: click.echo(
                    f"  {r.messages} message(s) from {r.rows} change(s): "
                    + ", ".join(f"{t} {n}" for t, n in r.by_topic.items())))
        finally:
            await publisher.stop()
        click.echo(f"published {total.messages} message(s) ({total.tombstones} tombstones) "
                   f"from {total.rows} change(s): "
                   + (", ".join(f"{t} {n}" for t, n in total.by_topic.items()) or "nothing"))

    asyncio.run(main())


@command.command(name="history")
@click.argument("entity_id")
@click.option("--entity", help="device, meter, account, customer, location, tariff … "
                               "(default: guessed from the id).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(entity_id: str, entity: str | None, limit: int, as_json: bool) -> None:
    """What changed on a device, meter, account … when, by whom and why (newest first)."""
    from devices.ledger import history_of

    with _api_connection(load_config()) as conn:
        rows = history_of(conn, entity_id, entity=entity, limit=limit)
    if as_json:
        _echo_json(rows, None)
        return
    for r in rows:
        changes = ", ".join(f"{k}: {(r['before'] or {}).get(k)!s} -> {v!s}"
                            for k, v in (r["after"] or {}).items()) if r["op"] == "update" \
            else r["op"]
        click.echo(f"{r['changed_at']:%Y-%m-%d %H:%M:%S} {r['entity']:<10} v{r['row_version']:<3} "
                   f"{r['actor']:<18} {changes}" + (f"  ({r['reason']})" if r["reason"] else ""))
    click.echo(f"{len(rows)} change(s) of {entity_id}")


@command.group(name="topology")
def topology() -> None:
    """The collection network, places, supply network and billing structure."""


@topology.command(name="under")
@click.argument("device_id")
@click.option("--meters-only", is_flag=True, help="Only the meters.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def under(device_id: str, meters_only: bool, as_json: bool) -> None:
    """Everything below a concentrator, collector, DTU or RTU."""
    from devices.topology import devices_under

    with _api_connection(load_config()) as conn:
        rows = devices_under(conn, device_id, kinds=("meter",) if meters_only else None)
    if as_json:
        _echo_json(rows, None)
        return
    for r in rows:
        click.echo(f"{'  ' * int(r['depth'])}{r['device_id']:<16} {r['kind']:<12} "
                   f"{r['status']:<9} addr={r['address'] or '-'} "
                   f"point={r['point_no'] if r['point_no'] is not None else '-'} "
                   f"at={r['location_id'] or '-'}")
    click.echo(f"{len(rows)} device(s) below {device_id}")


@topology.command(name="path")
@click.argument("meter_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def path(meter_id: str, as_json: bool) -> None:
    """The path to a meter: service point, link, devices, places, supply, org, billing."""
    from devices.topology import path_to_meter

    with _api_connection(load_config()) as conn:
        result = path_to_meter(conn, meter_id).as_dict()
    if as_json:
        _echo_json(result, None)
        return
    link = result["link"]
    feps = ", ".join(f"{f['fep_id']} ({f['role']})" for f in link["feps"]) or "-"
    click.echo(f"service point {link['service_point'] or '-'} via FEP {feps}, "
               f"link {link['link_id'] or '-'}")
    click.echo("network:  " + " -> ".join(f"{d['device_id']} ({d['kind']})"
                                          for d in result["network"]))
    click.echo("places:   " + " -> ".join(f"{p['location_id']} ({p['kind']})"
                                          for p in result["places"]))
    click.echo("supply:   " + (" -> ".join(s["supply_node_id"] for s in result["supply"])
                               or "-"))
    click.echo("governed: " + (" -> ".join(o["org_unit_id"] for o in result["organisation"])
                               or "-"))
    billing = result["billing"]
    click.echo(f"billing:  account {billing['account_id'] or '-'} "
               f"({billing['customer_type'] or '-'}), tariff {billing['tariff_id'] or '-'}, "
               f"VEE group {billing['vee_group'] or '-'}")


@topology.command(name="meters")
@click.argument("location_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def meters(location_id: str, as_json: bool) -> None:
    """The meters of a building (or unit, area, region)."""
    from devices.topology import meters_in

    with _api_connection(load_config()) as conn:
        rows = meters_in(conn, location_id)
    if as_json:
        _echo_json(rows, None)
        return
    for r in rows:
        click.echo(f"{r['meter_id']:<14} {r['medium']:<11} {r['status']:<9} "
                   f"{r['location_id']:<20} account={r['account_id'] or '-'}")
    click.echo(f"{len(rows)} meter(s) in {location_id}")


@topology.command(name="geojson")
@click.option("--root", help="A concentrator/DTU or a place; default: everything.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file.")
def geojson_(root: str | None, output: Path | None) -> None:
    """GeoJSON of places, devices, collection links and the supply network, for maps."""
    from devices.topology import geojson

    with _api_connection(load_config()) as conn:
        _echo_json(geojson(conn, root), output)


@topology.command(name="graph")
@click.option("--root", help="A concentrator/DTU or a place; default: everything.")
@click.option("--layer", "layers", multiple=True,
              type=click.Choice(["network", "places", "supply", "billing", "organisation"]),
              help="Layers to include (repeatable); default: network and places.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file.")
def graph_(root: str | None, layers: tuple[str, ...], output: Path | None) -> None:
    """Nodes and edges JSON for topology views."""
    from devices.topology import graph

    with _api_connection(load_config()) as conn:
        _echo_json(graph(conn, root, layers=layers or ("network", "places")), output)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(command())
