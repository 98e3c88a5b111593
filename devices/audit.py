"""The append-only, hash-chained audit log of the control plane.

Every step of a command, a mass command, a quarantine or a service operation — who asked,
who approved, what the policy decided, what the FEP and the device answered — is appended to
``ops.audit_log`` in the same transaction as the change it records, so the log and the state
never disagree.

Strategy: record *n* carries ``hash_n = H(canonical(n) ‖ hash_{n-1})`` where ``canonical`` is
a sorted-key JSON array of the record's fields (sequence number, UTC time, actor, action,
object, details) and H is SHA-256, or HMAC-SHA-256 when an audit key is configured
(``UNIMETER_COMMANDS_AUDIT_KEY``) so that even a database owner who rewrites the whole chain
cannot forge it. One head row (``ops.audit_head``) is locked ``FOR UPDATE`` per append: it
serialises appenders across processes, hands out gap-free sequence numbers and remembers the
newest hash, so a removed tail shows too; the records and the new head are sent in one
pipelined round trip, and :func:`append_many` appends a batch under one lock. The table
refuses UPDATE, DELETE and TRUNCATE by trigger and the control-plane role has only INSERT
and SELECT. :func:`verify_chain` walks the
log and reports the first record whose content, link or number is wrong; publish
:func:`chain_head` elsewhere (a ticket, a signed mail) and pass it back as ``expect`` to
detect even a rewrite by someone who holds the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

__all__ = [
    "GENESIS_HASH",
    "AuditRecord",
    "ChainHead",
    "Entry",
    "VerifyReport",
    "append",
    "append_many",
    "canonical_details",
    "chain_head",
    "record_hash",
    "records",
    "verify_chain",
    "verify_records",
]

GENESIS_HASH = "0" * 64


def canonical_details(value: Any) -> Any:
    """JSON values that survive a round trip through ``jsonb`` unchanged.

    Decimals, floats and times become strings (``jsonb`` would re-format numbers and drop
    zones), enums their value, tuples and sets lists; NUL characters are dropped because
    ``jsonb`` cannot store them.
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, Enum):
        return canonical_details(value.value)
    if isinstance(value, Decimal | float):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k).replace("\x00", ""): canonical_details(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_details(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(canonical_details(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the log."""

    seq: int
    ts: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def canonical(self) -> bytes:
        fields = [self.seq, self.ts.astimezone(UTC).isoformat(), self.actor, self.action,
                  self.object_type, self.object_id, canonical_details(self.details),
                  self.prev_hash]
        return json.dumps(fields, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()


def record_hash(record: AuditRecord, key: bytes | None = None) -> str:
    """The chain hash of ``record`` (its own ``hash`` field is not part of it)."""
    data = record.canonical()
    if key:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


@dataclass(frozen=True)
class Entry:
    """One record to append (see :func:`append_many`)."""

    actor: str
    action: str
    object_type: str
    object_id: str
    details: Mapping[str, Any] | None = None


def append(conn: psycopg.Connection[Any], *, actor: str, action: str, object_type: str,
           object_id: str, details: Mapping[str, Any] | None = None,
           key: bytes | None = None, ts: datetime | None = None) -> AuditRecord:
    """Append one record in the caller's transaction (commit it with the change it records)."""
    return append_many(conn, [Entry(actor, action, object_type, object_id, details)],
                       key=key, ts=ts)[0]


def append_many(conn: psycopg.Connection[Any], entries: Sequence[Entry], *,
                key: bytes | None = None, ts: datetime | None = None) -> list[AuditRecord]:
    """Append records in order, in the caller's transaction: one head lock and two round
    trips whatever their number (a mass command audits every member this way)."""
    if not entries:
        return []
    at = (ts or datetime.now(UTC)).astimezone(UTC)
    with conn.cursor() as cur:
        cur.execute("SELECT seq, hash FROM ops.audit_head WHERE id = 1 FOR UPDATE")
        head = cur.fetchone()
        if head is None:  # pragma: no cover - the migration creates the row
            raise RuntimeError("ops.audit_head has no row; run `unimeter migrate`")
        seq, prev_hash = int(head[0]), str(head[1])
        out: list[AuditRecord] = []
        for entry in entries:
            seq += 1
            draft = AuditRecord(seq=seq, ts=at, actor=entry.actor, action=entry.action,
                                object_type=entry.object_type, object_id=entry.object_id,
                                details=canonical_details(dict(entry.details or {})),
                                prev_hash=prev_hash, hash="")
            record = AuditRecord(**{**draft.__dict__, "hash": record_hash(draft, key)})
            out.append(record)
            prev_hash = record.hash
        rows = [(r.seq, r.ts, r.actor, r.action, r.object_type, r.object_id, Jsonb(r.details),
                 r.prev_hash, r.hash) for r in out]
        marks = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        # Pipelined: the records and the new head go in one round trip. The head's trigger
        # checks that every record up to the new head is there, with the head's hash.
        with conn.pipeline():
            cur.execute("INSERT INTO ops.audit_log (seq, ts, actor, action, object_type, "
                        f"object_id, details, prev_hash, hash) VALUES {marks}",
                        [v for row in rows for v in row])
            cur.execute("UPDATE ops.audit_head SET seq = %s, hash = %s WHERE id = 1",
                        (out[-1].seq, out[-1].hash))
    return out


def chain_head(conn: psycopg.Connection[Any]) -> ChainHead:
    row = conn.execute("SELECT seq, hash FROM ops.audit_head WHERE id = 1").fetchone()
    assert row is not None
    return ChainHead(int(row[0]), str(row[1]))


def records(conn: psycopg.Connection[Any], *, object_type: str | None = None,
            object_id: str | None = None, after_seq: int = 0,
            limit: int | None = None) -> Iterator[AuditRecord]:
    """Records in sequence order, optionally of one object, streamed with a server cursor."""
    where, args = ["seq > %s"], [after_seq]
    if object_type is not None:
        where.append("object_type = %s")
        args.append(object_type)  # type: ignore[arg-type]
    if object_id is not None:
        where.append("object_id = %s")
        args.append(object_id)  # type: ignore[arg-type]
    query = ("SELECT seq, ts, actor, action, object_type, object_id, details, prev_hash, hash "
             f"FROM ops.audit_log WHERE {' AND '.join(where)} ORDER BY seq")
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    with conn.cursor(row_factory=dict_row, name="audit_records") as cur:
        cur.itersize = 2000
        cur.execute(query, args)
        for row in cur:
            yield AuditRecord(**row)


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of a verification: how far the chain is intact and what broke it."""

    checked: int
    ok: bool
    head: ChainHead
    first_bad_seq: int | None = None
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "head_seq": self.head.seq,
                "head_hash": self.head.hash, "first_bad_seq": self.first_bad_seq,
                "problem": self.problem}


def verify_records(rows: Iterable[AuditRecord], *, key: bytes | None = None,
                   head: ChainHead | None = None, expect: ChainHead | None = None
                   ) -> VerifyReport:
    """Check sequence, links and hashes of ``rows`` (in order) against ``head`` and ``expect``.

    ``head`` is the stored head row; ``expect`` a head published earlier, which must still be
    part of the chain.
    """
    prev_hash, expected_seq, checked = GENESIS_HASH, 1, 0
    seen_expect = expect is None or expect.seq == 0
    last = ChainHead(0, GENESIS_HASH)

    def bad(seq: int | None, problem: str) -> VerifyReport:
        return VerifyReport(checked, False, head or last, seq, problem)

    for record in rows:
        if record.seq != expected_seq:
            return bad(expected_seq, f"record {expected_seq} is missing (next present is "
                                     f"{record.seq}): records were deleted or inserted")
        if record.prev_hash != prev_hash:
            return bad(record.seq, f"record {record.seq} does not link to record "
                                   f"{record.seq - 1}: the chain was re-ordered or rewritten")
        if record_hash(record, key) != record.hash:
            return bad(record.seq, f"record {record.seq} ({record.action} {record.object_type} "
                                   f"{record.object_id}) does not match its hash: its content "
                                   "was changed" + ("" if key else
                                                    " (or it was written with an audit key)"))
        if expect is not None and record.seq == expect.seq:
            if record.hash != expect.hash:
                return bad(record.seq, f"record {record.seq} differs from the published head "
                                       "hash: the chain was rewritten since it was published")
            seen_expect = True
        prev_hash, expected_seq, checked = record.hash, expected_seq + 1, checked + 1
        last = ChainHead(record.seq, record.hash)
    if head is not None and (head.seq, head.hash) != (last.seq, last.hash):
        return bad(last.seq + 1, f"the head says record {head.seq} is the newest but the log "
                                 f"ends at {last.seq}: records at the end were removed")
    if not seen_expect:
        assert expect is not None
        return bad(expect.seq, f"the published head record {expect.seq} is not in the log")
    return VerifyReport(checked, True, head or last)


def verify_chain(conn: psycopg.Connection[Any], *, key: bytes | None = None,
                 expect: ChainHead | None = None) -> VerifyReport:
    """Verify the whole stored log in one repeatable-read snapshot.

    ``conn`` should be an autocommit connection: the check then runs in its own read-only
    snapshot, so appends going on meanwhile neither block it nor make it report a false gap.
    """
    with conn.transaction():
        if conn.autocommit:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        head = chain_head(conn)
        return verify_records(records(conn), key=key, head=head, expect=expect)
