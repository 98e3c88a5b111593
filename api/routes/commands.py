"""Commands: catalog, submit, approve, cancel, status, history; mass commands; quarantine."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status

from api.auth import Principal, require
from api.errors import ERROR_RESPONSES
from api.models import (
    ApproveIn,
    AuditRecordOut,
    BulkCommandIn,
    BulkCommandOut,
    CancelIn,
    CatalogEntryOut,
    CommandIn,
    CommandOut,
    CommandPage,
    CommandStateName,
    GroupApproveIn,
    GroupIn,
    GroupOut,
    QuarantineOut,
    ReleaseIn,
)
from api.routes._common import (
    Cursor,
    Limit,
    ensure_device_visible,
    limit_of,
    not_visible,
    service,
)
from devices.commands import groups
from devices.commands.catalog import CATALOG
from devices.commands.errors import InvalidTransitionError
from devices.commands.records import CommandRecord
from devices.commands.service import make_request

router = APIRouter(tags=["commands"], responses=ERROR_RESPONSES)

Reader = Annotated[Principal, Depends(require("commands:read"))]
Submitter = Annotated[Principal, Depends(require("commands:submit"))]
Approver = Annotated[Principal, Depends(require("commands:approve"))]
Text = Annotated[str | None, Query(min_length=1, max_length=200)]


def _out(record: CommandRecord) -> CommandOut:
    return CommandOut.model_validate(record.to_dict())


def _visible(request: Request, principal: Principal, command_id: str) -> CommandRecord:
    record = service(request).get(command_id)
    if not principal.sees(record.region):
        raise not_visible("command", command_id)
    return record


@router.get("/v1/commands/catalog", response_model=list[CatalogEntryOut],
            summary="The unified commands")
def get_catalog(_principal: Reader) -> list[dict[str, Any]]:
    """Every command with its parameter schema, safety class and read-back."""
    return [{"command": s.name, "summary": s.summary, "safety_class": s.safety_class.value,
             "read_back": s.readback_what, "parameters": s.params_model.model_json_schema()}
            for s in CATALOG.values()]


@router.post("/v1/commands", response_model=CommandOut, status_code=status.HTTP_201_CREATED,
             summary="Submit a command", responses={200: {"model": CommandOut, "description":
                                                          "The same request was made before "
                                                          "(same client_command_id)."}})
def post_command(request: Request, response: Response, principal: Submitter,
                 body: CommandIn) -> CommandOut:
    """Judge and store a command for one device. The answer says what will run (an open may
    become an arm), who must still approve, and its state. A refusal by the safety policy is
    403 with the id of the stored, rejected command."""
    ensure_device_visible(request, principal, body.device_id)
    commands = service(request)
    request_ = make_request(
        device_id=body.device_id, command=body.command, requested_by=principal.user,
        params=body.params, origin=principal.origin, client_command_id=body.client_command_id,
        reason=body.reason, ttl=timedelta(seconds=body.ttl_s) if body.ttl_s else None,
        priority=body.priority, now=commands.clock())
    record = commands.submit(request_)
    if record.command_id != request_.command_id:
        response.status_code = status.HTTP_200_OK
    return _out(record)


@router.post("/v1/commands/bulk", response_model=BulkCommandOut, status_code=201,
             summary="One command for several devices")
def post_bulk(request: Request, principal: Submitter, body: BulkCommandIn) -> dict[str, Any]:
    """Up to the configured mass threshold each device gets its own command (refusals are
    listed per device); beyond it the request becomes a mass command whose preview two
    distinct approvers must approve."""
    outcome = groups.submit_bulk(
        service(request), device_ids=body.device_ids, command=body.command, params=body.params,
        requested_by=principal.user, origin=principal.origin, reason=body.reason,
        client_command_id=body.client_command_id,
        ttl=timedelta(seconds=body.ttl_s) if body.ttl_s else None, priority=body.priority,
        regions=principal.region_list())
    return {"commands": [_out(r) for r in outcome.commands],
            "group": _group_out(outcome.group, preview=True) if outcome.group else None,
            "refused": outcome.refused}


@router.get("/v1/commands", response_model=CommandPage, summary="List commands")
def get_commands(request: Request, principal: Reader, device_id: Text = None,
                 state: CommandStateName | None = None, requested_by: Text = None,
                 group_id: Text = None, operation_id: Text = None,
                 since: datetime | None = None, until: datetime | None = None,
                 limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
    """Newest first, within the caller's regions."""
    page = service(request).list(device_id=device_id, state=state, requested_by=requested_by,
                                 group_id=group_id, operation_id=operation_id,
                                 regions=principal.region_list(), since=since, until=until,
                                 limit=limit_of(request, limit), cursor=cursor)
    return {"items": [_out(r) for r in page.items], "next_cursor": page.next_cursor}


