"""The alert stream (Server-Sent Events) over a real socket, fed by the real Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer

from api.app import create_app
from api.settings import ApiSettings
from schemas import codec
from schemas.messages import Alert
from schemas.settings import KafkaSettings
from tests.api.conftest import make_tokens
from tests.plugins.fleet import Fleet
from tests.plugins.services import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def alerts_topic(kafka_settings: KafkaSettings) -> Iterator[KafkaSettings]:
    from schemas.topics import topic_spec
    from unimeter.topics import create_topics, delete_topics

    own = kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}{uuid.uuid4().hex[:6]}."})
    create_topics(own, (topic_spec("alerts"),))
    yield own
    with contextlib.suppress(Exception):
        delete_topics(own, [own.topic("alerts")])


@pytest.fixture
def server(fleet: Fleet, alerts_topic: KafkaSettings) -> Iterator[tuple[str, dict[str, str]]]:
    app = create_app(fleet.db.settings, kafka=alerts_topic,
                     settings=ApiSettings(sse_heartbeat_s=0.5))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", make_tokens(fleet)
    srv.should_exit = True
    thread.join(10)


def _alert(region: str, severity: str = "major") -> Alert:
    return Alert(alert_id=uuid.uuid4().hex, object_type="meter", object_id=f"M-{region}",
                 severity=severity, code="valve_tamper",  # type: ignore[arg-type]
                 reason="tamper alarm", ts=datetime.now(UTC), source="test",
                 attributes={"region": region})


async def test_stream_delivers_visible_alerts_only(server: tuple[str, dict[str, str]],
                                                   alerts_topic: KafkaSettings) -> None:
    base, tokens = server
    received: list[dict[str, object]] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client, client.stream(
            "GET", "/v1/alerts/stream", headers={"Authorization": f"Bearer {tokens['op_r1']}"},
            params={"min_severity": "major"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        assert await anext(lines) == ": connected"
        producer = AIOKafkaProducer(bootstrap_servers=alerts_topic.bootstrap, acks="all")
        await producer.start()
        try:
            for alert in (_alert("R2"), _alert("R1", "info"), _alert("R1")):
                await producer.send_and_wait(alerts_topic.topic("alerts"),
                                             codec.encode(alert, producer="test"),
                                             key=alert.key())
        finally:
            await producer.stop()
        async with asyncio.timeout(30):
            async for line in lines:
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    break
    assert len(received) == 1
    assert received[0]["attributes"] == {"region": "R1"}
    assert received[0]["severity"] == "major"


def test_stream_needs_a_token_and_kafka(fleet: Fleet) -> None:
    from fastapi.testclient import TestClient

    app = create_app(fleet.db.settings)  # no Kafka given
    with TestClient(app) as client:
        assert client.get("/v1/alerts/stream").status_code == 401
        headers = {"Authorization": f"Bearer {make_tokens(fleet)['admin']}"}
        assert client.get("/v1/alerts/stream", headers=headers).status_code == 503
