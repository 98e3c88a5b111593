"""The transactional outbox of the control plane: dispatches and alerts to publish.

Strategy: a state change that must reach Kafka (a command dispatched, an operator
quarantined, a mass command paused) writes its message into ``ops.command_outbox`` in the
same transaction, and ``NOTIFY unimeter_commands`` wakes the publisher. The publisher
(:func:`take_batch` inside a transaction, send with ``acks=all``, then commit the delete) never
publishes an uncommitted change and never loses a committed one; a crash between send and
commit publishes the batch again, which consumers absorb by key (command id and attempt).
Topic names are stored without the deployment's prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from schemas import codec
from schemas.messages import Message
from schemas.topics import topic_spec

__all__ = ["NOTIFY_CHANNEL", "OutboxRow", "delete_rows", "enqueue", "enqueue_many", "notify",
           "take_batch"]

NOTIFY_CHANNEL = "unimeter_commands"
PRODUCER = "unimeter-commands"


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    key: bytes
    value: bytes


def enqueue(conn: psycopg.Connection[Any], topic: str, message: Message) -> None:
    """Add ``message`` for ``topic`` (a catalog name) to the outbox in the caller's transaction."""
    spec = topic_spec(topic)
    if not isinstance(message, spec.payloads):
        raise TypeError(f"{type(message).__name__} does not belong on topic {topic}")
    conn.execute("INSERT INTO ops.command_outbox (topic, key, value) VALUES (%s, %s, %s)",
                 (topic, message.key(), codec.encode(message, producer=PRODUCER)))
    notify(conn)


def enqueue_many(conn: psycopg.Connection[Any], items: Sequence[tuple[str, Message]]) -> None:
    """Add several messages in one pipelined batch, then notify once."""
    if not items:
        return
    for topic, message in items:
        if not isinstance(message, topic_spec(topic).payloads):
            raise TypeError(f"{type(message).__name__} does not belong on topic {topic}")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ops.command_outbox (topic, key, value) VALUES (%s, %s, %s)",
                        [(t, m.key(), codec.encode(m, producer=PRODUCER)) for t, m in items])
    notify(conn)


def notify(conn: psycopg.Connection[Any]) -> None:
    """Wake ``unimeter command serve`` when the transaction commits."""
    conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))


def take_batch(conn: psycopg.Connection[Any], limit: int) -> list[OutboxRow]:
    """The oldest rows, locked for this transaction (other publishers skip them)."""
    rows = conn.execute(
        "SELECT id, topic, key, value FROM ops.command_outbox ORDER BY id LIMIT %s "
        "FOR UPDATE SKIP LOCKED", (limit,)).fetchall()
    return [OutboxRow(int(r[0]), str(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]


def delete_rows(conn: psycopg.Connection[Any], ids: Sequence[int]) -> None:
    conn.execute("DELETE FROM ops.command_outbox WHERE id = ANY (%s)", (list(ids),))
