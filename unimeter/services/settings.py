"""Settings of the local services that ``unimeter services up`` starts (no Docker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from schemas.settings import ComponentSettings

__all__ = ["ServicesSettings", "default_state_dir"]


def default_state_dir() -> Path:
    """``.unimeter/`` in the source checkout, else ``~/.local/share/unimeter``.

    A checkout keeps its own services (data directories, ports, logs) so two clones on one
    machine do not share a database by accident.
    """
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists() and (root / "unimeter").is_dir():
        return root / ".unimeter"
    return Path.home() / ".local" / "share" / "unimeter"


class ServicesSettings(ComponentSettings):
    """Where the local Kafka, PostgreSQL and Mosquitto live and listen."""

    section: ClassVar[str] = "services"

    state_dir: Path = Field(default_factory=default_state_dir,
                            description="Data directories, jars, logs and pid files.")
    kafka_version: str = Field(default="4.0.2", pattern=r"^4\.\d+\.\d+$",
                               description="Apache Kafka 4.x release resolved from Maven Central.")
    log4j_version: str = Field(default="2.24.3", description="Log4j 2 backend version.")
    kafka_port: int = Field(default=19092, ge=1024, le=65535, description="Broker listener.")
    kafka_controller_port: int = Field(default=19093, ge=1024, le=65535,
                                       description="KRaft controller listener.")
    kafka_heap: str = Field(default="512m", pattern=r"^\d+[mMgG]$",
                            description="JVM heap of the broker.")
    postgres_port: int = Field(default=15432, ge=1024, le=65535, description="Server port.")
    postgres_bin_dir: Path | None = Field(
        default=None, description="Directory of initdb/pg_ctl/postgres; None = search the "
                                  "machine (/usr/lib/postgresql/<newest>/bin, PATH).")
    postgres_os_user: str = Field(default="postgres",
                                  description="OS user that runs the server when unimeter runs "
                                              "as root (PostgreSQL refuses to run as root).")
    mosquitto_port: int = Field(default=11883, ge=1024, le=65535, description="MQTT listener.")
    start_timeout_s: float = Field(default=120.0, gt=0, le=900,
                                   description="How long to wait for a service to be healthy.")
