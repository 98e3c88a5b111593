"""Process helpers shared by the local services: pid files, waiting, stopping, installing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unimeter.errors import ServiceError

__all__ = [
    "ServiceStatus",
    "apt_install",
    "pid_alive",
    "read_pid",
    "require_binary",
    "stop_pid",
    "tail",
    "wait_until",
]


@dataclass(frozen=True)
class ServiceStatus:
    """What ``unimeter services status`` prints for one service."""

    name: str
    state: str  # running | stopped | external | unreachable
    address: str
    pid: int | None = None
    log: Path | None = None
    detail: str = ""


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def stop_pid(pid: int, *, timeout: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL; returns when the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.1)


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               alive: Callable[[], bool] | None = None, log: Path | None = None) -> None:
    """Poll ``check`` (a real client call) until it succeeds; fail fast if the process died."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        if check():
            return
        if alive is not None and not alive():
            raise ServiceError(f"{what} exited during start-up",
                               hint=f"read the log: {log}\n{tail(log)}" if log else None)
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not become healthy within {timeout:.0f} s",
                               hint=f"read the log: {log}\n{tail(log)}" if log else None)
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def require_binary(name: str, *, package: str, candidates: tuple[str, ...] = ()) -> str:
    """Path of ``name``; a missing one says exactly which package to install."""
    for candidate in (*candidates, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise ServiceError(
        f"'{name}' is not installed",
        hint=f"install it: sudo apt-get install -y {package}",
    )


def apt_install(*packages: str) -> bool:
    """Install Debian packages when running as root with apt-get; False when we cannot."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # The package lists may be missing on a fresh machine.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"apt-get could not install {' '.join(packages)}",
                           hint=result.stderr.strip()[-500:])
    return True
