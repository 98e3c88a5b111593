"""The local PostgreSQL server: the machine's binaries, the project's own data directory and port.

Strategy: find the newest installed server (``/usr/lib/postgresql/<n>/bin``), installing
Debian's ``postgresql-15`` when none is there and we run as root. PostgreSQL refuses to run as
root, so a root caller runs it as the ``postgres`` OS user. The cluster gets a superuser
``unimeter`` with a generated password kept in ``<state>/postgres/superuser.password`` (0600),
password authentication on TCP, and ``fsync`` on (the fault tests kill it). When the
TimescaleDB library is installed, it is preloaded so migrations can use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from unimeter.errors import ServiceError
from unimeter.services._proc import (
    ServiceStatus,
    apt_install,
    pid_alive,
    tail,
    wait_until,
)
from unimeter.services.settings import ServicesSettings

__all__ = ["LocalPostgres", "find_postgres_bin", "postgres_reachable"]

SUPERUSER = "unimeter"
DATABASE = "unimeter"

_log = logging.getLogger(__name__)


def find_postgres_bin(explicit: Path | None = None) -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, newest version first."""
    if explicit is not None:
        return explicit if (explicit / "pg_ctl").exists() else None
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted((p for p in root.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name), reverse=True)
        for version in versions:
            if (version / "bin" / "pg_ctl").exists() and (version / "bin" / "initdb").exists():
                return version / "bin"
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "initdb").exists():
        return Path(found).resolve().parent
    return None


