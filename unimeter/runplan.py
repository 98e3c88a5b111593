"""Run plans: which unimeter processes ``unimeter run`` supervises, from a YAML file.

```yaml
processes:
  - name: sink
    command: [sink]                 # a unimeter subcommand (run with this Python)
    heartbeat_file: .unimeter/run/sink.alive
  - name: api
    command: [api, --port, "8080"]
    http: http://127.0.0.1:8080/health
    depends_on: [sink]
  - name: fep-gas
    command: [fep, --service-point, gas-dtu]
    tcp_port: 7001
    restart: always
```

``argv`` instead of ``command`` runs any program. A mistake names the file, the entry and
the reason.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from unimeter.errors import ConfigurationError
from unimeter.supervisor import HealthCheck, ProcessSpec

__all__ = ["load_run_plan", "plan_from_entries"]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    command: list[str] | None = None
    argv: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    tcp_port: int | None = Field(default=None, ge=1, le=65535)
    http: str | None = None
    heartbeat_file: Path | None = None
    ready_timeout_s: float = Field(default=90.0, gt=0)
    max_restarts: int = Field(default=5, ge=0)
    unhealthy_restart_s: float = Field(default=60.0, ge=0)
    stop_grace_s: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _one_command(self) -> _Entry:
        if (self.command is None) == (self.argv is None):
            raise ValueError("give exactly one of 'command' (a unimeter subcommand) or 'argv'")
        checks = [c for c in (self.tcp_port, self.http, self.heartbeat_file) if c is not None]
        if len(checks) > 1:
            raise ValueError("give at most one health check: tcp_port, http or heartbeat_file")
        return self

    def spec(self) -> ProcessSpec:
        argv = ([sys.executable, "-m", "unimeter", *self.command] if self.command is not None
                else list(self.argv or []))
        health = None
        if self.tcp_port or self.http or self.heartbeat_file:
            health = HealthCheck(tcp_port=self.tcp_port, http_url=self.http,
                                 heartbeat_file=self.heartbeat_file)
        return ProcessSpec(name=self.name, argv=tuple(argv), env=self.env, health=health,
                           depends_on=tuple(self.depends_on), restart=self.restart,
                           ready_timeout_s=self.ready_timeout_s,
                           max_restarts=self.max_restarts,
                           unhealthy_restart_s=self.unhealthy_restart_s,
                           stop_grace_s=self.stop_grace_s)


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    processes: list[_Entry]


def plan_from_entries(entries: list[dict[str, object]], *,
                      where: str = "plan") -> list[ProcessSpec]:
    try:
        plan = _Plan.model_validate({"processes": entries})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(f"invalid run plan entry {loc}: {first['msg']}",
                                 where=where, hint="see `unimeter run --help`") from None
    return [e.spec() for e in plan.processes]


def load_run_plan(path: Path) -> list[ProcessSpec]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read the run plan: {exc}", where=str(path)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("processes"), list):
        raise ConfigurationError("a run plan is a mapping with a 'processes' list",
                                 where=str(path))
    return plan_from_entries(doc["processes"], where=str(path))
