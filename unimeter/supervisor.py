"""A small process supervisor: start unimeter's processes, watch them, restart, stop cleanly.

Strategy: each process is a :class:`ProcessSpec` — its command line, an optional health check
(a TCP port that accepts, an HTTP URL that answers 2xx, or a heartbeat file that keeps being
touched), what it depends on, and its restart policy. :class:`Supervisor` starts processes in
dependency order and waits for each to be healthy before starting its dependants; a monitor
loop restarts a process that exited unexpectedly, with exponential backoff, and gives up on
one that keeps crashing (``max_restarts`` within ``restart_window_s``), reporting why. Stopping
sends SIGTERM in reverse dependency order and SIGKILL after the grace period. Every process
writes its output to ``<log_dir>/<name>.log``; :meth:`Supervisor.status` says where.

The supervisor is used by ``unimeter run`` and the demo; fault tests use :meth:`kill` to
``kill -9`` a process and watch it come back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from unimeter.errors import UnimeterError

__all__ = ["HealthCheck", "ProcessSpec", "ProcessState", "Supervisor", "SupervisorError"]


class SupervisorError(UnimeterError):
    """A supervised process could not be started or kept running."""


@dataclass(frozen=True)
class HealthCheck:
    """How to tell that a process is ready and alive. At most one of the three is used."""

    tcp_port: int | None = None
    http_url: str | None = None
    heartbeat_file: Path | None = None
    heartbeat_max_age_s: float = 30.0

    def __call__(self) -> bool:
        if self.tcp_port is not None:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.tcp_port), timeout=1.0):
                return True
            return False
        if self.http_url is not None:
            try:
                with urllib.request.urlopen(self.http_url, timeout=2.0) as resp:  # noqa: S310
                    return 200 <= int(resp.status) < 300
            except (OSError, ValueError):
                return False
        if self.heartbeat_file is not None:
            try:
                age = time.time() - self.heartbeat_file.stat().st_mtime
            except OSError:
                return False
            return age <= self.heartbeat_max_age_s
        return True


@dataclass(frozen=True)
class ProcessSpec:
    """One supervised process."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    health: HealthCheck | None = None
    depends_on: tuple[str, ...] = ()
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    ready_timeout_s: float = 60.0
    stop_grace_s: float = 20.0
    max_restarts: int = 5
    restart_window_s: float = 300.0
    cwd: Path | None = None
    #: A running process whose health check keeps failing this long (hung, heartbeat stale,
    #: port closed) is killed and restarted like a crashed one; 0 = only report it.
    unhealthy_restart_s: float = 60.0


