"""``unimeter operation start | status | list | cancel``: service operations.

Register, transfer and deregister an account at a meter; install, replace and remove a
meter — each a resumable sequence of ledger changes and commands, undone step by step when a
step fails. ``unimeter command serve`` moves running operations on as their commands finish.

Examples::

    unimeter operation start install -p meter_id=GAS-0042 -p location_id=BLDG-7-U3 \\
        -p account_id=ACC-9 -p opening_balance=50.00 --as outworker-zhao
    unimeter operation start replace -p old_meter_id=GAS-0001 -p new_meter_id=GAS-0042
    unimeter operation status 8c1e…
"""

from __future__ import annotations

import click

from devices.operations import OPERATIONS, OperationRecord, OperationService
from unimeter.cli._control import (
    actor_option,
    as_json_option,
    echo_json,
    echo_table,
    make_service,
    parse_params,
    resolve_actor,
)


def _operations() -> OperationService:
    return OperationService(make_service())


def _show(op: OperationRecord, as_json: bool) -> None:
    if as_json:
        echo_json(op.to_dict())
        return
    click.echo(f"operation {op.operation_id}  {op.kind}  {op.state}")
    click.echo(f"params    {dict(op.params)}")
    click.echo(f"by        {op.requested_by} via {op.origin}"
               f"{f' — {op.reason}' if op.reason else ''}")
    if op.error:
        click.echo(f"error     {op.error}")
    echo_table([{"no": s.step_no, "step": s.name, "state": s.state, "device": s.device_id,
                 "command": s.command_id or "", "error": s.error} for s in op.steps],
               ("no", "step", "state", "device", "command", "error"))


@click.group(name="operation")
def command() -> None:
    """Service operations: register, transfer, deregister; install, replace, remove a meter."""


@command.command(name="start")
@click.argument("kind", type=click.Choice(sorted(OPERATIONS)))
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE")
@click.option("--params-json", default=None)
@click.option("--reason", default="")
@click.option("--client-id", default=None, help="Your id of this request: resending is safe.")
@actor_option
@as_json_option
def start(kind: str, params: tuple[str, ...], params_json: str | None, reason: str,
          client_id: str | None, actor: str | None, as_json: bool) -> None:
    """Start an operation; it runs as far as it can now and continues in `command serve`."""
    op = _operations().start(kind, parse_params(params, params_json),
                             requested_by=resolve_actor(actor), origin="cli", reason=reason,
                             client_operation_id=client_id)
    _show(op, as_json)


@command.command(name="status")
@click.argument("operation_id")
@click.option("--advance", is_flag=True, help="Try to move it on now.")
@as_json_option
def status(operation_id: str, advance: bool, as_json: bool) -> None:
    """One operation with its steps."""
    ops = _operations()
    _show(ops.advance(operation_id) if advance else ops.get(operation_id), as_json)


@command.command(name="list")
@click.option("--state", default=None)
@click.option("--kind", default=None)
@click.option("--limit", default=20, type=click.IntRange(1, 1000), show_default=True)
@as_json_option
def list_(state: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """Operations, newest first."""
    rows = [o.to_dict() for o in _operations().list(state=state, kind=kind, limit=limit)]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ("operation_id", "kind", "state", "current_step", "requested_by",
                          "created_at", "error"))


@command.command(name="cancel")
@click.argument("operation_id")
@click.option("--reason", default="")
@actor_option
def cancel(operation_id: str, reason: str, actor: str | None) -> None:
    """Stop a running operation and undo its done steps."""
    _show(_operations().cancel(operation_id, resolve_actor(actor), reason=reason), False)
