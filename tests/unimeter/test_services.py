"""Local services: missing prerequisites name what to install; external services are used."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from unimeter.config import load_config
from unimeter.errors import ServiceError
from unimeter.services import services_up
from unimeter.services._proc import require_binary
from unimeter.services.kafka import LocalKafka, _kafka_uuid
from unimeter.services.postgres import LocalPostgres
from unimeter.services.settings import ServicesSettings


def test_missing_binary_says_what_to_install() -> None:
    with pytest.raises(ServiceError) as info:
        require_binary("definitely-not-installed-xyz", package="xyz-tools")
    assert "apt-get install -y xyz-tools" in str(info.value)


def test_missing_java_and_maven_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    kafka = LocalKafka(ServicesSettings(state_dir=tmp_path / "state"))
    with pytest.raises(ServiceError, match="openjdk-17-jre-headless"):
        kafka.fetch()


def test_missing_postgres_binaries_are_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("as root the binaries would be installed instead")
    pg = LocalPostgres(ServicesSettings(state_dir=tmp_path, postgres_bin_dir=tmp_path / "none"))
    with pytest.raises(ServiceError, match="postgresql-15"):
        pg.bin_dir()


def test_explicit_missing_postgres_dir_is_named_even_as_root(tmp_path: Path) -> None:
    from unimeter.services.postgres import find_postgres_bin

    assert find_postgres_bin(tmp_path / "none") is None


def test_external_services_are_not_started(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("UNIMETER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("UNIMETER_KAFKA_BOOTSTRAP", "kafka.example:9092")
    monkeypatch.setenv("UNIMETER_DATABASE_URL", "postgresql://u:p@db.example/x")
    monkeypatch.setenv("UNIMETER_MQTT_URL", "mqtt://mqtt.example:1883")
    monkeypatch.setenv("UNIMETER_SERVICES_STATE_DIR", str(tmp_path))
    config = load_config()
    assert config.external == {"kafka", "postgres", "mosquitto"}
    messages: list[str] = []
    started = services_up(config, started_file=tmp_path / "started", progress=messages.append)
    assert started == []
    assert messages == [f"{n}: external, not started" for n in ("kafka", "postgres", "mosquitto")]
    assert (tmp_path / "started").read_text() == ""
    assert not any(tmp_path.glob("kafka*"))
    assert not (tmp_path / "postgres" / "data").exists()


def test_kafka_cluster_id_format() -> None:
    import base64

    for _ in range(50):
        cid = _kafka_uuid()
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_broker_config_has_the_settings_tests_rely_on(tmp_path: Path) -> None:
    kafka = LocalKafka(ServicesSettings(state_dir=tmp_path, kafka_port=29092))
    props = kafka._write_config().read_text()
    assert "group.initial.rebalance.delay.ms=0" in props
    assert "listeners=PLAINTEXT://127.0.0.1:29092" in props
    assert "offsets.topic.replication.factor=1" in props
    assert (tmp_path / "kafka" / "config" / "log4j2.properties").exists()


def test_a_server_older_than_its_installed_binaries_is_named() -> None:
    # Seen on this project's machine: a Debian package pulled PostgreSQL 15.18 → 15.20 under
    # the running local server, whose new databases then failed to load plpgsql.so.
    from unimeter.services.postgres import parse_version, stale_server

    assert parse_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)") == "15.20"
    assert parse_version("15.18 (Debian 15.18-0+deb12u1)") == "15.18"
    assert parse_version("16.4") == "16.4"
    assert parse_version("no version here") is None
    warning = stale_server("15.18", "15.20")
    assert warning is not None
    assert "15.18" in warning
    assert "15.20" in warning
    assert "unimeter services down && unimeter services up" in warning
    assert stale_server("15.20", "15.20") is None
    assert stale_server(None, "15.20") is None


def test_the_local_server_matches_its_binaries(config: Any, database: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The local server the tests run against was started from the installed binaries, and
    # `services status` says nothing is stale.
    from unimeter.services.postgres import (
        find_postgres_bin,
        installed_version,
        running_version,
    )

    local = LocalPostgres(config.services)
    if not local.running():
        pytest.skip("the tests run against an external PostgreSQL")
    bindir = find_postgres_bin(config.services.postgres_bin_dir)
    assert bindir is not None
    assert installed_version(bindir) is not None
    assert running_version(database.settings.url) == installed_version(bindir)
    assert local.stale() is None
    assert "WARNING" not in local.status().detail
    # … and names it when the installed binaries are newer than the running server.
    monkeypatch.setattr("unimeter.services.postgres.installed_version", lambda _bindir: "99.1")
    detail = local.status().detail
    assert f"WARNING: the running PostgreSQL is {running_version(database.settings.url)} but " \
           "the installed binaries are 99.1" in detail
