"""Helpers of the command tests: a controllable clock, a service on the test fleet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from devices.commands import outbox
from devices.commands.dispatch import CommandEngine
from devices.commands.service import CommandService, direct_source, make_request
from devices.commands.settings import CommandSettings
from schemas import codec
from schemas.messages import CommandDispatch, CommandResult, Message
from tests.plugins.fleet import Fleet

T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **kw: float) -> datetime:
        self.at += timedelta(**kw)
        return self.at


def make_service(fleet: Fleet, clock: Clock, **settings: Any) -> CommandService:
    return CommandService(direct_source(fleet.db.settings.conninfo("api")),
                          CommandSettings(**settings), clock=clock)


def send(service: CommandService, device_id: str, command: str, *, by: str = "op-1",
         origin: str = "api", **kw: Any):  # type: ignore[no-untyped-def]
    params = kw.pop("params", {})
    return service.submit(make_request(device_id=device_id, command=command, requested_by=by,
                                       params=params, origin=origin, now=service.clock(), **kw))


def drain_outbox(service: CommandService) -> list[Message]:
    """Take every outbox message (as the publisher would) and decode it."""
    out: list[Message] = []
    with service.transaction() as conn:
        rows = outbox.take_batch(conn, 10_000)
        outbox.delete_rows(conn, [r.id for r in rows])
    for row in rows:
        out.append(codec.decode(row.value)[1])
    return out


def dispatches(service: CommandService) -> list[CommandDispatch]:
    return [m for m in drain_outbox(service) if isinstance(m, CommandDispatch)]


def result(dispatch: CommandDispatch, status: str, at: datetime, **kw: Any) -> CommandResult:
    return CommandResult(command_id=dispatch.command_id, device_id=dispatch.device_id,
                         status=status, ts=at, fep="fep-1",  # type: ignore[arg-type]
                         attempt=dispatch.attempt, **kw)


def engine(service: CommandService) -> CommandEngine:
    return CommandEngine(service)
