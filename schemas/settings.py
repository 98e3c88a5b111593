"""Typed, frozen settings shared by every component, and the base the components' own use.

Strategy: each component declares one ``pydantic-settings`` class next to the code that
uses it (``ingest/settings.py`` declares the FEP's). All derive from :class:`ComponentSettings`,
which reads, in order of precedence:

1. ``UNIMETER_<SECTION>_<FIELD>`` environment variables (``UNIMETER_KAFKA_BOOTSTRAP``),
2. the section of the YAML file named by ``UNIMETER_CONFIG`` (``kafka: {bootstrap: ...}``),
3. the defaults documented on the fields.

Settings objects are frozen: a process reads them once at start-up. A wrong value raises
:class:`~schemas.errors.ConfigurationError` naming the variable, the value and what is allowed.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.errors import ConfigurationError

__all__ = [
    "ComponentSettings",
    "DatabaseSettings",
    "KafkaSettings",
    "MqttSettings",
    "UtilitySettings",
    "config_file_path",
    "load_settings",
    "mask_url",
]

CONFIG_ENV = "UNIMETER_CONFIG"


def config_file_path() -> Path | None:
    """The YAML configuration file named by ``UNIMETER_CONFIG``, if any."""
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


@cache
def _read_yaml(path: str, mtime: float) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the configuration file: {exc.strerror}",
            where=path, hint=f"fix or unset {CONFIG_ENV}",
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"the configuration file is not valid YAML: {exc}",
            where=path, hint="fix the YAML syntax",
        ) from exc
    if not isinstance(data, dict):
        raise ConfigurationError("the configuration file must be a mapping of sections",
                                 where=path, hint="write e.g. 'kafka: {bootstrap: host:9092}'")
    return data


class _YamlSection(PydanticBaseSettingsSource):
    """Reads one section of the YAML configuration file."""

    def __init__(self, settings_cls: type[BaseSettings], section: str) -> None:
        super().__init__(settings_cls)
        self.section = section

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ is used instead

    def __call__(self) -> dict[str, Any]:
        path = config_file_path()
        if path is None:
            return {}
        data = _read_yaml(str(path), path.stat().st_mtime if path.exists() else 0.0)
        section = data.get(self.section) or {}
        if not isinstance(section, dict):
            raise ConfigurationError(f"section '{self.section}' must be a mapping",
                                     where=str(path))
        return section


class ComponentSettings(BaseSettings):
    """Base of every settings class: env prefix ``UNIMETER_<SECTION>_``, YAML section, frozen."""

    section: ClassVar[str] = ""
    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.section:
            cls.model_config = SettingsConfigDict(
                frozen=True, extra="forbid", validate_default=True,
                env_prefix=f"UNIMETER_{cls.section.upper()}_",
            )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        section = getattr(settings_cls, "section", "")
        return (init_settings, env_settings, _YamlSection(settings_cls, section))

    def masked(self) -> dict[str, Any]:
        """The effective values with secrets (passwords, tokens, URL credentials) masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "********" if value.get_secret_value() else ""
            elif isinstance(value, str) and "://" in value:
                out[name] = mask_url(value)
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out


