"""Settings: environment over YAML over defaults, frozen objects, precise start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigurationError
from schemas.settings import (
    DatabaseSettings,
    KafkaSettings,
    UtilitySettings,
    load_settings,
    mask_url,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("UNIMETER_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    kafka = load_settings(KafkaSettings)
    assert kafka.topic_prefix == "unimeter."
    assert kafka.topic("readings.raw") == "unimeter.readings.raw"
    assert load_settings(UtilitySettings).timezone == "Asia/Shanghai"


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "unimeter.yaml"
    cfg.write_text("kafka:\n  bootstrap: yaml-host:9092\n  topic_prefix: plant.\n")
    monkeypatch.setenv("UNIMETER_CONFIG", str(cfg))
    assert load_settings(KafkaSettings).bootstrap == "yaml-host:9092"
    monkeypatch.setenv("UNIMETER_KAFKA_BOOTSTRAP", "env-host:9092")
    kafka = load_settings(KafkaSettings)
    assert kafka.bootstrap == "env-host:9092"
    assert kafka.topic_prefix == "plant."


def test_settings_are_frozen() -> None:
    kafka = load_settings(KafkaSettings)
    with pytest.raises(Exception, match="frozen"):
        kafka.topic_prefix = "x."  # type: ignore[misc]


def test_wrong_value_names_variable_value_and_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIMETER_UTILITY_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ConfigurationError) as info:
        load_settings(UtilitySettings)
    text = str(info.value)
    assert "UNIMETER_UTILITY_TIMEZONE" in text
    assert "Mars/Olympus" in text
    assert "allowed: an IANA time zone" in text


def test_wrong_bootstrap_and_timescale_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIMETER_KAFKA_BOOTSTRAP", "no-port-here")
    with pytest.raises(ConfigurationError, match="host:port"):
        load_settings(KafkaSettings)
    monkeypatch.setenv("UNIMETER_DATABASE_TIMESCALE", "maybe")
    with pytest.raises(ConfigurationError, match="allowed: auto, on, off"):
        load_settings(DatabaseSettings)


def test_unknown_yaml_key_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "unimeter.yaml"
    cfg.write_text("kafka:\n  bootstrp: typo:9092\n")
    monkeypatch.setenv("UNIMETER_CONFIG", str(cfg))
    with pytest.raises(ConfigurationError, match="bootstrp"):
        load_settings(KafkaSettings)


def test_broken_yaml_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("kafka: [unclosed\n")
    monkeypatch.setenv("UNIMETER_CONFIG", str(cfg))
    with pytest.raises(ConfigurationError) as info:
        load_settings(KafkaSettings)
    assert str(cfg) in str(info.value)


def test_secrets_are_masked() -> None:
    db = DatabaseSettings(url="postgresql://app:s3cret@db.example:5432/meters")
    shown = db.masked()
    assert "s3cret" not in str(shown)
    assert shown["url"] == "postgresql://app:********@db.example:5432/meters"
    assert mask_url("postgresql://host/db") == "postgresql://host/db"


def test_conninfo_acts_as_component_role() -> None:
    db = DatabaseSettings(url="postgresql://app:pw@h:5432/d")
    assert db.conninfo("ingest").endswith("options=-c%20role%3Dunimeter_ingest")
    assert db.conninfo() == "postgresql://app:pw@h:5432/d"
    assert DatabaseSettings(url="postgresql://h/d", use_roles=False).conninfo("api") \
        == "postgresql://h/d"
    with pytest.raises(ConfigurationError, match="UNIMETER_DATABASE_URL"):
        DatabaseSettings().conninfo("api")


def test_consumer_groups_belong_to_the_deployment_by_its_topic_prefix() -> None:
    """Two deployments on one cluster (a benchmark beside the running system) must not share
    a consumer group; the default deployment keeps the names it always had."""
    from devices.commands.settings import CommandSettings
    from devices.sync.settings import SyncSettings
    from sinks.settings import SinkSettings

    default = KafkaSettings()
    assert default.group("sink") == "unimeter-sink"
    assert SinkSettings().group_for(default) == "unimeter-sink"
    other = KafkaSettings(topic_prefix="bench-e2e-1a2b.")
    assert SinkSettings().group_for(other) == "bench-e2e-1a2b-sink"
    assert other.group("fep-fep-1") != default.group("fep-fep-1")
    assert KafkaSettings(topic_prefix="").group("sink") == "unimeter-sink"  # the client id
    assert SinkSettings(group_id="mine").group_for(other) == "mine"  # explicit wins
    assert SyncSettings().consumer_group == CommandSettings().consumer_group == ""