@dataclass
class ProcessState:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes] | None = None
    state: str = "stopped"  # starting | running | backoff | stopped | failed | exited
    restarts: list[float] = field(default_factory=list)
    last_exit: int | None = None
    next_start: float = 0.0
    log: Path | None = None
    reason: str = ""
    unhealthy_since: float | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Supervisor:
    """Start, monitor, restart and stop a set of processes."""

    def __init__(self, specs: list[ProcessSpec], *, log_dir: Path,
                 progress: Callable[[str], None] = lambda _m: None,
                 poll_interval_s: float = 0.5) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise SupervisorError(f"duplicate process names in {names}")
        for spec in specs:
            missing = set(spec.depends_on) - set(names)
            if missing:
                raise SupervisorError(f"process '{spec.name}' depends on unknown {sorted(missing)}")
        self._order = _topological(specs)
        self._procs = {s.name: ProcessState(spec=s) for s in specs}
        self.log_dir = log_dir
        self.progress = progress
        self.poll_interval_s = poll_interval_s
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every process in dependency order; each must be healthy before dependants."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name in self._order:
                self._spawn(self._procs[name])
                self._wait_ready(self._procs[name])
        except BaseException:
            # what did start must not outlive a failed start (nobody else would stop it)
            self.stop()
            raise
        self._stopping.clear()
        self._monitor = threading.Thread(target=self._monitor_loop, name="supervisor",
                                         daemon=True)
        self._monitor.start()

    def stop(self) -> None:
        """SIGTERM in reverse dependency order; SIGKILL what is still alive after the grace."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        for name in reversed(self._order):
            proc = self._procs[name]
            with self._lock:
                self._terminate(proc)
                proc.state = "stopped"

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def kill(self, name: str) -> None:
        """``kill -9`` one process (fault injection); the monitor restarts it per its policy."""
        with self._lock:
            proc = self._procs[name]
            if proc.alive():
                assert proc.popen is not None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)

    def pid_of(self, name: str) -> int | None:
        """The process id ``name`` runs (or last ran) as."""
        with self._lock:
            return self._procs[name].pid

    def wait_restarted(self, name: str, old_pid: int | None, timeout: float = 60.0) -> bool:
        """True once ``name`` runs as a new process (not ``old_pid``), healthy or not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self._procs[name]
            if proc.alive() and proc.pid != old_pid:
                return True
            time.sleep(0.05)
        return False

    def status(self) -> list[ProcessState]:
        with self._lock:
            return [self._procs[n] for n in self._order]

    def __iter__(self) -> Iterator[ProcessState]:
        return iter(self.status())

    def wait_healthy(self, name: str, timeout: float = 60.0) -> bool:
        """True once ``name`` is running and its health check passes (after a restart, too)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self._procs[name]
            if proc.alive() and proc.state == "running" and (
                    proc.spec.health is None or proc.spec.health()):
                return True
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------------ internals

    def _check_health(self, proc: ProcessState, now: float) -> None:
        """Kill a live process whose health check failed for ``unhealthy_restart_s``; the
        next monitor round sees it exited and restarts it with the usual backoff."""
        spec = proc.spec
        if spec.health is None:
            return
        if spec.health():
            if proc.unhealthy_since is not None:
                self.progress(f"{spec.name}: healthy again")
            proc.unhealthy_since = None
            return
        if proc.unhealthy_since is None:
            proc.unhealthy_since = now
            self.progress(f"{spec.name}: health check failing")
            return
        if spec.unhealthy_restart_s > 0 and now - proc.unhealthy_since >= spec.unhealthy_restart_s:
            self.progress(f"{spec.name}: unhealthy for {now - proc.unhealthy_since:.0f} s; "
                          "killing it to restart")
            proc.unhealthy_since = None
            assert proc.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)

    def _spawn(self, proc: ProcessState) -> None:
        spec = proc.spec
        proc.log = self.log_dir / f"{spec.name}.log"
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        with open(proc.log, "ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start: "
                      f"{' '.join(spec.argv)}\n".encode())
            log.flush()
            # Each process leads its own process group, so a kill reaches its children too.
            proc.popen = subprocess.Popen(
                list(spec.argv), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=spec.cwd, start_new_session=True)
        proc.state = "starting"
        proc.unhealthy_since = None
        self.progress(f"{spec.name}: started (pid {proc.popen.pid}, log {proc.log})")

    def _wait_ready(self, proc: ProcessState) -> None:
        spec = proc.spec
        deadline = time.monotonic() + spec.ready_timeout_s
        # A one-shot job (no restart, no health check: migrate, topics create) must finish
        # successfully before anything that depends on it starts.
        oneshot = spec.restart == "never" and spec.health is None
        while True:
            if oneshot and proc.alive():
                if time.monotonic() > deadline:
                    raise SupervisorError(f"job '{spec.name}' did not finish within "
                                          f"{spec.ready_timeout_s:.0f} s", where=str(proc.log))
                time.sleep(0.05)
                continue
            if not proc.alive():
                code = proc.popen.returncode if proc.popen else None
                if spec.restart == "never" and code == 0:
                    proc.state = "exited"
                    proc.last_exit = 0
                    return
                raise SupervisorError(
                    f"process '{spec.name}' exited with status {code} while starting",
                    where=str(proc.log), hint=f"read its log: {proc.log}\n{_tail(proc.log)}")
            if spec.health is None or spec.health():
                proc.state = "running"
                return
            if time.monotonic() > deadline:
                raise SupervisorError(
                    f"process '{spec.name}' did not become healthy within "
                    f"{spec.ready_timeout_s:.0f} s", where=str(proc.log),
                    hint=f"read its log: {proc.log}\n{_tail(proc.log)}")
            time.sleep(0.1)

    def _terminate(self, proc: ProcessState) -> None:
        if not proc.alive():
            return
        assert proc.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=proc.spec.stop_grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)
        self.progress(f"{proc.spec.name}: stopped")

    def _monitor_loop(self) -> None:
        while not self._stopping.wait(self.poll_interval_s):
            with self._lock:
                for name in self._order:
                    self._check(self._procs[name])

    def _check(self, proc: ProcessState) -> None:
        spec, now = proc.spec, time.monotonic()
        if proc.state == "backoff" and now >= proc.next_start:
            self._spawn(proc)
            return
        if proc.state == "starting" and proc.alive():
            if spec.health is None or spec.health():
                proc.state = "running"
                self.progress(f"{spec.name}: healthy again")
            return
        if proc.state == "running" and proc.alive():
            self._check_health(proc, now)
            return
        if proc.state not in ("running", "starting") or proc.alive():
            return
        code = proc.popen.returncode if proc.popen else None
        proc.last_exit = code
        if spec.restart == "never" or (spec.restart == "on-failure" and code == 0):
            proc.state = "exited"
            self.progress(f"{spec.name}: exited with status {code}")
            return
        proc.restarts = [t for t in proc.restarts if now - t < spec.restart_window_s]
        if len(proc.restarts) >= spec.max_restarts:
            proc.state = "failed"
            proc.reason = (f"crashed {len(proc.restarts) + 1} times within "
                           f"{spec.restart_window_s:.0f} s; last status {code}")
            self.progress(f"{spec.name}: FAILED ({proc.reason}); see {proc.log}")
            return
        delay = min(30.0, 0.5 * 2 ** len(proc.restarts))
        proc.restarts.append(now)
        proc.state = "backoff"
        proc.next_start = now + delay
        self.progress(f"{spec.name}: exited with status {code}; restarting in {delay:.1f} s")


def _topological(specs: list[ProcessSpec]) -> list[str]:
    by_name = {s.name: s for s in specs}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise SupervisorError(f"dependency cycle through '{name}'")
        visiting.add(name)
        for dep in by_name[name].depends_on:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for spec in specs:
        visit(spec.name)
    return order


def _tail(path: Path | None, lines: int = 20) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
