"""``unimeter command send | approve | status | …``: the operator's command console.

Examples::

    unimeter command catalog
    unimeter command send GAS-0001 valve_close -p cause=debt --reason "arrears" --wait 60
    unimeter command send GAS-0001 valve_open --as op-li          # arms where possible
    unimeter command approve 5c0f… --as approver-wang
    unimeter command status 5c0f… --history
    unimeter command group create valve_close -p cause=service --location BLDG-7
    unimeter command group approve 9e1d… --preview-hash 3fa2… --as approver-wang
    unimeter command release op-li --as approver-wang
    unimeter command serve                                          # the control-plane process
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import click

from devices.commands import groups as group_ops
from devices.commands.catalog import CATALOG
from devices.commands.lifecycle import is_terminal
from devices.commands.records import CommandRecord
from devices.commands.service import make_request
from unimeter.cli._control import (
    actor_option,
    as_json_option,
    echo_json,
    echo_table,
    make_service,
    parse_duration,
    parse_params,
    resolve_actor,
)

_COLUMNS = ("command_id", "device_id", "command", "state", "requested_by", "requested_at",
            "attempt", "result_detail")


def _show(record: CommandRecord, as_json: bool) -> None:
    if as_json:
        echo_json(record.to_dict())
        return
    click.echo(f"command   {record.command_id}")
    click.echo(f"device    {record.device_id} ({record.device_type}, {record.protocol}, "
               f"region {record.region or '-'})")
    shown = record.command if record.command == record.requested_command else \
        f"{record.command} (requested {record.requested_command})"
    click.echo(f"command   {shown} {dict(record.params) or ''}".rstrip())
    click.echo(f"state     {record.state.value}  attempt {record.attempt}/{record.max_attempts}"
               f"  delivery {record.delivery}")
    click.echo(f"requested {record.requested_by} via {record.origin} at "
               f"{record.requested_at.isoformat(timespec='seconds')}; expires "
               f"{record.expires_at.isoformat(timespec='seconds')}")
    if record.approvals_required:
        click.echo(f"approvals {len(record.approvals)}/{record.approvals_required}: "
                   f"{', '.join(record.approvals) or 'none yet'}")
    for reason in record.policy_reasons:
        click.echo(f"policy    {reason}")
    if record.result_detail or record.error_code:
        code = f"[{record.error_code}]" if record.error_code else ""
        click.echo(f"result    {record.result_detail} {code}".rstrip())
    if record.reply:
        click.echo(f"reply     {dict(record.reply)}")


@click.group(name="command")
def command() -> None:
    """Send, approve and follow commands to devices (valves, reads, prices, balances)."""


@command.command(name="catalog")
@as_json_option
def catalog_(as_json: bool) -> None:
    """The unified commands with their parameters and safety class."""
    rows = []
    for spec in CATALOG.values():
        fields = spec.params_model.model_fields
        params = ", ".join(f"{n}{'' if f.is_required() else '?'}" for n, f in fields.items())
        rows.append({"command": spec.name, "safety": spec.safety_class.value,
                     "read_back": spec.readback_what or "", "parameters": params,
                     "summary": spec.summary})
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ("command", "safety", "read_back", "parameters", "summary"))


@command.command(name="send")
@click.argument("device_id")
@click.argument("command_name", metavar="COMMAND")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter (repeatable); JSON values are parsed, decimals stay exact.")
@click.option("--params-json", default=None, help="All parameters as one JSON object.")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@click.option("--client-id", default=None, help="Your id of this request: resending is safe.")
@click.option("--ttl", default=None, help="Time to live, e.g. 30m, 2h, 1d.")
@click.option("--priority", default=5, type=click.IntRange(0, 9), show_default=True)
@click.option("--wait", "wait_s", default=0.0, type=float,
              help="Wait up to this many seconds for the command to finish.")
@actor_option
@as_json_option
def send(device_id: str, command_name: str, params: tuple[str, ...], params_json: str | None,
         reason: str, client_id: str | None, ttl: str | None, priority: int, wait_s: float,
         actor: str | None, as_json: bool) -> int:
    """Send COMMAND to DEVICE_ID (exit 1 when it ends failed, expired or rejected)."""
    service = make_service()
    record = service.submit(make_request(
        device_id=device_id, command=command_name, requested_by=resolve_actor(actor),
        params=parse_params(params, params_json), origin="cli", client_command_id=client_id,
        reason=reason, ttl=parse_duration(ttl), priority=priority))
    deadline = time.monotonic() + wait_s
    while wait_s and not is_terminal(record.state) and time.monotonic() < deadline:
        time.sleep(1.0)
        record = service.get(record.command_id)
    _show(record, as_json)
    if record.state.value in ("failed", "expired", "rejected"):
        return 1
    if not as_json and record.state.value == "requested":
        click.echo(f"waiting for approval: `unimeter command approve {record.command_id}`")
    return 0


@command.command(name="bulk")
@click.argument("command_name", metavar="COMMAND")
@click.option("--device", "devices", multiple=True, required=True,
              help="A target device (repeatable).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE")
@click.option("--params-json", default=None)
@click.option("--reason", default="")
@click.option("--client-id", default=None)
@click.option("--ttl", default=None)
@actor_option
@as_json_option
def bulk(command_name: str, devices: tuple[str, ...], params: tuple[str, ...],
         params_json: str | None, reason: str, client_id: str | None, ttl: str | None,
         actor: str | None, as_json: bool) -> None:
    """COMMAND for several devices: one command each up to the mass threshold, beyond it a
    mass command that two approvers must approve."""
    outcome = group_ops.submit_bulk(
        make_service(), device_ids=devices, command=command_name,
        params=parse_params(params, params_json), requested_by=resolve_actor(actor),
        origin="cli", reason=reason, client_command_id=client_id, ttl=parse_duration(ttl))
    if outcome.group is not None:
        _show_group(outcome.group, as_json, preview=True)
        return
    if as_json:
        echo_json({"commands": [r.to_dict() for r in outcome.commands],
                   "refused": outcome.refused})
        return
    echo_table([r.to_dict() for r in outcome.commands], _COLUMNS)
    for device_id, why in outcome.refused.items():
        click.echo(f"refused {device_id}: {why}")


@command.command(name="approve")
@click.argument("command_id")
@click.option("--comment", default="", help="Why you approve (kept in the audit log).")
@actor_option
@as_json_option
def approve(command_id: str, comment: str, actor: str | None, as_json: bool) -> None:
    """Approve a command that waits for a second person."""
    _show(make_service().approve(command_id, resolve_actor(actor), comment=comment), as_json)


@command.command(name="cancel")
@click.argument("command_id")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@actor_option
@as_json_option
def cancel(command_id: str, reason: str, actor: str | None, as_json: bool) -> None:
    """Withdraw a command that was not dispatched yet."""
    _show(make_service().cancel(command_id, resolve_actor(actor), reason=reason), as_json)


@command.command(name="status")
@click.argument("command_id", required=False)
@click.option("--device", "device_id", default=None, help="Only this device's commands.")
@click.option("--state", default=None, help="Only commands in this state.")
@click.option("--by", "requested_by", default=None, help="Only this requester's commands.")
@click.option("--limit", default=20, type=click.IntRange(1, 1000), show_default=True)
@click.option("--history", is_flag=True, help="With COMMAND_ID: every audited step.")
@as_json_option
def status(command_id: str | None, device_id: str | None, state: str | None,
           requested_by: str | None, limit: int, history: bool, as_json: bool) -> None:
    """One command in detail, or the latest commands as a table."""
    service = make_service()
    if command_id:
        record = service.get(command_id)
        if history:
            steps: list[dict[str, Any]] = [
                {"seq": r.seq, "ts": r.ts, "actor": r.actor, "action": r.action,
                 "details": dict(r.details)} for r in service.history(command_id)]
            if as_json:
                echo_json({"command": record.to_dict(), "history": steps})
                return
            _show(record, False)
            click.echo("")
            echo_table([{**s, "details": _brief(s["details"])} for s in steps],
                       ("seq", "ts", "actor", "action", "details"))
            return
        _show(record, as_json)
        return
    page = service.list(device_id=device_id, state=state, requested_by=requested_by,
                        limit=limit)
    if as_json:
        echo_json([r.to_dict() for r in page.items])
    else:
        echo_table([r.to_dict() for r in page.items], _COLUMNS)


def _brief(details: dict[str, Any]) -> str:
    keep = {k: v for k, v in details.items() if k not in ("device_id", "command") and v not in
            (None, "", [], {})}
    return ", ".join(f"{k}={v}" for k, v in keep.items())[:120]


@command.command(name="quarantine")
@as_json_option
def quarantine(as_json: bool) -> None:
    """Operators whose commands are held after passing the anomaly threshold."""
    rows = [q.to_dict() for q in make_service().quarantined_operators()]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ("operator", "since", "reason", "times"))


@command.command(name="release")
@click.argument("operator")
@click.option("--cancel-held", is_flag=True, help="Cancel the held commands instead.")
@click.option("--comment", default="", help="Why (kept in the audit log).")
@actor_option
def release(operator: str, cancel_held: bool, comment: str, actor: str | None) -> None:
    """Release an operator's quarantine (by another person); held commands continue."""
    out = make_service().release_operator(operator, resolve_actor(actor),
                                          cancel_held=cancel_held, comment=comment)
    click.echo(f"released {operator}; {len(out)} held command(s) "
               f"{'cancelled' if cancel_held else 'continue'}")
    echo_table([r.to_dict() for r in out], ("command_id", "device_id", "command", "state"))


