"""Ordered, idempotent, recorded database migrations across the packages that own tables.

Strategy: each package that owns tables keeps ``<package>/migrations/NNNN_name.sql``. Ids are
global and unique (ranges: schemas 0001–0099, devices 0100–0199, sinks 0200–0299, aggregates
0300–0399, billing tables 0400–0499, ingest 0500–0599, VEE 0600–0699, api 0700–0799). A
migration may come in backend variants, ``NNNN_name.timescale.sql`` and
``NNNN_name.postgres.sql``; the variant of the database's backend wins over a plain file.

The backend is decided once per database — TimescaleDB when the extension can be created
(``UNIMETER_DATABASE_TIMESCALE=auto``), required with ``on``, never with ``off`` — and recorded
in ``unimeter_meta.settings``; later runs reuse the recorded backend so a database never mixes
the two. Every migration runs in its own transaction together with its record, under an
advisory lock, so two migrators never race. A migration whose first line is
``-- unimeter: no-transaction`` runs statement by statement in autocommit (TimescaleDB
continuous-aggregate DDL needs that). An applied migration whose file changed is an error: add
a new migration instead of editing an applied one.

Migrations run as the owner role (``SET ROLE``), so every object belongs to it; a migration
whose first line is ``-- unimeter: as-admin`` runs as the connecting login instead (roles,
schemas, extensions).

Templates: ``{{role.NAME}}`` becomes the quoted role identifier of component NAME,
``{{role_name.NAME}}`` the same name as a string literal, ``{{timezone}}`` the utility's zone
as a literal, ``{{late_data_days}}`` an integer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from schemas.settings import DatabaseSettings, UtilitySettings
from unimeter.errors import DatabaseUnavailableError, MigrationError

__all__ = [
    "MIGRATION_PACKAGES",
    "Migration",
    "MigrationReport",
    "backend_of",
    "connect_admin",
    "discover_migrations",
    "migrate",
]

#: Packages searched for a ``migrations/`` folder.
MIGRATION_PACKAGES = ("schemas", "devices", "sinks", "aggregates", "billing", "ingest", "vee",
                      "pipeline", "api")

_FILE = re.compile(r"^(?P<id>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<variant>timescale|postgres))?"
                   r"\.sql$")
_TEMPLATE = re.compile(r"\{\{\s*(?P<key>[a-z_]+(?:\.[a-z_]+)?)\s*\}\}")
_LOCK_ID = 0x756E696D  # "unim"


@dataclass(frozen=True)
class Migration:
    id: str
    name: str
    package: str
    path: Path
    variant: str | None

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def _directives(self) -> set[str]:
        out = set()
        for line in self.text().splitlines():
            stripped = line.strip().lower()
            if not stripped.startswith("-- unimeter:"):
                break
            out.add(stripped.split(":", 1)[1].strip())
        return out

    @property
    def no_transaction(self) -> bool:
        return "no-transaction" in self._directives()

    @property
    def as_admin(self) -> bool:
        return "as-admin" in self._directives()


@dataclass
class MigrationReport:
    backend: str
    applied: list[str]
    already: list[str]


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "migrations"


def discover_migrations(backend: str) -> list[Migration]:
    """All migrations for ``backend`` ('timescale' or 'postgres') in id order."""
    found: dict[str, list[Migration]] = {}
    for package in MIGRATION_PACKAGES:
        folder = _package_dir(package)
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.sql")):
            match = _FILE.match(path.name)
            if not match:
                raise MigrationError(f"migration file name '{path.name}' is not NNNN_name.sql "
                                     "or NNNN_name.(timescale|postgres).sql", where=str(path))
            found.setdefault(match["id"], []).append(
                Migration(match["id"], match["name"], package, path, match["variant"]))
    chosen = []
    for mig_id in sorted(found):
        candidates = found[mig_id]
        names = {(m.package, m.name) for m in candidates}
        if len(names) > 1:
            raise MigrationError(
                f"migration id {mig_id} is used twice: "
                + ", ".join(f"{p}/{n}" for p, n in sorted(names)),
                hint="give one of them a free id in its package's range")
        variant = [m for m in candidates if m.variant == backend]
        plain = [m for m in candidates if m.variant is None]
        if variant:
            chosen.append(variant[0])
        elif plain:
            chosen.append(plain[0])
    return chosen


def connect_admin(database: DatabaseSettings, *, autocommit: bool = False) -> psycopg.Connection:
    """Connect with the configured login (no role switch): for migrations and tests."""
    try:
        return psycopg.connect(database.conninfo(), autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        from schemas.settings import mask_url

        raise DatabaseUnavailableError(
            f"cannot connect to the database: {str(exc).strip().splitlines()[0]}",
            where=mask_url(database.url),
            hint="start it with `unimeter services up` or correct UNIMETER_DATABASE_URL",
        ) from None


def backend_of(conn: psycopg.Connection) -> str | None:
    """The backend recorded for this database, or None before the first migration."""
    row = conn.execute(
        "SELECT to_regclass('unimeter_meta.settings') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    value = conn.execute(
        "SELECT value FROM unimeter_meta.settings WHERE key = 'backend'").fetchone()
    return str(value[0]) if value else None


def _decide_backend(conn: psycopg.Connection, mode: str) -> str:
    recorded = backend_of(conn)
    if recorded:
        if mode == "on" and recorded != "timescale":
            raise MigrationError("this database was migrated for plain PostgreSQL but "
                                 "UNIMETER_DATABASE_TIMESCALE=on",
                                 hint="use a fresh database for TimescaleDB")
        return recorded
    if mode == "off":
        return "postgres"
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if available:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return "timescale"
        except psycopg.Error as exc:
            if mode == "on":
                raise MigrationError(f"TimescaleDB is installed but cannot be enabled: {exc}",
                                     hint="add timescaledb to shared_preload_libraries and "
                                          "restart PostgreSQL") from None
            return "postgres"
    if mode == "on":
        raise MigrationError("UNIMETER_DATABASE_TIMESCALE=on but the timescaledb extension is "
                             "not installed on this server",
                             hint="install TimescaleDB 2.x or set UNIMETER_DATABASE_TIMESCALE=auto")
    return "postgres"


def render(text: str, database: DatabaseSettings, utility: UtilitySettings,
           conn: psycopg.Connection) -> str:
    """Fill the ``{{…}}`` placeholders of a migration with quoted values."""

    def replace(match: re.Match[str]) -> str:
        key = match["key"]
        if key.startswith("role."):
            return sql.Identifier(database.role(key.split(".", 1)[1])).as_string(conn)
        if key.startswith("role_name."):
            return sql.Literal(database.role(key.split(".", 1)[1])).as_string(conn)
        if key == "timezone":
            return sql.Literal(utility.timezone).as_string(conn)
        if key == "late_data_days":
            return str(int(utility.late_data_days))
        raise MigrationError(f"unknown placeholder '{{{{{key}}}}}'")

    return _TEMPLATE.sub(replace, text)


def _split_statements(text: str) -> list[str]:
    """Split a no-transaction migration on ``;`` at line ends (no dollar-quoted bodies there)."""
    out, current = [], []
    for line in text.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(current).strip()
            if stmt and not all(s.strip().startswith("--") or not s.strip()
                                for s in stmt.splitlines()):
                out.append(stmt)
            current = []
    rest = "\n".join(current).strip()
    if rest and not all(s.strip().startswith("--") or not s.strip() for s in rest.splitlines()):
        out.append(rest)
    return out


def migrate(database: DatabaseSettings, utility: UtilitySettings, *,
            progress: Callable[[str], None] = lambda _m: None) -> MigrationReport:
    """Apply every migration not yet recorded; returns what was applied."""
    with connect_admin(database, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            backend = _decide_backend(conn, database.timescale)
            conn.execute("CREATE SCHEMA IF NOT EXISTS unimeter_meta")
            conn.execute("""
                CREATE TABLE IF NOT EXISTS unimeter_meta.settings (
                    key text PRIMARY KEY, value text NOT NULL)""")
            conn.execute("""
                CREATE TABLE IF NOT EXISTS unimeter_meta.migrations (
                    id text PRIMARY KEY, package text NOT NULL, name text NOT NULL,
                    checksum text NOT NULL, backend text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(), duration_ms integer)""")
            conn.execute("""
                INSERT INTO unimeter_meta.settings (key, value) VALUES ('backend', %s),
                    ('timezone', %s)
                ON CONFLICT (key) DO NOTHING""", (backend, utility.timezone))
            applied_rows = conn.execute(
                "SELECT id, name, checksum FROM unimeter_meta.migrations").fetchall()
            applied = {row[0]: (row[1], row[2]) for row in applied_rows}
            report = MigrationReport(backend=backend, applied=[], already=[])
            for mig in discover_migrations(backend):
                if mig.id in applied:
                    _name, checksum = applied[mig.id]
                    if checksum != mig.checksum():
                        raise MigrationError(
                            f"migration {mig.id}_{mig.name} changed after it was applied",
                            where=str(mig.path),
                            hint="restore the file and add a new migration for the change")
                    report.already.append(mig.id)
                    continue
                progress(f"applying {mig.id}_{mig.name} ({mig.package}, {backend})")
                started = time.monotonic()
                text = render(mig.text(), database, utility, conn)
                owner = sql.Identifier(database.role("owner")).as_string(conn)
                try:
                    if mig.no_transaction:
                        if not mig.as_admin:
                            conn.execute(f"SET ROLE {owner}")
                        try:
                            for statement in _split_statements(text):
                                conn.execute(statement.encode())
                        finally:
                            conn.execute("RESET ROLE")
                        _record(conn, mig, backend, started)
                    else:
                        _apply_in_transaction(conn, mig, text, owner, backend, started)
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {mig.id}_{mig.name} failed: "
                        f"{str(exc).strip().splitlines()[0]}",
                        where=str(mig.path),
                        hint="fix the migration; nothing of it was applied"
                             if not mig.no_transaction else
                             "fix the migration; it ran without a transaction, so check what "
                             "it created before running again") from None
                report.applied.append(mig.id)
            return report
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))


#: Attempts of a transactional migration that lost a deadlock or a lock wait.
_LOCK_ATTEMPTS = 5


def _apply_in_transaction(conn: psycopg.Connection, mig: Migration, text: str, owner: str,
                          backend: str, started: float) -> None:
    """Run one migration and its record in a transaction; again if it lost a deadlock.

    Background jobs may hold locks on what a migration alters (TimescaleDB starts the refresh
    and compression policies a migration adds at once, and a refresh of a daily aggregate
    reads the hourly one): PostgreSQL then aborts one side of the deadlock. Nothing of an
    aborted migration stays, so running it again is safe.
    """
    for attempt in range(1, _LOCK_ATTEMPTS + 1):
        try:
            with conn.transaction():
                if not mig.as_admin:
                    conn.execute(f"SET LOCAL ROLE {owner}")
                conn.execute(text.encode())
                conn.execute("RESET ROLE")
                _record(conn, mig, backend, started)
            return
        except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
            if attempt == _LOCK_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)


def _record(conn: psycopg.Connection, mig: Migration, backend: str, started: float) -> None:
    conn.execute(
        "INSERT INTO unimeter_meta.migrations (id, package, name, checksum, backend, duration_ms)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (mig.id, mig.package, mig.name, mig.checksum(), backend,
         int((time.monotonic() - started) * 1000)))