@router.get("/v1/commands/{command_id}", response_model=CommandOut, summary="One command")
def get_command(request: Request, principal: Reader, command_id: str) -> CommandOut:
    return _out(_visible(request, principal, command_id))


@router.get("/v1/commands/{command_id}/history", response_model=list[AuditRecordOut],
            summary="Every audited step of a command")
def get_history(request: Request, principal: Reader, command_id: str) -> list[dict[str, Any]]:
    _visible(request, principal, command_id)
    return [r.__dict__ for r in service(request).history(command_id)]


@router.post("/v1/commands/{command_id}/approve", response_model=CommandOut,
             summary="Approve a command")
def post_approve(request: Request, principal: Approver, command_id: str,
                 body: ApproveIn | None = None) -> CommandOut:
    """Add your approval: never your own command, never twice; approved when enough distinct
    approvers agree."""
    _visible(request, principal, command_id)
    return _out(service(request).approve(command_id, principal.user,
                                         comment=body.comment if body else ""))


@router.post("/v1/commands/{command_id}/cancel", response_model=CommandOut,
             summary="Cancel a command before dispatch")
def post_cancel(request: Request, principal: Annotated[Principal, Depends(
        require("commands:cancel"))], command_id: str, body: CancelIn | None = None
        ) -> CommandOut:
    record = _visible(request, principal, command_id)
    if record.requested_by != principal.user and not principal.can("commands:approve"):
        raise InvalidTransitionError(f"{principal.user} may cancel only their own commands",
                                     where=f"command {command_id}",
                                     hint="ask an approver to cancel it")
    return _out(service(request).cancel(command_id, principal.user,
                                        reason=body.reason if body else ""))


# --------------------------------------------------------------------------- mass commands


def _group_out(group: groups.GroupRecord, *, preview: bool) -> GroupOut:
    data = group.to_dict(with_preview=preview)
    data["members"] = dict(group.members or {})
    return GroupOut.model_validate(data)


def _group_visible(request: Request, principal: Principal, group_id: str
                   ) -> groups.GroupRecord:
    group = groups.get_group(service(request), group_id)
    if principal.regions is not None:
        regions = {i.get("region") for i in group.preview if "excluded" not in i}
        if not regions <= set(principal.regions):
            raise not_visible("mass command", group_id)
    return group


@router.post("/v1/command-groups", response_model=GroupOut, status_code=201,
             tags=["mass commands"], summary="Create a mass command")
def post_group(request: Request, principal: Annotated[Principal, Depends(
        require("groups:submit"))], body: GroupIn) -> GroupOut:
    """Resolve the target, judge every device and return the preview (with each device's
    frame) and its ``preview_hash``; two distinct approvers then approve that hash. Devices
    outside the caller's regions are excluded."""
    sel = body.selector
    group = groups.create_group(
        service(request), command=body.command, params=body.params,
        selector=groups.Selector(device_ids=tuple(sel.device_ids), location_id=sel.location_id,
                                 under_device=sel.under_device, device_type=sel.device_type),
        requested_by=principal.user, origin=principal.origin, reason=body.reason,
        client_command_id=body.client_command_id,
        ttl=timedelta(seconds=body.ttl_s) if body.ttl_s else None,
        regions=principal.region_list())
    return _group_out(group, preview=True)