# --------------------------------------------------------------------------- mass commands


@command.group(name="group")
def group() -> None:
    """Mass commands: preview, two approvers, throttled waves."""


def _show_group(g: group_ops.GroupRecord, as_json: bool, preview: bool = False) -> None:
    if as_json:
        echo_json(g.to_dict(with_preview=preview))
        return
    click.echo(f"group         {g.group_id}")
    click.echo(f"command       {g.command} {dict(g.params) or ''}".rstrip())
    click.echo(f"state         {g.state}{f' ({g.paused_reason})' if g.paused_reason else ''}")
    click.echo(f"devices       {g.device_count} included, {g.excluded_count} excluded")
    click.echo(f"approvals     {len(g.approvals)}/{g.approvals_required}: "
               f"{', '.join(g.approvals) or 'none yet'}")
    click.echo(f"preview hash  {g.preview_hash}")
    click.echo(f"members       {dict(g.members or {})}; waves {g.waves}")
    if preview:
        echo_table([{"device_id": i["device_id"], "command": i.get("command", ""),
                     "excluded": i.get("excluded", "")} for i in g.preview],
                   ("device_id", "command", "excluded"))


@group.command(name="create")
@click.argument("command_name", metavar="COMMAND")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE")
@click.option("--params-json", default=None)
@click.option("--device", "devices", multiple=True, help="A target device (repeatable).")
@click.option("--location", default=None, help="Every meter at or below this location.")
@click.option("--under", "under_device", default=None,
              help="Every meter below this concentrator, collector or DTU.")
