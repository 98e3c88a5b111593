"""The HTTP API application: ``create_app`` builds it, ``unimeter api`` serves it.

Strategy: one FastAPI app over the control-plane library — every route is a thin adapter that
checks the caller's permission and region, then calls the same functions as the CLI
(:class:`~devices.commands.service.CommandService`, :mod:`devices.commands.groups`,
:class:`~devices.operations.OperationService`, :mod:`devices.inventory`,
:mod:`devices.topology`, :mod:`devices.importer`), so the safety rules, the audit and the
idempotency are the same whichever door a request comes through. Handlers are synchronous
and run in the server's thread pool over a ``psycopg_pool`` of ``api`` connections; the
alert stream is asynchronous (Kafka consumer per client). OpenAPI is at ``/openapi.json``,
the interactive documentation at ``/docs``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from psycopg_pool import ConnectionPool

from api.auth import _TokenCache
from api.errors import install_error_handlers
from api.routes import admin, alerts, commands, data, devices, operations
from api.settings import ApiSettings
from devices.commands.service import CommandService
from devices.commands.settings import CommandSettings
from devices.operations import OperationService
from schemas.settings import DatabaseSettings, KafkaSettings, UtilitySettings

__all__ = ["create_app"]

DESCRIPTION = """\
The control plane of unimeter: devices and the collection network, commands with their
safety rules (second approvers, mass-command previews and waves, quarantine, protected
customers, valve arming), service operations, readings and aggregates, alerts as a stream,
ledger imports.

Authenticate with `Authorization: Bearer <token>` (`unimeter api token create`). Roles:
operator, approver, outworker, billing, analyst, admin; a token limited to regions sees only
their objects. Lists are pages (`limit`, `cursor` → `next_cursor`); time ranges are bounded.
"""


def create_app(database: DatabaseSettings, *, kafka: KafkaSettings | None = None,
               settings: ApiSettings | None = None,
               command_settings: CommandSettings | None = None,
               utility: UtilitySettings | None = None) -> FastAPI:
    """The application over ``database`` (acting as the ``api`` role); ``kafka`` feeds the
    alert stream."""
    settings = settings or ApiSettings()
    utility = utility or UtilitySettings()
    pool = ConnectionPool(database.conninfo("api"), min_size=1, max_size=settings.pool_size,
                          open=True, name="unimeter-api")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="unimeter API", version="1", description=DESCRIPTION,
                  lifespan=lifespan)
    service = CommandService(pool, command_settings, timezone=utility.timezone)
    state: Any = app.state
    state.pool = pool
    state.api_settings = settings
    state.utility = utility
    state.kafka = kafka
    state.commands = service
    state.operations = OperationService(service)
    state.token_cache = _TokenCache()
    install_error_handlers(app)
    for module in (admin, devices, commands, operations, data, alerts):
        app.include_router(module.router)
    return app