S = TypeVar("S", bound=ComponentSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build a settings object, turning validation errors into a :class:`ConfigurationError`.

    The error names the environment variable, the offending value and what is allowed, so
    a wrong deployment fails at start-up with a message an operator can act on.
    """
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            env = f"UNIMETER_{cls.section.upper()}_{loc.upper()}"
            value = err.get("input")
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown setting (allowed: {', '.join(sorted(cls.model_fields))})"
            lines.append(f"{cls.section}.{loc} / {env} = {value!r}: {msg}")
        raise ConfigurationError(
            f"invalid {cls.section} settings: " + "; ".join(lines),
            where=f"settings section '{cls.section}'",
            hint=f"correct the environment variable or the '{cls.section}' section of "
                 f"${CONFIG_ENV}",
        ) from None


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user:********@host/db``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "********"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "")
    host = netloc[1] if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{user}:********@{host}"))


_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{0,100}$")


class KafkaSettings(ComponentSettings):
    """How to reach Kafka and how topics are named."""

    section: ClassVar[str] = "kafka"

    bootstrap: str = Field(
        default="",
        description="Comma-separated host:port list. Empty = the local broker started by "
                    "`unimeter services up`.",
    )
    topic_prefix: str = Field(default="unimeter.",
                              description="Prefix of every topic name (letters, digits, . _ -).")
    client_id: str = Field(default="unimeter", description="Client id prefix in broker logs.")
    replication_factor: int = Field(default=1, ge=1, le=7,
                                    description="Replication factor of created topics.")
    default_partitions: int = Field(default=6, ge=1, le=1024,
                                    description="Partitions of keyed data topics.")

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _TOPIC_PREFIX.match(value):
            raise ValueError("allowed: up to 100 of letters, digits, '.', '_', '-'")
        return value

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for item in filter(None, (v.strip() for v in value.split(","))):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"'{item}' is not host:port (allowed: host:port[,host:port])")
        return value

    def topic(self, name: str) -> str:
        """The full name of a catalog topic, e.g. ``readings.raw`` → ``unimeter.readings.raw``."""
        return f"{self.topic_prefix}{name}"

    def group(self, name: str) -> str:
        """The name of one of this deployment's consumer groups: the topic prefix without its
        trailing separator, a dash, ``name`` — ``sink`` → ``unimeter-sink``. Two deployments
        sharing a cluster under different prefixes (a benchmark beside the running system,
        staging beside production) then never join each other's groups: a member of another
        deployment, subscribed to other topics, would rebalance the group every time it
        comes and goes."""
        return f"{self.topic_prefix.rstrip('._-') or self.client_id}-{name}"


class DatabaseSettings(ComponentSettings):
    """How to reach PostgreSQL / TimescaleDB, and which role each component acts as."""

    section: ClassVar[str] = "database"

    url: str = Field(
        default="",
        description="libpq URL of a login that may SET ROLE to the unimeter roles. Empty = the "
                    "local server started by `unimeter services up`.",
    )
    timescale: str = Field(
        default="auto",
        description="auto: use TimescaleDB when the extension is installable; on: require it; "
                    "off: plain PostgreSQL even where TimescaleDB exists.",
    )
    use_roles: bool = Field(
        default=True,
        description="Each component acts as its least-privileged role (SET ROLE at connect).",
    )
    role_prefix: str = Field(default="unimeter_", description="Prefix of the unimeter roles.")

    @field_validator("timescale")
    @classmethod
    def _check_timescale(cls, value: str) -> str:
        if value not in ("auto", "on", "off"):
            raise ValueError("allowed: auto, on, off")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("allowed: a postgresql://user:password@host:port/dbname URL")
        return value

    def role(self, name: str) -> str:
        """The database role of a component: ``ingest`` → ``unimeter_ingest``."""
        return f"{self.role_prefix}{name}"

    def conninfo(self, role: str | None = None, *, url: str | None = None) -> str:
        """A libpq URL that connects and acts as the component role ``role``.

        The role is set through the startup ``options`` (``-c role=...``), so every pooled
        connection carries it without a separate ``SET ROLE`` round trip.
        """
        base = url or self.url
        if not base:
            raise ConfigurationError(
                "no database URL is known",
                where="UNIMETER_DATABASE_URL",
                hint="run `unimeter services up` for the local server or set UNIMETER_DATABASE_URL",
            )
        if role is None or not self.use_roles:
            return base
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}options={quote(f'-c role={self.role(role)}')}"


class MqttSettings(ComponentSettings):
    """How to reach the MQTT broker of the NB-IoT / LoRa ingest path."""

    section: ClassVar[str] = "mqtt"

    url: str = Field(default="", description="mqtt://[user:password@]host:port. Empty = the "
                                             "local Mosquitto started by `unimeter services up`.")
    topic_root: str = Field(default="unimeter", description="Root of device MQTT topics.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError("allowed: mqtt://host:port or mqtts://host:port")
        return value


class UtilitySettings(ComponentSettings):
    """Facts about the utility that run through the whole pipeline."""

    section: ClassVar[str] = "utility"

    timezone: str = Field(default="Asia/Shanghai",
                          description="IANA zone in which days and months are bucketed.")
    currency: str = Field(default="CNY", description="ISO 4217 currency of all money amounts.")
    late_data_days: int = Field(default=7, ge=1, le=400,
                                description="How late a reading may arrive and still be "
                                            "aggregated and billed normally.")

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("allowed: an IANA time zone name such as Asia/Shanghai") from None
        return value

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError("allowed: a three-letter ISO 4217 code such as CNY")
        return value
