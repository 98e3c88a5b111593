"""The process supervisor with real child processes: order, health, restart, give-up, stop."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.plugins.services import free_port
from unimeter.supervisor import HealthCheck, ProcessSpec, Supervisor, SupervisorError

SERVER = """
import socket, sys, time, pathlib
port = int(sys.argv[1]); marker = pathlib.Path(sys.argv[2])
marker.write_text(marker.read_text() + f"{time.time()}\\n" if marker.exists() else "x\\n")
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen()
while True:
    c, _ = s.accept(); c.close()
"""


def server_spec(tmp_path: Path, name: str, port: int, **kw: object) -> ProcessSpec:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    return ProcessSpec(name=name, argv=(sys.executable, str(script), str(port),
                                        str(tmp_path / f"{name}.starts")),
                       health=HealthCheck(tcp_port=port), ready_timeout_s=20, **kw)  # type: ignore[arg-type]


def starts(tmp_path: Path, name: str) -> int:
    return len((tmp_path / f"{name}.starts").read_text().splitlines())


def test_dependency_order_and_clean_stop(tmp_path: Path) -> None:
    events: list[str] = []
    a = server_spec(tmp_path, "a", free_port())
    b = server_spec(tmp_path, "b", free_port(), depends_on=("a",))
    sup = Supervisor([b, a], log_dir=tmp_path / "logs", progress=events.append)
    with sup:
        assert [p.spec.name for p in sup.status()] == ["a", "b"]
        assert all(p.state == "running" and p.alive() for p in sup.status())
        pids = [p.pid for p in sup.status()]
    assert events[0].startswith("a: started")
    assert events[1].startswith("b: started")
    assert events[-2:] == ["b: stopped", "a: stopped"]
    import os

    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_kill_9_is_restarted_and_healthy_again(tmp_path: Path) -> None:
    spec = server_spec(tmp_path, "fep", free_port())
    with Supervisor([spec], log_dir=tmp_path / "logs", poll_interval_s=0.1) as sup:
        first = sup.status()[0].pid
        sup.kill("fep")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (sup.status()[0].pid == first or
                                               sup.status()[0].state != "running"):
            time.sleep(0.1)
        assert sup.wait_healthy("fep", timeout=20)
        assert sup.status()[0].pid != first
        assert starts(tmp_path, "fep") == 2
        assert sup.status()[0].last_exit == -9


def test_wait_restarted_sees_the_new_process_before_it_is_healthy(tmp_path: Path) -> None:
    """The fault run's second kill lands while the restarted process recovers: it needs to
    know the new process exists, not that it is healthy."""
    spec = server_spec(tmp_path, "pipeline", free_port())
    events: list[str] = []
    with Supervisor([spec], log_dir=tmp_path / "logs", poll_interval_s=0.1,
                    progress=events.append) as sup:
        first = sup.pid_of("pipeline")
        assert first is not None
        assert not sup.wait_restarted("pipeline", first, timeout=0.3)  # nothing happened
        sup.kill("pipeline")
        assert sup.wait_restarted("pipeline", first, timeout=20)
        second = sup.pid_of("pipeline")
        assert second not in (None, first)
        sup.kill("pipeline")  # again, at once
        assert sup.wait_restarted("pipeline", second, timeout=20)
        assert sup.wait_healthy("pipeline", timeout=20)
        assert sup.pid_of("pipeline") not in (first, second)
        # three processes started (the second may die before its own start-up wrote
        # anything, so count the supervisor's starts, not the script's marker lines)
        assert sum(e.startswith("pipeline: started") for e in events) == 3


def test_crash_loop_gives_up_with_a_reason(tmp_path: Path) -> None:
    crash = ProcessSpec(name="bad", argv=(sys.executable, "-c",
                                          "import time; time.sleep(0.3); raise SystemExit(3)"),
                        max_restarts=2, restart_window_s=60)
    sup = Supervisor([crash], log_dir=tmp_path / "logs", poll_interval_s=0.05)
    with sup:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sup.status()[0].state != "failed":
            time.sleep(0.1)
        proc = sup.status()[0]
        assert proc.state == "failed"
        assert "crashed 3 times" in proc.reason
        assert "last status 3" in proc.reason


def test_process_failing_at_start_says_where_to_look(tmp_path: Path) -> None:
    bad = ProcessSpec(name="broken", argv=(sys.executable, "-c",
                                           "print('missing table data.x'); raise SystemExit(1)"),
                      health=HealthCheck(tcp_port=free_port()))
    sup = Supervisor([bad], log_dir=tmp_path / "logs")
    with pytest.raises(SupervisorError) as info:
        sup.start()
    assert "exited with status 1 while starting" in str(info.value)
    assert "missing table data.x" in str(info.value)
    sup.stop()


def test_a_failed_start_stops_what_already_started(tmp_path: Path) -> None:
    first = server_spec(tmp_path, "sink", free_port())
    bad = ProcessSpec(name="api", argv=(sys.executable, "-c", "raise SystemExit(2)"),
                      health=HealthCheck(tcp_port=free_port()), depends_on=("sink",))
    sup = Supervisor([first, bad], log_dir=tmp_path / "logs")
    with pytest.raises(SupervisorError, match="status 2"):
        sup.start()
    sink = sup.status()[0]
    assert sink.popen is not None
    assert sink.popen.poll() is not None  # stopped, not left behind
    assert sink.state == "stopped"


def test_one_shot_job_may_exit_cleanly(tmp_path: Path) -> None:
    job = ProcessSpec(name="migrate", argv=(sys.executable, "-c", "print('ok')"), restart="never")
    after = server_spec(tmp_path, "api", free_port(), depends_on=("migrate",))
    with Supervisor([job, after], log_dir=tmp_path / "logs") as sup:
        states = {p.spec.name: p.state for p in sup.status()}
    assert states == {"migrate": "exited", "api": "running"}


def test_bad_specs_are_refused() -> None:
    with pytest.raises(SupervisorError, match="unknown"):
        Supervisor([ProcessSpec(name="a", argv=("true",), depends_on=("zz",))],
                   log_dir=Path("/tmp"))
    with pytest.raises(SupervisorError, match="cycle"):
        Supervisor([ProcessSpec(name="a", argv=("true",), depends_on=("b",)),
                    ProcessSpec(name="b", argv=("true",), depends_on=("a",))],
                   log_dir=Path("/tmp"))


def test_run_plan_errors_name_the_entry(tmp_path: Path) -> None:
    from unimeter.errors import ConfigurationError
    from unimeter.runplan import load_run_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text("processes:\n  - name: sink\n    command: [sink]\n    argv: [x]\n")
    with pytest.raises(ConfigurationError, match=r"processes\.0") as info:
        load_run_plan(plan)
    assert str(plan) in str(info.value)
    plan.write_text("processes:\n  - name: api\n    command: [api]\n    http: http://x/h\n"
                    "  - name: fep\n    argv: [/bin/true]\n    depends_on: [api]\n")
    specs = load_run_plan(plan)
    assert specs[0].argv[1:4] == ("-m", "unimeter", "api")
    assert specs[0].health is not None
    assert specs[0].health.http_url == "http://x/h"
    assert specs[1].depends_on == ("api",)


HANGS = """
import pathlib, sys, time
beat = pathlib.Path(sys.argv[1]); starts = pathlib.Path(sys.argv[2])
starts.write_text((starts.read_text() if starts.exists() else "") + "x\\n")
first = len(starts.read_text().splitlines()) == 1
for _ in range(10 if first else 10**6):   # the first run hangs after ~1 s, the second beats on
    beat.touch(); time.sleep(0.1)
