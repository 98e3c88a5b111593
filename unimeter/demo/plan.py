"""What the demo runs: its configuration file and the supervisor's process list.

Strategy: one run directory holds everything of a demo run (config YAML, ledger files,
process logs, FEP spool, pipeline state, simulator log, report), so runs never mix and a test
can run a demo beside anything else. Ports are chosen free at start unless given; the MQTT
topic root carries the run's name, so NB-IoT traffic of two runs never meets. The processes
read the generated file through ``UNIMETER_CONFIG``; everything else (database, Kafka topic
prefix) comes from the environment the demo was started with.

The process list, in dependency order: the ledger publisher (keeps ``ledger.*`` current), the
pipeline worker (VEE and billing agents), the sink, the control plane (``command serve``), one
FEP for every service point of the fleet, the scheduler and the API. Long-running processes
touch heartbeat files or listen on ports, which are their health checks.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simulator.fleet import Fleet
from unimeter.supervisor import HealthCheck, ProcessSpec

__all__ = ["DemoLayout", "demo_config", "demo_processes", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DemoLayout:
    """Where a demo run keeps its files and which ports it uses."""

    run_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, run_dir: Path, *, api_port: int | None = None) -> DemoLayout:
        run_dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in ("dtu-cjt188", "dtu-dlt645",
                                                "concentrator-376", "modbus")}
        ports["api"] = api_port or free_port()
        return cls(run_dir=run_dir.resolve(), ports=ports)

    @property
    def config_file(self) -> Path:
        return self.run_dir / "unimeter.yaml"

    @property
    def ledger_dir(self) -> Path:
        return self.run_dir / "ledger"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def heartbeat_dir(self) -> Path:
        return self.run_dir / "alive"

    @property
    def report_dir(self) -> Path:
        return self.run_dir / "report"

    @property
    def clock_file(self) -> Path:
        """The simulated time line the FEP stamps reception by (``fep.clock_file``)."""
        return self.run_dir / "clock.json"

    @property
    def simulator_log(self) -> Path:
        return self.run_dir / "simulator.jsonl"

    def heartbeat(self, name: str) -> Path:
        return self.heartbeat_dir / f"{name}.alive"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"


def modbus_endpoints(fleet: Fleet, layout: DemoLayout) -> list[str]:
    """``LINK=host:port/unit`` of the simulator's RTUs: link *i* listens on base port + *i*."""
    out = []
    for index, link in enumerate(fleet.of_kind("modbus")):
        for meter in link.meters:
            out.append(f"{link.link_id}=127.0.0.1:{layout.ports['modbus'] + index}/"
                       f"{meter.modbus_unit}")
    return out


