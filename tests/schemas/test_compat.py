"""Backward compatibility: messages written by earlier releases still decode.

``tests/data/messages/v1/*.json`` are envelopes as release 0.1 wrote them. They are golden
data: never regenerate them to make a test pass. A change to a message type must keep them
decoding (add fields with defaults), or bump the type's VERSION and keep a reader for v1.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from schemas import codec
from schemas.messages import MESSAGE_TYPES, Message, Reading

GOLDEN = Path(__file__).parents[1] / "data" / "messages" / "v1"


def _golden_files() -> list[Path]:
    return sorted(GOLDEN.glob("*.json"))


def test_every_schema_has_a_golden_v1_message() -> None:
    names = {p.stem for p in _golden_files()}
    assert names == set(MESSAGE_TYPES)


@pytest.mark.parametrize("path", _golden_files(), ids=lambda p: p.stem)
def test_golden_v1_decodes_and_reencodes(path: Path) -> None:
    data = path.read_bytes()
    envelope, message = codec.decode(data)
    assert envelope.schema == path.stem
    # Re-encoding and decoding again gives the same message (nothing lost on the way).
    _, again = codec.decode(codec.encode(message, producer="compat"))
    assert again == message


def test_old_payload_without_optional_fields_gets_defaults() -> None:
    """A minimal v1 reading (only required fields) decodes; optional fields take defaults."""
    payload = {"meter_id": "W-1", "register": "volume", "ts": "2026-01-01T00:00:00Z",
               "value": "10.5", "unit": "m3", "received_at": "2026-01-01T00:00:01Z"}
    doc = {"schema": "reading.raw", "version": 1, "id": "x",
           "event_time": "2026-01-01T00:00:01Z", "producer": "old", "payload": payload}
    _, message = codec.decode(msgspec.json.encode(doc))
    assert isinstance(message, Reading)
    assert message.kind == "cumulative"
    assert message.status == ()


def test_unknown_extra_field_from_a_newer_minor_is_ignored() -> None:
    """Producers upgraded first may add fields; older consumers ignore them, not fail."""
    payload = {"meter_id": "W-1", "register": "volume", "ts": "2026-01-01T00:00:00Z",
               "value": "10.5", "unit": "m3", "received_at": "2026-01-01T00:00:01Z",
               "future_field": {"x": 1}}
    doc = {"schema": "reading.raw", "version": 1, "id": "x",
           "event_time": "2026-01-01T00:00:01Z", "producer": "new", "payload": payload}
    _, message = codec.decode(msgspec.json.encode(doc))
    assert isinstance(message, Message)
