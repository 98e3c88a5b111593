"""``unimeter device list | show | commands``: devices as the control plane sees them.

Examples::

    unimeter device list --region R1 --type gas_nbiot_g4
    unimeter device list --under CONC-0007
    unimeter device show GAS-0001
    unimeter device commands GAS-0001
"""

from __future__ import annotations

import click
import psycopg

from devices.inventory import device_detail, list_devices
from unimeter.cli._control import as_json_option, echo_json, echo_table, make_service
from unimeter.config import load_config


def _connect() -> psycopg.Connection:
    return psycopg.connect(load_config().database.conninfo("api"))


@click.group(name="device")
def command() -> None:
    """Devices: ledger facts, supported commands, safety locks, recent commands."""


@command.command(name="list")
@click.option("--region", default=None)
@click.option("--status", default=None, help="in_stock, installed, active or removed.")
@click.option("--type", "device_type", default=None)
@click.option("--kind", default=None, help="meter, dtu, rtu, concentrator or collector.")
@click.option("--location", "location_id", default=None, help="At or below this location.")
@click.option("--under", "under_device", default=None, help="Below this device.")
@click.option("--search", default=None, help="Part of the id, address or serial number.")
@click.option("--limit", default=50, type=click.IntRange(1, 1000), show_default=True)
@click.option("--after", "cursor", default=None, help="Continue after this device id.")
@as_json_option
def list_(region: str | None, status: str | None, device_type: str | None, kind: str | None,
          location_id: str | None, under_device: str | None, search: str | None, limit: int,
          cursor: str | None, as_json: bool) -> None:
    """Devices ordered by id, filtered."""
    with _connect() as conn:
        page = list_devices(conn, region=region, status=status, device_type=device_type,
                            kind=kind, location_id=location_id, under_device=under_device,
                            search=search, limit=limit, cursor=cursor)
    if as_json:
        echo_json({"items": page.items, "next_cursor": page.next_cursor})
        return
    echo_table(page.items, ("device_id", "kind", "device_type", "status", "address",
                            "region_id", "link_id", "account_id", "protected"))
    if page.next_cursor:
        click.echo(f"more: --after {page.next_cursor}")


@command.command(name="show")
@click.argument("device_id")
@as_json_option
def show(device_id: str, as_json: bool) -> None:
    """One device with its command profile, safety lock and latest commands."""
    with _connect() as conn:
        detail = device_detail(conn, device_id)
    if as_json:
        echo_json(detail)
        return
    skip = {"commands", "recent_commands", "safety_lock", "path"}
    for key, value in detail.items():
        if key not in skip and value not in (None, ""):
            click.echo(f"{key:<20} {value}")
    click.echo(f"{'network path':<20} {' > '.join(detail['path'] or [])}")
    lock = detail["safety_lock"]
    click.echo(f"{'safety lock':<20} " + (f"{lock['cause']} since {lock['locked_at']}"
                                          if lock else "none"))
    click.echo(f"{'commands':<20} " + ", ".join(
        f"{n}{' (read-back)' if c['read_back'] else ''}" for n, c in detail["commands"].items()))
    if detail["recent_commands"]:
        click.echo("")
        echo_table(detail["recent_commands"], ("command_id", "command", "state",
                                               "requested_by", "requested_at"))


@command.command(name="commands")
@click.argument("device_id")
@click.option("--limit", default=20, type=click.IntRange(1, 1000), show_default=True)
@as_json_option
def commands(device_id: str, limit: int, as_json: bool) -> None:
    """The device's commands, newest first."""
    page = make_service().list(device_id=device_id, limit=limit)
    rows = [r.to_dict() for r in page.items]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ("command_id", "command", "state", "requested_by", "requested_at",
                          "result_detail"))