@router.get("/v1/command-groups", response_model=list[GroupOut], tags=["mass commands"],
            summary="List mass commands")
def get_groups(request: Request, principal: Annotated[Principal, Depends(
        require("commands:read"))],
        state: Annotated[str | None, Query(pattern="^(requested|approved|running|paused|"
                                                   "completed|cancelled)$")] = None,
        limit: Limit = None, offset: Annotated[int, Query(ge=0, le=100_000)] = 0
        ) -> list[GroupOut]:
    out = []
    for group in groups.list_groups(service(request), state=state,
                                    limit=limit_of(request, limit), offset=offset):
        regions = {i.get("region") for i in group.preview if "excluded" not in i}
        if principal.regions is None or regions <= set(principal.regions):
            out.append(_group_out(group, preview=False))
    return out


@router.get("/v1/command-groups/{group_id}", response_model=GroupOut, tags=["mass commands"],
            summary="One mass command")
def get_group(request: Request, principal: Reader, group_id: str,
              preview: bool = True) -> GroupOut:
    return _group_out(_group_visible(request, principal, group_id), preview=preview)


@router.post("/v1/command-groups/{group_id}/approve", response_model=GroupOut,
             tags=["mass commands"], summary="Approve a mass command's preview")
def post_group_approve(request: Request, principal: Annotated[Principal, Depends(
        require("groups:approve"))], group_id: str, body: GroupApproveIn) -> GroupOut:
    _group_visible(request, principal, group_id)
    return _group_out(groups.approve_group(service(request), group_id, principal.user,
                                           body.preview_hash, comment=body.comment),
                      preview=False)


@router.post("/v1/command-groups/{group_id}/resume", response_model=GroupOut,
             tags=["mass commands"], summary="Resume a paused mass command")
def post_group_resume(request: Request, principal: Annotated[Principal, Depends(
        require("groups:approve"))], group_id: str, body: ApproveIn | None = None
        ) -> GroupOut:
    _group_visible(request, principal, group_id)
    return _group_out(groups.resume_group(service(request), group_id, principal.user,
                                          comment=body.comment if body else ""),
                      preview=False)


@router.post("/v1/command-groups/{group_id}/cancel", response_model=GroupOut,
             tags=["mass commands"], summary="Cancel a mass command")
def post_group_cancel(request: Request, principal: Annotated[Principal, Depends(
        require("groups:submit"))], group_id: str, body: CancelIn | None = None
        ) -> GroupOut:
    group = _group_visible(request, principal, group_id)
    if group.requested_by != principal.user and not principal.can("groups:approve"):
        raise InvalidTransitionError(f"{principal.user} may cancel only their own mass "
                                     "commands", where=f"group {group_id}")
    return _group_out(groups.cancel_group(service(request), group_id, principal.user,
                                          reason=body.reason if body else ""), preview=False)


# --------------------------------------------------------------------------- quarantine


@router.get("/v1/quarantine", response_model=list[QuarantineOut], tags=["safety"],
            summary="Quarantined operators")
def get_quarantine(request: Request, _principal: Reader) -> list[dict[str, Any]]:
    return [q.__dict__ for q in service(request).quarantined_operators()]


@router.post("/v1/quarantine/{operator}/release", response_model=list[CommandOut],
             tags=["safety"], summary="Release an operator's quarantine")
def post_release(request: Request, principal: Annotated[Principal, Depends(
        require("quarantine:release"))], operator: str, body: ReleaseIn | None = None
        ) -> list[CommandOut]:
    """By another person; the held commands continue (or are cancelled)."""
    body = body or ReleaseIn()
    released = service(request).release_operator(operator, principal.user,
                                                 cancel_held=body.cancel_held,
                                                 comment=body.comment)
    return [_out(r) for r in released]
