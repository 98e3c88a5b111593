"""Migrations on a real PostgreSQL: idempotent, recorded, and least-privilege roles."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.plugins.services import DbHandle
from unimeter.config import Config
from unimeter.db.migrate import discover_migrations, migrate
from unimeter.errors import DatabaseUnavailableError, MigrationError

pytestmark = pytest.mark.integration


def test_fresh_database_migrated_twice(empty_database: DbHandle, config: Config) -> None:
    first = migrate(empty_database.settings, config.utility)
    assert first.backend == "postgres"
    assert first.applied == [m.id for m in discover_migrations("postgres")]
    second = migrate(empty_database.settings, config.utility)
    assert second.applied == []
    assert second.already == first.applied
    with empty_database.admin() as conn:
        rows = conn.execute("SELECT id, backend FROM unimeter_meta.migrations ORDER BY id"
                            ).fetchall()
    assert [r[0] for r in rows] == first.applied
    assert {r[1] for r in rows} == {"postgres"}


def test_objects_belong_to_the_owner_role(database: DbHandle) -> None:
    with database.admin() as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'data' "
                             "AND tablename = 'raw_readings'").fetchone()
    assert owner == ("unimeter_owner",)


def _insert_raw(conn: psycopg.Connection, meter: str = "M-1") -> None:
    conn.execute(
        "INSERT INTO data.raw_readings (meter_id, register, ts, value, unit, received_at) "
        "VALUES (%s, 'volume', %s, 12.5, 'm3', now())",
        (meter, datetime(2026, 1, 1, tzinfo=UTC)))


def test_ingest_role_appends_but_never_changes_raw_readings(database: DbHandle) -> None:
    with database.connect("ingest") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("unimeter_ingest",)
        _insert_raw(conn)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE data.raw_readings SET value = 0")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM data.raw_readings")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE data.raw_readings")
    with database.admin() as conn:
        assert conn.execute("SELECT value::text FROM data.raw_readings").fetchone() == ("12.5",)
        assert conn.execute("SELECT count(*) FROM data.raw_readings").fetchone() == (1,)


def test_analyst_role_can_only_read(database: DbHandle) -> None:
    with database.admin() as conn:
        _insert_raw(conn)
    with database.connect("analyst") as conn:
        assert conn.execute("SELECT count(*) FROM data.raw_readings").fetchone() == (1,)
        for statement in (
            "INSERT INTO data.raw_readings (meter_id, register, ts, value, unit, received_at) "
            "VALUES ('x', 'volume', now(), 1, 'm3', now())",
            "UPDATE data.raw_readings SET value = 0",
            "DELETE FROM data.raw_readings",
            "CREATE TABLE data.mine (x int)",
            "CREATE TABLE analyst.mine (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # No schema anywhere in which the analyst may create or write anything.
        writable = conn.execute("""
            SELECT n.nspname FROM pg_namespace n
            WHERE has_schema_privilege(current_user, n.oid, 'CREATE')
              AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
        """).fetchall()
        assert writable == [], writable
        tables = conn.execute("""
            SELECT table_schema || '.' || table_name FROM information_schema.table_privileges
            WHERE grantee = current_user AND privilege_type <> 'SELECT'""").fetchall()
        assert tables == []


def test_changed_migration_is_refused(empty_database: DbHandle, config: Config,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate(empty_database.settings, config.utility)
    from unimeter.db import migrate as module

    real = module.discover_migrations

    def edited(backend: str) -> list[module.Migration]:
        migs = real(backend)
        copy = tmp_path / migs[1].path.name
        copy.write_text(migs[1].text() + "\n-- edited after it was applied\n")
        return [migs[0], module.Migration(migs[1].id, migs[1].name, migs[1].package, copy,
                                          migs[1].variant), *migs[2:]]

    monkeypatch.setattr(module, "discover_migrations", edited)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_database.settings, config.utility)


def test_unreachable_database_is_a_clear_error(config: Config) -> None:
    settings = config.database.model_copy(
        update={"url": "postgresql://nobody:pw@127.0.0.1:1/nowhere"})
    with pytest.raises(DatabaseUnavailableError) as info:
        migrate(settings, config.utility)
    text = str(info.value)
    assert "cannot connect" in text
    assert "unimeter services up" in text
    assert "pw@" not in text


def test_services_status_shows_addresses_and_logs() -> None:
    from tests.unimeter.test_cli import run_cli

    result = run_cli("services", "status", keep_env=True)
    assert result.returncode == 0, result.stderr
    for name in ("kafka", "postgres", "mosquitto"):
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(name))
        assert "running" in line
    assert result.stdout.count("log: ") == 3


def test_services_up_twice_is_harmless() -> None:
    from tests.unimeter.test_cli import run_cli

    result = run_cli("services", "up", keep_env=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already running") == 3


def test_a_migration_that_loses_a_lock_wait_is_run_again(
        empty_database: DbHandle, config: Config, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A background job (a TimescaleDB policy) holding a lock a migration needs: the first
    # attempt gives up (here a lock timeout; a deadlock is handled alike), the next succeeds.
    import threading
    import time

    from unimeter.db import migrate as module

    migrate(empty_database.settings, config.utility)
    with empty_database.admin() as conn:
        conn.execute("CREATE TABLE public.lock_probe (x int)")
    extra = tmp_path / "9990_lock_probe.sql"
    extra.write_text("-- unimeter: as-admin\nSET LOCAL lock_timeout = '1s';\n"
                     "LOCK TABLE public.lock_probe IN ACCESS EXCLUSIVE MODE;\n"
                     "INSERT INTO public.lock_probe VALUES (1);\n")
    real = module.discover_migrations
    monkeypatch.setattr(module, "discover_migrations", lambda backend: [
        *real(backend), module.Migration("9990", "lock_probe", "schemas", extra, None)])

    holder = empty_database.admin(autocommit=False)
    holder.execute("LOCK TABLE public.lock_probe IN ACCESS SHARE MODE")
    released = threading.Event()

    def waiting() -> bool:
        with empty_database.admin() as probe:
            row = probe.execute("SELECT count(*) FROM pg_locks WHERE NOT granted "
                                "AND relation = 'public.lock_probe'::regclass").fetchone()
        return bool(row and row[0])

    def release_after_the_first_attempt_gave_up() -> None:
        deadline = time.monotonic() + 60
        seen = False
        while time.monotonic() < deadline:
            now = waiting()
            if seen and not now:
                break
            seen = seen or now
            time.sleep(0.02)
        holder.rollback()
        released.set()

    thread = threading.Thread(target=release_after_the_first_attempt_gave_up)
    thread.start()
    try:
        report = migrate(empty_database.settings, config.utility)
    finally:
        thread.join()
        holder.close()
    assert released.is_set()
    assert report.applied == ["9990"]
    with empty_database.admin() as conn:
        assert conn.execute("SELECT x FROM public.lock_probe").fetchall() == [(1,)]