time.sleep(3600)
"""


def test_hung_process_with_a_stale_heartbeat_is_restarted(tmp_path: Path) -> None:
    script = tmp_path / "hangs.py"
    script.write_text(HANGS)
    beat = tmp_path / "worker.alive"
    spec = ProcessSpec(name="worker", argv=(sys.executable, str(script), str(beat),
                                            str(tmp_path / "worker.starts")),
                       health=HealthCheck(heartbeat_file=beat, heartbeat_max_age_s=0.5),
                       ready_timeout_s=20, unhealthy_restart_s=1.0)
    events: list[str] = []
    with Supervisor([spec], log_dir=tmp_path / "logs", poll_interval_s=0.1,
                    progress=events.append) as sup:
        first = sup.status()[0].pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sup.status()[0].pid == first:
            time.sleep(0.1)
        assert sup.wait_healthy("worker", timeout=20)
        assert sup.status()[0].pid != first
    assert starts(tmp_path, "worker") == 2
    assert any("health check failing" in e for e in events)
    assert any("killing it to restart" in e for e in events)


def test_unimeter_run_restarts_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """The ``unimeter run --plan`` process: a crashed child comes back, SIGTERM stops every
    child (none left behind) and the command exits 0."""
    import os
    import signal
    import subprocess

    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "processes:\n"
        f"  - name: srv\n    argv: [{sys.executable}, {script}, '{port}', "
        f"{tmp_path / 'srv.starts'}]\n    tcp_port: {port}\n    restart: always\n"
        f"  - name: idle\n    argv: [{sys.executable}, -c, 'import time; time.sleep(3600)']\n"
        "    depends_on: [srv]\n")
    proc = subprocess.Popen([sys.executable, "-m", "unimeter", "run", "--plan", str(plan),
                             "--log-dir", str(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "srv.starts").exists():
            time.sleep(0.1)
        time.sleep(1.0)
        logs = tmp_path / "logs" / "srv.log"
        assert logs.exists()
        children = _children(proc.pid)
        assert len(children) == 2
        srv_pid = next(p for p in children if str(script) in _cmdline(p))
        os.kill(srv_pid, signal.SIGKILL)
        while time.monotonic() < deadline and starts(tmp_path, "srv") < 2:
            time.sleep(0.1)
        assert starts(tmp_path, "srv") == 2
        children = _children(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "restarting in" in text
    assert "idle: stopped" in text
    assert "srv: stopped" in text
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
