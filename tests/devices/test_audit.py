"""The hash-chained audit log: pure verification, and the real table's append-only rules."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from devices import audit
from devices.audit import GENESIS_HASH, AuditRecord, ChainHead, record_hash, verify_records
from tests.plugins.services import DbHandle

T0 = datetime(2024, 6, 1, 8, tzinfo=UTC)


def _chain(n: int, key: bytes | None = None) -> list[AuditRecord]:
    out, prev = [], GENESIS_HASH
    for i in range(1, n + 1):
        draft = AuditRecord(i, T0 + timedelta(seconds=i), f"op-{i % 2}", "command.requested",
                            "command", f"c-{i}", {"amount": "1.00", "n": i}, prev, "")
        record = dataclasses.replace(draft, hash=record_hash(draft, key))
        out.append(record)
        prev = record.hash
    return out


def test_an_intact_chain_verifies() -> None:
    rows = _chain(5)
    report = verify_records(rows, head=ChainHead(5, rows[-1].hash))
    assert report.ok
    assert report.checked == 5


def test_changed_content_is_detected() -> None:
    rows = _chain(5)
    rows[2] = dataclasses.replace(rows[2], details={"amount": "1000.00", "n": 3})
    report = verify_records(rows)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "content was changed" in report.problem


def test_changed_actor_with_recomputed_hash_breaks_the_next_link() -> None:
    rows = _chain(5)
    forged = dataclasses.replace(rows[1], actor="someone-else")
    rows[1] = dataclasses.replace(forged, hash=record_hash(forged))
    report = verify_records(rows)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "link" in report.problem


def test_deleted_record_and_removed_tail_are_detected() -> None:
    rows = _chain(5)
    gap = verify_records(rows[:2] + rows[3:])
    assert not gap.ok
    assert gap.first_bad_seq == 3
    assert "missing" in gap.problem
    tail = verify_records(rows[:3], head=ChainHead(5, rows[-1].hash))
    assert not tail.ok
    assert "removed" in tail.problem


def test_a_rewritten_chain_differs_from_the_published_head() -> None:
    rows = _chain(5)
    published = ChainHead(3, rows[2].hash)
    assert verify_records(rows, expect=published).ok
    rewritten, prev = [], GENESIS_HASH
    for record in rows:
        draft = dataclasses.replace(record, prev_hash=prev, hash="",
                                    actor="forger" if record.seq == 2 else record.actor)
        draft = dataclasses.replace(draft, hash=record_hash(draft))
        rewritten.append(draft)
        prev = draft.hash
    report = verify_records(rewritten, expect=published)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "published" in report.problem


def test_hmac_chain_needs_the_key() -> None:
    rows = _chain(3, key=b"secret")
    assert verify_records(rows, key=b"secret").ok
    assert not verify_records(rows).ok
    assert not verify_records(rows, key=b"guess").ok


def test_canonical_details_survive_json() -> None:
    details = audit.canonical_details({"amount": Decimal("1.10"), "at": T0, "ratio": 0.5,
                                       "tags": ("a", "b"), "nul": "x\x00y"})
    assert details == {"amount": "1.10", "at": "2024-06-01T08:00:00+00:00", "ratio": "0.5",
                       "tags": ["a", "b"], "nul": "xy"}


# --------------------------------------------------------------------------- real table


@pytest.mark.integration
def test_appends_verify_and_tampering_in_the_database_is_detected(database: DbHandle) -> None:
    with database.connect("api") as conn:
        for i in range(20):
            with conn.transaction():
                audit.append(conn, actor="op-1", action="command.requested",
                             object_type="command", object_id=f"c-{i}",
                             details={"amount": Decimal("12.30"), "i": i, "text": "阀门关闭"})
        report = audit.verify_chain(conn)
        assert report.ok
        assert report.checked == 20
        assert report.head.seq == 20
        published = report.head

        # The control-plane role can neither change nor delete audit records.
        for statement in ("UPDATE ops.audit_log SET actor = 'x' WHERE seq = 3",
                          "DELETE FROM ops.audit_log WHERE seq = 3",
                          "TRUNCATE ops.audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)

    # Even the owner, with the guard trigger disabled, cannot change a record unnoticed.
    with database.admin() as admin:
        admin.execute("ALTER TABLE ops.audit_log DISABLE TRIGGER audit_log_no_update_delete")
        admin.execute("UPDATE ops.audit_log SET details = details || '{\"i\": 99}' "
                      "WHERE seq = 7")
    with database.connect("api") as conn:
        report = audit.verify_chain(conn)
        assert not report.ok
        assert report.first_bad_seq == 7
    with database.admin() as admin:
        admin.execute("DELETE FROM ops.audit_log WHERE seq >= 7")
    with database.connect("api") as conn:
        report = audit.verify_chain(conn)
        assert not report.ok
        assert "removed" in report.problem
        assert not audit.verify_chain(conn, expect=published).ok


@pytest.mark.integration
def test_concurrent_appenders_get_a_gap_free_chain(database: DbHandle) -> None:
    import threading

    def worker(n: int) -> None:
        with database.connect("api") as conn:
            for i in range(25):
                with conn.transaction():
                    audit.append(conn, actor=f"w{n}", action="x", object_type="t",
                                 object_id=f"{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with database.connect("api") as conn:
        report = audit.verify_chain(conn)
    assert report.ok
    assert report.checked == 100


@pytest.mark.integration
def test_batches_append_in_order_and_the_head_cannot_skip(database: DbHandle) -> None:
    with database.connect("api") as conn:
        with conn.transaction():
            batch = audit.append_many(conn, [
                audit.Entry("op-1", "command.requested", "command", f"c-{i}", {"i": i})
                for i in range(5)])
        assert [r.seq for r in batch] == [1, 2, 3, 4, 5]
        assert batch[1].prev_hash == batch[0].hash
        # The head may only move onto records that exist, with their hash.
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("UPDATE ops.audit_head SET seq = 9, hash = %s WHERE id = 1",
                         (batch[-1].hash,))
        report = audit.verify_chain(conn)
    assert report.ok
    assert report.checked == 5
