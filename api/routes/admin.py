"""Health, identity, tokens, audit, and ledger imports."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from api.auth import Principal, create_token, current_principal, require, revoke_token
from api.errors import ERROR_RESPONSES
from api.models import AuditRecordOut, ImportOut, MeOut, TokenIn, TokenOut, VerifyOut
from api.routes._common import Limit, connection, limit_of
from devices import audit
from devices.commands.errors import CommandNotFoundError
from devices.importer import import_files

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/health", tags=["health"], summary="Liveness and database reachability")
def health(request: Request) -> dict[str, str]:
    with connection(request) as conn:
        conn.execute("SELECT 1")
    return {"status": "ok"}


@router.get("/v1/me", response_model=MeOut, tags=["identity"], summary="Who am I")
def me(principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:
    return {"user": principal.user, "roles": sorted(principal.roles),
            "regions": principal.region_list(), "permissions": sorted(principal.permissions)}


@router.post("/v1/tokens", response_model=TokenOut, status_code=201, tags=["identity"],
             summary="Create an API token")
def post_token(request: Request, principal: Annotated[Principal, Depends(
        require("tokens:admin"))], body: TokenIn) -> dict[str, Any]:
    with connection(request) as conn:
        token_id, secret = create_token(conn, user=body.user, roles=body.roles,
                                        regions=body.regions, description=body.description,
                                        created_by=principal.user, expires_at=body.expires_at)
    return {"token_id": token_id, "token": secret, "user": body.user,
            "roles": sorted(set(body.roles)), "regions": body.regions}


@router.delete("/v1/tokens/{token_id}", status_code=204, tags=["identity"],
               summary="Revoke an API token")
def delete_token(request: Request, _principal: Annotated[Principal, Depends(
        require("tokens:admin"))], token_id: str) -> None:
    with connection(request) as conn:
        if not revoke_token(conn, token_id):
            raise CommandNotFoundError(f"no active token '{token_id}'", where="token")


Auditor = Annotated[Principal, Depends(require("audit:read"))]


@router.get("/v1/audit", response_model=list[AuditRecordOut], tags=["audit"],
            summary="Audit records in order")
def get_audit(request: Request, _principal: Auditor,
              object_type: Annotated[str | None, Query(max_length=100)] = None,
              object_id: Annotated[str | None, Query(max_length=200)] = None,
              after_seq: Annotated[int, Query(ge=0)] = 0, limit: Limit = None
              ) -> list[dict[str, Any]]:
    with connection(request) as conn, conn.transaction():
        return [r.__dict__ for r in audit.records(
            conn, object_type=object_type, object_id=object_id, after_seq=after_seq,
            limit=limit_of(request, limit))]


@router.get("/v1/audit/verify", response_model=VerifyOut, tags=["audit"],
            summary="Verify the audit log's hash chain")
def get_verify(request: Request, _principal: Auditor) -> dict[str, Any]:
    key = request.app.state.commands.audit_key
    with connection(request) as conn:
        conn.commit()
        conn.autocommit = True
        try:
            return audit.verify_chain(conn, key=key).to_dict()
        finally:
            conn.autocommit = False


_SUFFIX = {"text/csv": ".csv",
           "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx"}


@router.post("/v1/imports", response_model=ImportOut, tags=["imports"],
             summary="Import a CSV or Excel ledger file",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}},
                 "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":
                     {"schema": {"type": "string", "format": "binary"}}}}})
async def post_import(request: Request, principal: Annotated[Principal, Depends(
        require("imports:write"))],
        kind: Annotated[str | None, Query(max_length=50, description="What a CSV file holds "
                                                                     "(devices, meters, …)")]
        = None, dry_run: bool = False,
        filename: Annotated[str, Query(max_length=200)] = "upload") -> dict[str, Any]:
    """The whole file is validated first and applied all or nothing; every bad row is
    reported with its line and reason (422). Importing the same file again changes nothing."""
    media = request.headers.get("content-type", "").split(";")[0].strip()
    suffix = _SUFFIX.get(media)
    if suffix is None:
        raise HTTPException(415, detail={"reason": f"unsupported content type '{media}'",
                                         "hint": "send text/csv or an .xlsx workbook"})
    limit = request.app.state.api_settings.max_upload_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, detail={"reason": f"the file is larger than {limit} bytes",
                                             "hint": "split it"})
    return await _run_import(request, principal, bytes(body), suffix, kind, dry_run, filename)


async def _run_import(request: Request, principal: Principal, body: bytes, suffix: str,
                      kind: str | None, dry_run: bool, filename: str) -> dict[str, Any]:
    from starlette.concurrency import run_in_threadpool

    def work() -> dict[str, Any]:
        # The name only labels the import run: keep it to safe characters.
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename.replace("\x00", "")).stem)[:100]
        stem = stem.strip("._") or "upload"
        with tempfile.TemporaryDirectory(prefix="unimeter-import-") as tmp:
            path = Path(tmp) / f"{stem}{suffix}"
            path.write_bytes(body)
            with connection(request) as conn:
                conn.commit()
                conn.autocommit = True
                try:
                    report = import_files(conn, [path], actor=principal.user,
                                          timezone=request.app.state.utility.timezone,
                                          kind=kind, dry_run=dry_run)
                finally:
                    conn.autocommit = False
        return {"files": report.files, "dry_run": report.dry_run, "changed": report.changed,
                "summary": report.summary(),
                "counts": {k: {"rows": c.rows, "inserted": c.inserted, "updated": c.updated,
                               "unchanged": c.unchanged} for k, c in report.counts.items()}}

    return await run_in_threadpool(work)