def postgres_reachable(url: str, timeout: int = 3) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def installed_version(bindir: Path) -> str | None:
    """The version of the server binaries in ``bindir`` ("15.20"), from ``postgres -V``."""
    try:
        out = subprocess.run([str(bindir / "postgres"), "-V"], capture_output=True, text=True,
                             check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version(out)


def parse_version(text: str) -> str | None:
    """"postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" or a server_version
    ("15.18 (Debian 15.18-0+deb12u1)") → "15.20" / "15.18"."""
    for word in text.replace("(", " ").replace(")", " ").split():
        head = word.split(".")
        if len(head) >= 2 and all(part.isdigit() for part in head):
            return word
    return None


def stale_server(running: str | None, installed: str | None) -> str | None:
    """A warning when the running server is not the installed one (a package upgrade
    replaced its binaries underneath it: new databases then fail to load the new libraries,
    e.g. ``plpgsql.so: undefined symbol``); None when they match or one is unknown."""
    if not running or not installed or running == installed:
        return None
    return (f"the running PostgreSQL is {running} but the installed binaries are {installed} "
            "(upgraded underneath it): restart it — `unimeter services down && unimeter "
            "services up` — before new databases fail to load its libraries")


def running_version(url: str, timeout: int = 3) -> str | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error:
        return None
    return parse_version(str(row[0])) if row else None


class LocalPostgres:
    name = "postgres"

    def __init__(self, settings: ServicesSettings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "postgres"
        self.data = self.home / "data"
        self.run_dir = self.home / "run"
        self.log = self.home / "logs" / "postgresql.log"
        self.password_file = self.home / "superuser.password"

    # ------------------------------------------------------------------ identity

    def password(self) -> str:
        if not self.password_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.password_file.write_text(secrets.token_urlsafe(18))
            self.password_file.chmod(0o600)
        return self.password_file.read_text().strip()

    def url(self, database: str = DATABASE) -> str:
        return (f"postgresql://{SUPERUSER}:{quote(self.password(), safe='')}@127.0.0.1:"
                f"{self.settings.postgres_port}/{database}")

    # ------------------------------------------------------------------ binaries

    def bin_dir(self, *, install: bool = True) -> Path:
        found = find_postgres_bin(self.settings.postgres_bin_dir)
        if found is None and install and apt_install("postgresql-15"):
            found = find_postgres_bin(self.settings.postgres_bin_dir)
        if found is None:
            raise ServiceError(
                "the PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed",
                hint="install them: sudo apt-get install -y postgresql-15 (or set "
                     "UNIMETER_DATABASE_URL to an existing server)",
            )
        return found

    def _run_as(self) -> list[str]:
        """Prefix that runs a server command as an unprivileged user when we are root."""
        if os.geteuid() != 0:
            return []
        user = self.settings.postgres_os_user
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", user], check=False,
                           capture_output=True)
        return ["runuser", "-u", user, "--"]

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(self.settings.postgres_os_user)
        for path in paths:
            for root, dirs, files in os.walk(path):
                os.chown(root, entry.pw_uid, entry.pw_gid)
                for name in dirs + files:
                    with contextlib.suppress(FileNotFoundError):
                        os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
        # The server user must be able to reach the state directory.
        for parent in self.home.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    # ------------------------------------------------------------------ lifecycle

    def _initdb(self, bindir: Path) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)
        pwfile = self.home / "pwfile.tmp"
        pwfile.write_text(self.password() + "\n")
        self._chown(self.home)
        cmd = [*self._run_as(), str(bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
               f"--pwfile={pwfile}", "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
               "--encoding=UTF8", "--locale=C", "--data-checksums"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            raise ServiceError("initdb failed", where=str(self.data),
                               hint=(result.stdout + result.stderr).strip()[-800:])

    def _write_config(self, bindir: Path) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port = {self.settings.postgres_port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.run_dir}'",
            "max_connections = 200",
            "shared_buffers = 256MB",
            "work_mem = 16MB",
            "maintenance_work_mem = 128MB",
            "max_wal_size = 2GB",
            "fsync = on",
            "synchronous_commit = on",
            "timezone = 'UTC'",
            "log_timezone = 'UTC'",
            "password_encryption = 'scram-sha-256'",
            "max_locks_per_transaction = 256",
        ]
        if self.timescale_installed(bindir):
            lines += ["shared_preload_libraries = 'timescaledb'",
                      "timescaledb.telemetry_level = off",
                      "timescaledb.max_background_workers = 8",
                      "max_worker_processes = 16"]
        (self.data / "unimeter.conf").write_text("\n".join(lines) + "\n")
        conf = self.data / "postgresql.conf"
        text = conf.read_text()
        if "include_if_exists = 'unimeter.conf'" not in text:
            conf.write_text(text + "\ninclude_if_exists = 'unimeter.conf'\n")
        self._chown(self.home)

    @staticmethod
    def timescale_installed(bindir: Path) -> bool:
        """True when the TimescaleDB extension library is installed for this server."""
        version = bindir.parent.name
        return any(Path(p).exists() for p in (
            bindir.parent / "lib" / "timescaledb.so",
            Path(f"/usr/lib/postgresql/{version}/lib/timescaledb.so"),
        ))

    def running(self) -> bool:
        return pid_alive(self.pid())

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> bool:
        """Start the server (initialising it once); False when it was already running."""
        if self.running():
            # Already running (perhaps still recovering after a crash): wait for it rather
            # than starting a second postmaster on the same data directory.
            wait_until(lambda: postgres_reachable(self.url("postgres")),
                       timeout=self.settings.start_timeout_s, what="the running PostgreSQL",
                       alive=self.running, log=self.log)
            self._ensure_database()
            self._warn_if_stale()
            return False
        bindir = self.bin_dir()
        self._initdb(bindir)
        self._write_config(bindir)
        cmd = [*self._run_as(), str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
               "-w", "-t", str(int(self.settings.start_timeout_s)), "start"]
        crashed = (self.data / "postmaster.pid").exists()
        for attempt in range(10 if crashed else 1):
            result = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                    start_new_session=True)
            if result.returncode == 0:
                break
            # After a crash (kill -9) the old backends notice their postmaster is gone and exit
            # within a second or two; until then the server refuses to start on the same data.
            time.sleep(1.0 + attempt * 0.5)
        if result.returncode != 0:
            raise ServiceError("PostgreSQL did not start",
                               hint=f"{result.stdout.strip()[-300:]}\n{tail(self.log)}")
        wait_until(lambda: postgres_reachable(self.url("postgres")),
                   timeout=self.settings.start_timeout_s, what="PostgreSQL", log=self.log)
        self._ensure_database()
        return True

    def stale(self, bindir: Path | None = None) -> str | None:
        """A warning when the running server is older than the installed binaries (in
        ``bindir``, found when not given)."""
        bindir = bindir or find_postgres_bin(self.settings.postgres_bin_dir)
        if bindir is None or not self.running():
            return None
        return stale_server(running_version(self.url("postgres")), installed_version(bindir))

    def _warn_if_stale(self) -> None:
        warning = self.stale()
        if warning:
            _log.warning("%s", warning)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> bool:
        if not self.running():
            return False
        bindir = self.bin_dir(install=False)
        subprocess.run([*self._run_as(), str(bindir / "pg_ctl"), "-D", str(self.data), "-m",
                        "fast", "-w", "stop"], capture_output=True, check=False)
        return True

    def kill(self) -> None:
        """SIGKILL the postmaster, for fault tests (crash recovery runs on the next start).

        Returns once the postmaster is gone and so are its children: they notice their parent
        died and exit by themselves, as after a real crash, but until the last one has, the
        shared memory of the old server is in use and a new server refuses to start.
        """
        pid = self.pid()
        if pid_alive(pid):
            assert pid is not None
            os.kill(pid, 9)
            deadline = time.monotonic() + 60
            while (pid_alive(pid) or self._processes_in_data_dir()) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)

    def _processes_in_data_dir(self) -> list[int]:
        """Processes working in this server's data directory (every server process does)."""
        proc = Path("/proc")
        if not proc.is_dir():
            return []
        data = str(self.data.resolve())
        found = []
        for entry in proc.iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "cwd") == data:
                        found.append(int(entry.name))
        return found

    def status(self) -> ServiceStatus:
        address = f"127.0.0.1:{self.settings.postgres_port}"
        if not self.running():
            return ServiceStatus(self.name, "stopped", address, log=self.log)
        reachable = postgres_reachable(self.url("postgres"))
        bindir = find_postgres_bin(self.settings.postgres_bin_dir)
        detail = f"PostgreSQL {bindir.parent.name}" if bindir else ""
        if bindir and self.timescale_installed(bindir):
            detail += " + TimescaleDB library"
        if reachable and bindir and (warning := self.stale(bindir)):
            detail += f"; WARNING: {warning}"
        return ServiceStatus(self.name, "running" if reachable else "unreachable", address,
                             pid=self.pid(), log=self.log, detail=detail)
