"""The effective configuration of this machine: settings with the local services filled in.

Components never look for their services themselves; the CLI builds one :class:`Config`
and hands each component the settings objects it needs. An empty Kafka bootstrap, database URL
or MQTT URL means "the local service started by ``unimeter services up``"; a value given
through ``UNIMETER_KAFKA_BOOTSTRAP`` / ``UNIMETER_DATABASE_URL`` / ``UNIMETER_MQTT_URL`` (or the
YAML file) is used as is, and nothing local is started for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.settings import (
    ComponentSettings,
    DatabaseSettings,
    KafkaSettings,
    MqttSettings,
    UtilitySettings,
    config_file_path,
    load_settings,
)
from unimeter.services.settings import ServicesSettings

__all__ = ["Config", "load_config"]


@dataclass(frozen=True)
class Config:
    services: ServicesSettings
    kafka: KafkaSettings
    database: DatabaseSettings
    mqtt: MqttSettings
    utility: UtilitySettings
    #: Which of kafka / postgres / mosquitto were given from outside (not started locally).
    external: frozenset[str] = field(default_factory=frozenset)

    def sections(self) -> dict[str, ComponentSettings]:
        return {"services": self.services, "kafka": self.kafka, "database": self.database,
                "mqtt": self.mqtt, "utility": self.utility}

    def show(self) -> dict[str, Any]:
        """Everything effective, secrets masked — what ``unimeter config show`` prints."""
        out: dict[str, Any] = {"config_file": str(config_file_path() or "")}
        for name, section in self.sections().items():
            out[name] = section.masked()
        out["external_services"] = sorted(self.external)
        return out


def load_config() -> Config:
    """Read every base section and fill the local service addresses where none were given."""
    services = load_settings(ServicesSettings)
    kafka = load_settings(KafkaSettings)
    database = load_settings(DatabaseSettings)
    mqtt = load_settings(MqttSettings)
    utility = load_settings(UtilitySettings)
    external: set[str] = set()
    if kafka.bootstrap:
        external.add("kafka")
    else:
        kafka = kafka.model_copy(update={"bootstrap": f"127.0.0.1:{services.kafka_port}"})
    if database.url:
        external.add("postgres")
    else:
        from unimeter.services.postgres import LocalPostgres

        database = database.model_copy(update={"url": LocalPostgres(services).url()})
    if mqtt.url:
        external.add("mosquitto")
    else:
        mqtt = mqtt.model_copy(update={"url": f"mqtt://127.0.0.1:{services.mosquitto_port}"})
    return Config(services=services, kafka=kafka, database=database, mqtt=mqtt,
                  utility=utility, external=frozenset(external))
