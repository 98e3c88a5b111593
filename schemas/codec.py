"""The one envelope and the one codec for every Kafka message.

Wire format: a JSON object (msgspec, the fastest JSON codec for typed Python we measured,
readable by any downstream consumer without our code)::

    {"schema": "reading.raw", "version": 1, "id": "…", "event_time": "…Z",
     "producer": "fep-1", "payload": {…}}

Strategy: the envelope is decoded first with the payload left raw (``msgspec.Raw``); the
schema name picks the payload type from :data:`~schemas.messages.MESSAGE_TYPES`, and one
cached typed decoder per type decodes it. A payload of an older version decodes into the
current type (fields added since carry defaults); a newer version than this code knows is
refused with :class:`~schemas.errors.SchemaVersionError` rather than misread.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any, Generic, TypeVar

import msgspec

from schemas.errors import MessageDecodeError, SchemaVersionError
from schemas.messages import MESSAGE_TYPES, AwareDatetime, Message

__all__ = [
    "Envelope",
    "decode",
    "decode_envelope",
    "decode_payload",
    "decoder_for",
    "encode",
    "encode_payload",
]

M = TypeVar("M", bound=Message)


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """What every Kafka value is: identity and provenance around a typed payload."""

    schema: str
    version: int
    id: str
    event_time: AwareDatetime
    producer: str
    payload: msgspec.Raw


class _OutgoingEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope as written: the same fields in the same order as :class:`Envelope`, with
    the payload a typed message, so one encoder pass writes both (no intermediate payload
    bytes wrapped in ``msgspec.Raw``); the bytes are identical."""

    schema: str
    version: int
    id: str
    event_time: datetime
    producer: str
    payload: Message


class _TypedEnvelope(msgspec.Struct, Generic[M], frozen=True, kw_only=True):
    """The envelope with its payload typed: one decoder pass for a topic of one type."""

    schema: str
    version: int
    id: str
    event_time: AwareDatetime
    producer: str
    payload: M


_encoder = msgspec.json.Encoder(decimal_format="string")
_envelope_decoder = msgspec.json.Decoder(Envelope)


@cache
def _payload_decoder(cls: type[Message]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(cls)


def encode_payload(message: Message) -> bytes:
    """The payload alone as JSON bytes (used by tables and files that store one type)."""
    return _encoder.encode(message)


def encode(message: Message, *, producer: str, event_time: datetime | None = None,
           message_id: str | None = None) -> bytes:
    """Wrap ``message`` in the envelope and encode it for Kafka."""
    return _encoder.encode(_OutgoingEnvelope(
        schema=message.SCHEMA,
        version=message.VERSION,
        id=message_id or uuid.uuid4().hex,
        event_time=event_time or datetime.now(UTC),
        producer=producer,
        payload=message,
    ))


def decode_envelope(data: bytes) -> Envelope:
    """Decode the envelope only; raises :class:`MessageDecodeError` with the reason."""
    try:
        return _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(
            f"not a unimeter envelope: {exc}",
            hint="the producer wrote something other than a unimeter message; see the "
                 "dead-letter topic for the bytes",
            excerpt=data[:64].hex(" "),
        ) from None


def decode_payload(envelope: Envelope, expected: type[M] | None = None) -> Message:
    """Decode the payload of an already decoded envelope into its typed message."""
    cls = MESSAGE_TYPES.get(envelope.schema)
    if cls is None:
        raise MessageDecodeError(f"unknown schema '{envelope.schema}'",
                                 hint="upgrade this consumer or route the topic correctly",
                                 message_id=envelope.id)
    if expected is not None and cls is not expected:
        raise MessageDecodeError(
            f"expected schema '{expected.SCHEMA}' but got '{envelope.schema}'",
            hint="a producer wrote to the wrong topic", message_id=envelope.id)
    if envelope.version > cls.VERSION:
        raise SchemaVersionError(
            f"schema '{envelope.schema}' version {envelope.version} is newer than the "
            f"version {cls.VERSION} this code reads",
            hint="upgrade this consumer before its producers", message_id=envelope.id)
    try:
        return _payload_decoder(cls).decode(envelope.payload)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise MessageDecodeError(f"invalid '{envelope.schema}' payload: {exc}",
                                 where=envelope.schema, message_id=envelope.id) from None
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"malformed '{envelope.schema}' payload: {exc}",
                                 where=envelope.schema, message_id=envelope.id) from None


def decode(data: bytes, expected: type[M] | None = None) -> tuple[Envelope, Message]:
    """Decode envelope and payload in one call."""
    envelope = decode_envelope(data)
    return envelope, decode_payload(envelope, expected)


def decoder_for(cls: type[M]) -> Callable[[bytes], Message]:
    """A decoder for a topic whose messages are ``cls``: ``decode(data)[1]``, faster.

    Envelope and payload are decoded in one pass (about 40 % less CPU than the two passes of
    :func:`decode`). Anything else — another schema, a newer version, bytes that do not decode
    — goes through :func:`decode`, so the result, or the error raised, is exactly its.
    """
    typed = msgspec.json.Decoder(_TypedEnvelope[cls])  # type: ignore[valid-type]
    schema, version = cls.SCHEMA, cls.VERSION

    def decode_one(data: bytes) -> Message:
        try:
            envelope = typed.decode(data)
        except msgspec.DecodeError:
            return decode(data)[1]
        if envelope.schema != schema or envelope.version > version:
            return decode(data)[1]
        return envelope.payload

    return decode_one