def demo_config(fleet: Fleet, layout: DemoLayout, *, run_name: str, speed: float,
                poll_every_s: float, report_every_s: float = 12 * 3600.0) -> dict[str, Any]:
    """The ``$UNIMETER_CONFIG`` document of the run (written by :func:`write_config`)."""
    spec = fleet.spec
    ports = layout.ports
    points: dict[str, Any] = {
        spec.dtu_service_point: {"transport": "tcp", "protocol": "cjt188-2004", "link": "dtu",
                                 "host": "127.0.0.1", "port": ports["dtu-cjt188"],
                                 "link_protocol": "dtu-text",
                                 "max_connections_per_source": 100_000},
        spec.dtu645_service_point: {"transport": "tcp", "protocol": "dlt645-2007",
                                    "link": "dtu", "host": "127.0.0.1",
                                    "port": ports["dtu-dlt645"], "link_protocol": "dtu-text",
                                    "max_connections_per_source": 100_000},
        spec.concentrator_service_point: {
            "transport": "tcp", "protocol": "qgdw376.1", "link": "concentrator",
            "host": "127.0.0.1", "port": ports["concentrator-376"],
            "forwarded_protocol": "dlt645-2007", "max_connections_per_source": 100_000},
        spec.nbiot_service_point: {"transport": "mqtt", "protocol": "cjt188-2004"},
        spec.modbus_service_point: {"transport": "modbus", "protocol": "modbus-tcp"},
    }
    plans: dict[str, Any] = {
        "read-concentrators": {"service_point": spec.concentrator_service_point,
                               "target": "link", "interval_s": poll_every_s,
                               "jitter_s": min(5.0, poll_every_s / 4), "timeout_s": 10,
                               "per_link_concurrency": 4, "retries": 1},
    }
    endpoints = modbus_endpoints(fleet, layout)
    if endpoints:
        plans["poll-rtus"] = {"service_point": spec.modbus_service_point, "target": "modbus",
                              "template": "flow-computer", "endpoints": endpoints,
                              "interval_s": poll_every_s, "jitter_s": min(5.0, poll_every_s / 4),
                              "timeout_s": 5, "retries": 1}
    return {
        "mqtt": {"topic_root": f"unimeter-demo/{run_name}"},
        # the FEP stamps reception in the fleet's simulated time (the demo writes the file
        # when the fleet starts): meter clocks agree with it, and readings whose frames carry
        # no time (DL/T 645, Modbus) land on the simulated day they were taken
        "fep": {"instance": "fep-demo", "service_points": points, "poll_plans": plans,
                "spool_dir": str(layout.run_dir / "spool"), "registry": "postgres",
                "clock_file": str(layout.clock_file)},
        "pipeline": {"data_dir": str(layout.run_dir / "pipeline"),
                     "app_id": f"pipeline-{run_name}"},
        "simulator": {"fep_host": "127.0.0.1", "dtu_port": ports["dtu-cjt188"],
                      "dtu645_port": ports["dtu-dlt645"],
                      "concentrator_port": ports["concentrator-376"],
                      "modbus_host": "127.0.0.1", "modbus_port": ports["modbus"],
                      "speed": speed, "log_dir": str(layout.run_dir),
                      # what a utility's DTU meters commonly do: a few reports a day
                      "dtu_report_s": report_every_s, "electricity_report_s": report_every_s,
                      "nbiot_report_s": 86400.0},
        "api": {"host": "127.0.0.1", "port": ports["api"]},
        # consumer groups of this run only (several runs may share one broker)
        "sink": {"group_id": f"unimeter-sink-{run_name}"},
        "commands": {"consumer_group": f"unimeter-commands-{run_name}"},
        "kafka": {"client_id": f"unimeter-{run_name}"},
        # aggregates every half minute so the API shows fresh figures while the fleet runs
        "scheduler": {"aggregates_every_s": 30, "quality_report_dir":
                      str(layout.run_dir / "dq")},
    }


def write_config(document: dict[str, Any], layout: DemoLayout) -> Path:
    layout.config_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return layout.config_file


def demo_processes(layout: DemoLayout, env: dict[str, str]) -> list[ProcessSpec]:
    """The supervised processes of a demo run (commands of this Python's ``unimeter``)."""

    def cmd(*args: str) -> tuple[str, ...]:
        return (sys.executable, "-m", "unimeter", *args)

    def beat(name: str) -> HealthCheck:
        return HealthCheck(heartbeat_file=layout.heartbeat(name), heartbeat_max_age_s=60)

    env = {**env, "UNIMETER_CONFIG": str(layout.config_file)}
    return [
        ProcessSpec(name="ledger-publish", argv=cmd("ledger", "publish"), env=env,
                    restart="always"),
        ProcessSpec(name="pipeline", argv=cmd("pipeline", "--heartbeat-file",
                                              str(layout.heartbeat("pipeline"))),
                    env=env, health=beat("pipeline"), ready_timeout_s=180,
                    depends_on=("ledger-publish",)),
        ProcessSpec(name="sink", argv=cmd("sink", "--quiet"), env=env),
        ProcessSpec(name="commands", argv=cmd("command", "serve", "--heartbeat-file",
                                              str(layout.heartbeat("commands"))),
                    env=env, health=beat("commands"), ready_timeout_s=120),
        ProcessSpec(name="fep", argv=cmd("fep", "--status-every", "10", "--heartbeat-file",
                                         str(layout.heartbeat("fep"))),
                    env=env, health=HealthCheck(tcp_port=layout.ports["dtu-cjt188"]),
                    depends_on=("ledger-publish", "commands"), ready_timeout_s=180),
        ProcessSpec(name="scheduler", argv=cmd("scheduler", "--heartbeat-file",
                                               str(layout.heartbeat("scheduler"))),
                    env=env, health=beat("scheduler")),
        ProcessSpec(name="api", argv=cmd("api"), env=env,
                    health=HealthCheck(http_url=f"{layout.api_url}/openapi.json"),
                    ready_timeout_s=120),
    ]
