"""The envelope codec: round trips, identities, and precise refusals."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec
import pytest

from schemas import codec
from schemas.errors import MessageDecodeError, SchemaVersionError
from schemas.messages import MESSAGE_TYPES, Message, Reading
from tests.plugins.samples import T0


@pytest.mark.parametrize("schema", sorted(MESSAGE_TYPES))
def test_every_message_round_trips(samples: dict[str, Message], schema: str) -> None:
    message = samples[schema]
    data = codec.encode(message, producer="test")
    envelope, decoded = codec.decode(data, type(message))
    assert decoded == message
    assert envelope.schema == schema
    assert envelope.version == type(message).VERSION
    assert envelope.producer == "test"


def test_decimal_travels_exactly(samples: dict[str, Message]) -> None:
    reading = samples["reading.raw"]
    assert isinstance(reading, Reading)
    data = codec.encode(reading, producer="t")
    assert b'"12345.678"' in data  # a string on the wire: no binary float in between
    _, decoded = codec.decode(data)
    assert isinstance(decoded, Reading)
    assert decoded.value == Decimal("12345.678")
    assert str(decoded.value) == "12345.678"


def test_naive_timestamp_is_refused(samples: dict[str, Message]) -> None:
    data = codec.encode(samples["reading.raw"], producer="t")
    naive = data.replace(b'"2026-07-10T01:00:00Z"', b'"2026-07-10T01:00:00"', 1)
    assert naive != data
    with pytest.raises(MessageDecodeError, match=r"reading\.raw"):
        codec.decode(naive)


def test_wrong_expected_type_names_both(samples: dict[str, Message]) -> None:
    data = codec.encode(samples["alert"], producer="t")
    with pytest.raises(MessageDecodeError, match=r"expected schema 'reading\.raw' but got 'alert'"):
        codec.decode(data, Reading)


def test_newer_version_is_refused_not_misread(samples: dict[str, Message]) -> None:
    data = codec.encode(samples["reading.raw"], producer="t")
    newer = data.replace(b'"version":1', b'"version":2', 1)
    with pytest.raises(SchemaVersionError, match="newer"):
        codec.decode(newer)


def test_unknown_schema_and_garbage(samples: dict[str, Message]) -> None:
    data = codec.encode(samples["reading.raw"], producer="t")
    with pytest.raises(MessageDecodeError, match="unknown schema"):
        codec.decode(data.replace(b'"reading.raw"', b'"reading.rare"', 1))
    with pytest.raises(MessageDecodeError, match="not a unimeter envelope") as info:
        codec.decode(b"\x68\x10\x44garbage")
    assert info.value.to_dict()["excerpt"].startswith("68 10 44")


def test_invalid_payload_field_is_named(samples: dict[str, Message]) -> None:
    data = codec.encode(samples["reading.raw"], producer="t")
    bad = data.replace(b'"value":"12345.678"', b'"value":"twelve"', 1)
    with pytest.raises(MessageDecodeError) as info:
        codec.decode(bad)
    assert "$.value" in str(info.value)


def test_envelope_event_time_is_aware() -> None:
    reading = Reading(meter_id="m", register="volume", ts=T0, value=Decimal(1), unit="m3",
                      received_at=T0)
    envelope = codec.decode_envelope(codec.encode(reading, producer="p"))
    assert isinstance(envelope.event_time, datetime)
    assert envelope.event_time.tzinfo is not None


def test_every_message_has_a_key(samples: dict[str, Message]) -> None:
    for message in samples.values():
        key = message.key()
        assert isinstance(key, bytes)
    assert samples["reading.raw"].key() == b"GAS-000001"
    assert samples["billing.charge"].key() == b"ACC-1"
    assert samples["command.request"].key() == b"GAS-000001"


def test_payload_is_plain_json(samples: dict[str, Message]) -> None:
    """Downstream consumers read the envelope with any JSON library."""
    import json

    doc = json.loads(codec.encode(samples["billing.charge"], producer="p"))
    assert doc["payload"]["amount"] == "21.54"
    assert doc["payload"]["segments"][1]["unit_price"] == "2.83"
    assert msgspec.json.decode(codec.encode_payload(samples["alert"]))["code"] == "billing.alarm1"
