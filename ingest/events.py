"""Building the FEP's Kafka messages: frames, readings, device events, alerts.

Strategy: every message of one device frame goes into one *unit* (a list of records) that the
publisher makes durable together before the device is acknowledged. Ids are deterministic
where a retry must not create a second record: a frame id is ``<fep>/<session>/<n>``
(``RawFrame`` docs), an event id derives from the frame that caused it. Alerts are rate
limited per (code, object) so a misconfigured DTU cannot flood the operators.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ingest.clock import utc_now
from ingest.publisher import OutRecord, record_of
from schemas.messages import (
    Alert,
    DeviceEvent,
    RawFrame,
    Reading,
    Scalar,
    Severity,
    batches_of,
)
from schemas.settings import KafkaSettings

__all__ = ["AlertLimiter", "MessageFactory", "new_session_id"]

_session_counter = itertools.count(1)


def new_session_id() -> str:
    """A session id unique within this process and across restarts."""
    return f"{uuid.uuid4().hex[:8]}{next(_session_counter):x}"


class AlertLimiter:
    """At most one alert per (code, object) per ``interval_s``; counts what it suppressed."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self.suppressed = 0

    def allow(self, code: str, object_id: str) -> bool:
        now = time.monotonic()
        key = (code, object_id)
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self.suppressed += 1
            return False
        if len(self._last) > 100_000:
            self._last.clear()
        self._last[key] = now
        return True


class MessageFactory:
    """Encodes the FEP's messages into publisher records (topic, key, envelope).

    Envelope ids are ``<random process prefix>-<counter>``: unique without a ``uuid4`` per
    message (which costs more than encoding the message itself at tens of thousands a
    second).
    """

    def __init__(self, kafka: KafkaSettings, *, fep: str, alert_interval_s: float = 3600.0,
                 now: Callable[[], datetime] | None = None) -> None:
        self.kafka = kafka
        #: the FEP's reception clock: the time of events and alerts given none
        self.now = now or utc_now
        self.fep = fep
        self.alerts = AlertLimiter(alert_interval_s)
        self._topic_frames = kafka.topic("frames.raw")
        self._id_prefix = f"{fep}-{uuid.uuid4().hex[:12]}-"
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def frame(self, *, frame_id: str, device_id: str, service_point: str, peer: str,
              protocol: str, direction: str, data: bytes, received_at: datetime,
              valid: bool = True, error: str | None = None) -> OutRecord:
        message = RawFrame(frame_id=frame_id, device_id=device_id, fep=self.fep,
                           service_point=service_point, peer=peer, protocol=protocol,
                           direction="in" if direction == "in" else "out",
                           received_at=received_at, data=data, valid=valid, error=error)
        return record_of(self.kafka, "frames.raw", message, producer=self.fep,
                         message_id=self.next_id(), event_time=received_at)

    def event(self, *, device_id: str, kind: str, event_id: str | None = None,
              meter_id: str | None = None, severity: Severity = "info",
              ts: datetime | None = None, attributes: Mapping[str, Any] | None = None
              ) -> OutRecord:
        attrs: dict[str, Scalar] = {}
        for key, value in (attributes or {}).items():
            attrs[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        message_id = self.next_id()
        message = DeviceEvent(event_id=event_id or message_id, device_id=device_id,
                              kind=kind, ts=ts or self.now(), meter_id=meter_id,
                              fep=self.fep, severity=severity, attributes=attrs)
        return record_of(self.kafka, "device.events", message, producer=self.fep,
                         message_id=message_id, event_time=message.ts)

    def alert(self, *, code: str, object_type: str, object_id: str, reason: str,
              severity: Severity = "warning", attributes: Mapping[str, Any] | None = None,
              limit_key: str | None = None) -> OutRecord | None:
        """An alert record, or None when one with the same code and object (or
        ``limit_key``) went out lately."""
        if not self.alerts.allow(code, limit_key or object_id):
            return None
        attrs: dict[str, Scalar] = {
            k: v if isinstance(v, str | int | float | bool | None) else str(v)
            for k, v in (attributes or {}).items()}
        message = Alert(alert_id=uuid.uuid4().hex, object_type=object_type, object_id=object_id,
                        severity=severity, code=code, reason=reason, ts=self.now(),
                        source=self.fep, attributes=attrs)
        return record_of(self.kafka, "alerts", message, producer=self.fep)

    def readings(self, readings: Sequence[Reading], *, event_time: datetime | None = None
                 ) -> list[OutRecord]:
        """The ``readings.raw`` records of one frame's readings: one batch per meter (in the
        order the frame had them; several when a meter has more than
        :data:`~schemas.messages.MAX_BATCH_READINGS`)."""
        return [self.message("readings.raw", batch, event_time=event_time)
                for batch in batches_of(readings)]

    def message(self, topic: str, message: Any, *, event_time: datetime | None = None
                ) -> OutRecord:
        return record_of(self.kafka, topic, message, producer=self.fep,
                         message_id=self.next_id(), event_time=event_time)
