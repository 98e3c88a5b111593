"""Helpers shared by the routes: services from the app state, paging, region checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
from fastapi import Query, Request

from api.auth import Principal
from api.settings import ApiSettings
from devices.commands.errors import CommandNotFoundError
from devices.commands.service import CommandService
from devices.inventory import device_region
from devices.operations import OperationService

__all__ = ["Cursor", "Limit", "connection", "ensure_device_visible", "limit_of", "service"]

Limit = Annotated[int | None, Query(ge=1, le=10000, description="Page size (bounded by the "
                                                                "server's largest page).")]
Cursor = Annotated[str | None, Query(max_length=500, description="next_cursor of the "
                                                                 "previous page.")]


def service(request: Request) -> CommandService:
    return request.app.state.commands  # type: ignore[no-any-return]


def operations(request: Request) -> OperationService:
    return request.app.state.operations  # type: ignore[no-any-return]


def settings(request: Request) -> ApiSettings:
    return request.app.state.api_settings  # type: ignore[no-any-return]


def limit_of(request: Request, limit: int | None) -> int:
    s = settings(request)
    return min(limit or s.page_size, s.max_page_size)


@contextmanager
def connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    with request.app.state.pool.connection() as conn:
        yield conn


def not_visible(kind: str, ident: str) -> CommandNotFoundError:
    return CommandNotFoundError(f"no {kind} '{ident}'", where=f"{kind} {ident}",
                                hint="check the id (and that it is in your regions)")


def ensure_device_visible(request: Request, principal: Principal, device_id: str) -> None:
    """404 for a device that does not exist or lies outside the caller's regions."""
    with connection(request) as conn:
        try:
            region = device_region(conn, device_id)
        except CommandNotFoundError:
            raise not_visible("device", device_id) from None
    if not principal.sees(region):
        raise not_visible("device", device_id)
