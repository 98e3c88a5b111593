"""Alerts as a stream: Server-Sent Events fed by the ``alerts`` topic.

Each client gets its own Kafka consumer (no consumer group: every client sees every alert)
starting at the newest alert, and receives ``event: alert`` with the alert as JSON, filtered
by the caller's regions (an alert's ``attributes.region``; a caller limited to regions sees
only alerts that carry one of them) and optionally by severity and object type. A comment
line every ``sse_heartbeat_s`` keeps proxies from closing an idle stream. The stream's event
ids are ``partition:offset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from aiokafka import AIOKafkaConsumer
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from api.auth import Principal, require
from api.errors import ERROR_RESPONSES
from schemas import codec
from schemas.errors import MessageDecodeError
from schemas.messages import Alert

router = APIRouter(tags=["alerts"], responses=ERROR_RESPONSES)

_SEVERITY = {"info": 0, "warning": 1, "major": 2, "critical": 3}


def alert_visible(alert: Alert, principal: Principal) -> bool:
    if principal.regions is None:
        return True
    region = alert.attributes.get("region")
    return isinstance(region, str) and region in principal.regions


@router.get("/v1/alerts/stream", summary="Alerts as Server-Sent Events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: alert` lines with the alert as JSON"},
                       503: {"description": "No Kafka is configured for this server."}})
async def stream_alerts(request: Request,
                        principal: Annotated[Principal, Depends(require("alerts:read"))],
                        min_severity: Literal["info", "warning", "major", "critical"] = "info",
                        object_type: Annotated[str | None, Query(max_length=100)] = None
                        ) -> StreamingResponse:
    kafka = request.app.state.kafka
    if kafka is None:
        raise HTTPException(503, detail={"reason": "this API server has no Kafka configured",
                                         "hint": "start it with `unimeter api`"})
    heartbeat = request.app.state.api_settings.sse_heartbeat_s
    floor = _SEVERITY[min_severity]
    consumer = AIOKafkaConsumer(kafka.topic("alerts"), bootstrap_servers=kafka.bootstrap,
                                group_id=None, auto_offset_reset="latest",
                                client_id=f"{kafka.client_id}-api-alerts")
    await consumer.start()
    # Make sure the consumer has its partitions before we say "connected".
    await consumer.getmany(timeout_ms=100)

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            while not await request.is_disconnected():
                batch = await consumer.getmany(timeout_ms=int(heartbeat * 1000))
                if not batch:
                    yield b": keep-alive\n\n"
                    continue
                for tp, records in batch.items():
                    for record in records:
                        try:
                            _, alert = codec.decode(record.value, Alert)
                        except MessageDecodeError:
                            continue
                        assert isinstance(alert, Alert)
                        if _SEVERITY[alert.severity] < floor or not alert_visible(alert,
                                                                                  principal):
                            continue
                        if object_type and alert.object_type != object_type:
                            continue
                        data = json.dumps(_plain(alert), ensure_ascii=False)
                        yield (f"id: {tp.partition}:{record.offset}\nevent: alert\n"
                               f"data: {data}\n\n").encode()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(consumer.stop())

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _plain(alert: Alert) -> dict[str, Any]:
    return json.loads(codec.encode_payload(alert))  # type: ignore[no-any-return]
