"""How errors become HTTP answers: one JSON shape for every refusal.

``{"error": "<class>", "code": "<machine code>", "reason": "...", "where": "...",
"hint": "...", ...context}`` with the status each error class declares. A refusal by the
safety policy carries the id of the stored (rejected) command.
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from devices.commands.errors import CommandError
from devices.errors import ImportRejectedError, LedgerError, NotFoundError
from schemas.errors import UnimeterError

__all__ = ["ERROR_RESPONSES", "ErrorOut", "install_error_handlers"]


class ErrorOut(BaseModel):
    """Why a request was refused, and what to do."""

    model_config = ConfigDict(extra="allow")

    error: str
    code: str
    reason: str
    where: str | None = None
    hint: str | None = None


def _body(exc: UnimeterError, code: str) -> dict[str, Any]:
    out = exc.to_dict()
    out["code"] = code
    return out


def _status(exc: UnimeterError) -> tuple[int, str]:
    if isinstance(exc, CommandError):
        return exc.http_status, exc.code
    if isinstance(exc, ImportRejectedError):
        return 422, "import_rejected"
    if isinstance(exc, NotFoundError):
        return 404, "not_found"
    if isinstance(exc, LedgerError):
        return 409, "ledger_refused"
    return 400, "bad_request"


def install_error_handlers(app: FastAPI) -> None:
    async def unimeter_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, UnimeterError)
        status, code = _status(exc)
        body = _body(exc, code)
        if isinstance(exc, ImportRejectedError):
            body["problems"] = [p.__dict__ if hasattr(p, "__dict__") else p
                                for p in exc.context.get("problems", [])]
        return JSONResponse(body, status_code=status)

    async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [{"where": ".".join(str(p) for p in e.get("loc", ())), "reason": e["msg"]}
                    for e in exc.errors()]
        reason = "; ".join(f"{p['where']}: {p['reason']}" for p in problems[:5])
        return JSONResponse({"error": "RequestValidationError", "code": "invalid_request",
                             "reason": f"invalid request: {reason}", "problems": problems,
                             "hint": "see the OpenAPI document at /openapi.json"},
                            status_code=422)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, dict) else {"reason": str(exc.detail)}
        body = {"error": "HTTPException", "code": _HTTP_CODES.get(exc.status_code, "http_error"),
                **detail}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def bad_value(_request: Request, exc: Exception) -> JSONResponse:
        # A value the database refuses (a NUL byte, a number out of range): the caller's input.
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return JSONResponse({"error": type(exc).__name__, "code": "invalid_value",
                             "reason": f"a value cannot be stored or compared: {message}",
                             "hint": "remove control characters and keep numbers in range"},
                            status_code=422)

    app.add_exception_handler(UnimeterError, unimeter_error)
    app.add_exception_handler(psycopg.DataError, bad_value)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)


_HTTP_CODES = {401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


#: Documented error answers, so the OpenAPI document says what clients may receive.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The request cannot be carried out as asked."},
    401: {"model": ErrorOut, "description": "No or unknown bearer token."},
    403: {"model": ErrorOut, "description": "The role does not allow it, or a safety rule "
                                            "refused it."},
    404: {"model": ErrorOut, "description": "Not found, or not in the caller's regions."},
    409: {"model": ErrorOut, "description": "Conflicts with the object's state or an earlier "
                                            "request with the same client id."},
    422: {"model": ErrorOut, "description": "Invalid parameters."},
}
