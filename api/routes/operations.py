"""Service operations: register, transfer, deregister; install, replace, remove a meter."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from api.auth import Principal, current_principal, require
from api.errors import ERROR_RESPONSES
from api.models import CancelIn, OperationIn, OperationOut
from api.routes._common import Limit, limit_of, not_visible, operations
from devices.commands.errors import InvalidTransitionError
from devices.operations import OperationRecord

router = APIRouter(tags=["service operations"], responses=ERROR_RESPONSES)

_METER_KINDS = frozenset({"install", "replace", "remove"})


def _out(op: OperationRecord) -> OperationOut:
    return OperationOut.model_validate(op.to_dict())


@router.post("/v1/operations", response_model=OperationOut, status_code=status.HTTP_201_CREATED,
             summary="Start a service operation")
def post_operation(request: Request,
                   principal: Annotated[Principal, Depends(current_principal)],
                   body: OperationIn) -> OperationOut:
    """Meter operations (install, replace, remove) need the outworker role, account
    operations (register, transfer, deregister) the billing role (admins may do both). It
    runs as far as it can at once and continues as its commands finish."""
    needed = ("operations:submit:meter" if body.kind in _METER_KINDS
              else "operations:submit:account")
    require(needed)(principal)
    op = operations(request).start(body.kind, body.params, requested_by=principal.user,
                                   origin=principal.origin, reason=body.reason,
                                   client_operation_id=body.client_operation_id,
                                   regions=principal.region_list())
    return _out(op)


@router.get("/v1/operations", response_model=list[OperationOut], summary="List operations")
def get_operations(request: Request, principal: Annotated[Principal, Depends(
        require("operations:read"))],
        state: Annotated[str | None, Query(pattern="^(running|compensating|completed|"
                                                   "compensated|failed)$")] = None,
        kind: Annotated[str | None, Query(pattern="^(register|transfer|deregister|install|"
                                                  "replace|remove)$")] = None,
        limit: Limit = None, offset: Annotated[int, Query(ge=0, le=100_000)] = 0
        ) -> list[OperationOut]:
    return [_out(o) for o in operations(request).list(
        state=state, kind=kind, regions=principal.region_list(),
        limit=limit_of(request, limit), offset=offset)]


def _visible(request: Request, principal: Principal, operation_id: str) -> OperationRecord:
    op = operations(request).get(operation_id)
    if not principal.sees(op.region):
        raise not_visible("operation", operation_id)
    return op


@router.get("/v1/operations/{operation_id}", response_model=OperationOut,
            summary="One operation with its steps")
def get_operation(request: Request, principal: Annotated[Principal, Depends(
        require("operations:read"))], operation_id: str) -> OperationOut:
    return _out(_visible(request, principal, operation_id))


@router.post("/v1/operations/{operation_id}/cancel", response_model=OperationOut,
             summary="Stop an operation and undo its done steps")
def post_cancel(request: Request, principal: Annotated[Principal, Depends(current_principal)],
                operation_id: str, body: CancelIn | None = None) -> OperationOut:
    op = _visible(request, principal, operation_id)
    if op.requested_by != principal.user and not principal.can("operations:cancel"):
        raise InvalidTransitionError(f"{principal.user} may cancel only their own operations",
                                     where=f"operation {operation_id}")
    return _out(operations(request).cancel(operation_id, principal.user,
                                           reason=body.reason if body else ""))
