"""Local services for development, tests and the demo: Kafka, PostgreSQL, Mosquitto.

``unimeter services up`` starts what is not given from outside, ``down`` stops it, ``status``
shows each service with its address, pid and log file. ``up --started-file F`` records what
this call started, so ``down --started-file F`` (used by ``make test``) stops only that and
leaves alone a developer's services that were already running.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from unimeter.services._proc import ServiceStatus
from unimeter.services.kafka import LocalKafka, kafka_reachable
from unimeter.services.mosquitto import LocalMosquitto, mqtt_reachable
from unimeter.services.postgres import LocalPostgres, postgres_reachable
from unimeter.services.settings import ServicesSettings

if TYPE_CHECKING:
    from unimeter.config import Config

__all__ = [
    "SERVICE_NAMES",
    "LocalKafka",
    "LocalMosquitto",
    "LocalPostgres",
    "ServiceStatus",
    "ServicesSettings",
    "local_service",
    "services_down",
    "services_status",
    "services_up",
]

SERVICE_NAMES = ("kafka", "postgres", "mosquitto")


class LocalService(Protocol):
    name: str

    def start(self) -> bool: ...
    def stop(self) -> bool: ...
    def kill(self) -> None: ...
    def status(self) -> ServiceStatus: ...


def local_service(name: str, settings: ServicesSettings) -> LocalService:
    factories: dict[str, Callable[[ServicesSettings], LocalService]] = {
        "kafka": LocalKafka, "postgres": LocalPostgres, "mosquitto": LocalMosquitto,
    }
    return factories[name](settings)


def services_up(config: Config, names: tuple[str, ...] = SERVICE_NAMES, *,
                started_file: Path | None = None,
                progress: Callable[[str], None] = print) -> list[str]:
    """Start the local services among ``names`` that are not external; return those started."""
    started: list[str] = []
    for name in names:
        if name in config.external:
            progress(f"{name}: external, not started")
            continue
        service = local_service(name, config.services)
        progress(f"{name}: starting…")
        if service.start():
            started.append(name)
            progress(f"{name}: started")
        else:
            progress(f"{name}: already running")
    if started_file is not None:
        started_file.parent.mkdir(parents=True, exist_ok=True)
        started_file.write_text("\n".join(started) + ("\n" if started else ""))
    return started


def services_down(config: Config, names: tuple[str, ...] = SERVICE_NAMES, *,
                  started_file: Path | None = None,
                  progress: Callable[[str], None] = print) -> list[str]:
    """Stop local services (only those recorded in ``started_file`` when it is given)."""
    if started_file is not None:
        if not started_file.exists():
            progress(f"nothing recorded in {started_file}; nothing stopped")
            return []
        names = tuple(n for n in started_file.read_text().split() if n in names)
        started_file.unlink()
    stopped = []
    for name in reversed(names):
        if name in config.external:
            continue
        if local_service(name, config.services).stop():
            stopped.append(name)
            progress(f"{name}: stopped")
        else:
            progress(f"{name}: was not running")
    return stopped


def services_status(config: Config) -> list[ServiceStatus]:
    out = []
    for name in SERVICE_NAMES:
        if name in config.external:
            if name == "kafka":
                address, ok = config.kafka.bootstrap, kafka_reachable(config.kafka.bootstrap)
            elif name == "postgres":
                from schemas.settings import mask_url

                address = mask_url(config.database.url)
                ok = postgres_reachable(config.database.url)
            else:
                from urllib.parse import urlsplit

                parts = urlsplit(config.mqtt.url)
                address = f"{parts.hostname}:{parts.port or 1883}"
                ok = mqtt_reachable(parts.hostname or "", parts.port or 1883)
            out.append(ServiceStatus(name, "external" if ok else "unreachable", address,
                                     detail="given from outside; not managed here"))
        else:
            out.append(local_service(name, config.services).status())
    return out