@click.option("--device-type", default=None, help="Every device of this type.")
@click.option("--reason", default="")
@click.option("--client-id", default=None)
@click.option("--ttl", default=None)
@actor_option
@as_json_option
def group_create(command_name: str, params: tuple[str, ...], params_json: str | None,
                 devices: tuple[str, ...], location: str | None, under_device: str | None,
                 device_type: str | None, reason: str, client_id: str | None, ttl: str | None,
                 actor: str | None, as_json: bool) -> None:
    """Create a mass command and print its preview for the approvers."""
    g = group_ops.create_group(
        make_service(), command=command_name, params=parse_params(params, params_json),
        selector=group_ops.Selector(device_ids=devices, location_id=location,
                                    under_device=under_device, device_type=device_type),
        requested_by=resolve_actor(actor), origin="cli", reason=reason,
        client_command_id=client_id, ttl=parse_duration(ttl))
    _show_group(g, as_json, preview=True)


@group.command(name="show")
@click.argument("group_id")
@click.option("--preview", is_flag=True, help="List every device of the preview.")
@as_json_option
def group_show(group_id: str, preview: bool, as_json: bool) -> None:
    """One mass command, its approvals, members and (optionally) preview."""
    _show_group(group_ops.get_group(make_service(), group_id), as_json, preview)


@group.command(name="list")
@click.option("--state", default=None)
@as_json_option
def group_list(state: str | None, as_json: bool) -> None:
    """Mass commands, newest first."""
    rows = [g.to_dict(with_preview=False) for g in group_ops.list_groups(make_service(),
                                                                         state=state)]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ("group_id", "command", "state", "device_count", "requested_by",
                          "requested_at", "waves"))


@group.command(name="approve")
@click.argument("group_id")
@click.option("--preview-hash", required=True, help="The preview_hash you reviewed.")
@click.option("--comment", default="")
@actor_option
@as_json_option
def group_approve(group_id: str, preview_hash: str, comment: str, actor: str | None,
                  as_json: bool) -> None:
    """Approve the mass command's preview (two distinct approvers, never the requester)."""
    _show_group(group_ops.approve_group(make_service(), group_id, resolve_actor(actor),
                                        preview_hash, comment=comment), as_json)


@group.command(name="resume")
@click.argument("group_id")
@click.option("--comment", default="")
@actor_option
def group_resume(group_id: str, comment: str, actor: str | None) -> None:
    """Resume a mass command paused for failures (the failures so far are acknowledged)."""
    _show_group(group_ops.resume_group(make_service(), group_id, resolve_actor(actor),
                                       comment=comment), False)


@group.command(name="cancel")
@click.argument("group_id")
@click.option("--reason", default="")
@actor_option
def group_cancel(group_id: str, reason: str, actor: str | None) -> None:
    """Cancel a mass command; members not yet dispatched are cancelled."""
    _show_group(group_ops.cancel_group(make_service(), group_id, resolve_actor(actor),
                                       reason=reason), False)


# --------------------------------------------------------------------------- the process


@command.command(name="serve")
@click.option("--heartbeat-file", type=click.Path(path_type=Path), default=None,
              help="Touch this file every few seconds (health check of `unimeter run`).")
def serve(heartbeat_file: Path | None) -> None:
    """Run the control plane: intake of requests and results, dispatch, retries, waves."""
    import logging

    from devices.commands.serve import CommandServer
    from devices.commands.settings import CommandSettings
    from schemas.settings import load_settings
    from unimeter.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s "
                                                   "%(message)s")
    config = load_config()
    server = CommandServer(config.database, config.kafka, load_settings(CommandSettings),
                           heartbeat_file=heartbeat_file)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo(f"command control plane running (topics '{config.kafka.topic_prefix}…'); "
                   "Ctrl-C stops it")
        await server.run(stop)

    asyncio.run(main())
    s = server.stats
    click.echo(f"stopped: {s.requests} requests, {s.results} results, {s.dispatched} "
               f"dispatched, {s.published} published, {s.dead_letters} dead letters")
