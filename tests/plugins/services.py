"""Fixtures for integration tests: the real Kafka, PostgreSQL and Mosquitto.

Every test session gets its own topic prefix and its own databases, so several sessions (two
developers' runs, CI and a local run) can share one set of services without seeing each
other's data. ``make test`` starts the services; run ``unimeter services up`` before running
pytest by hand. When a service is unreachable, the tests that need it fail with that advice
instead of hanging.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from schemas.settings import DatabaseSettings, KafkaSettings, MqttSettings
from unimeter.config import Config, load_config

RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config()


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
def kafka_settings(config: Config) -> Iterator[KafkaSettings]:
    """Kafka settings with a topic prefix of this session; the catalog topics exist."""
    from unimeter.services.kafka import kafka_reachable
    from unimeter.topics import create_topics, delete_topics

    if not kafka_reachable(config.kafka.bootstrap, 5000):
        pytest.fail(f"Kafka is not reachable at {config.kafka.bootstrap}: run `unimeter "
                    "services up` (make test does) or set UNIMETER_KAFKA_BOOTSTRAP")
    settings = config.kafka.model_copy(update={"topic_prefix": f"test.{RUN_ID}.",
                                               "default_partitions": 3})
    report = create_topics(settings)
    yield settings
    with contextlib.suppress(Exception):
        delete_topics(settings, report.created + report.existing)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class DbHandle:
    """A database of this test session: its settings and an admin connection factory."""

    settings: DatabaseSettings
    name: str

    def admin(self, *, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.settings.url, autocommit=autocommit)

    def connect(self, role: str, *, autocommit: bool = True) -> psycopg.Connection:
        """A connection acting as the component role ``role`` (ingest, analyst …)."""
        return psycopg.connect(self.settings.conninfo(role), autocommit=autocommit)


def _url_for(base: str, dbname: str) -> str:
    head, _, _ = base.rpartition("/")
    return f"{head}/{dbname}"


def _admin_conn(config: Config) -> psycopg.Connection:
    from unimeter.services.postgres import postgres_reachable

    url = _url_for(config.database.url, "postgres")
    if not postgres_reachable(url):
        pytest.fail("PostgreSQL is not reachable: run `unimeter services up` (make test "
                    "does) or set UNIMETER_DATABASE_URL")
    return psycopg.connect(url, autocommit=True)


def create_database(config: Config, name: str, *, migrate: bool = True,
                    template: str | None = None, timescale: str = "off") -> DbHandle:
    from unimeter.db.migrate import migrate as run_migrations

    with _admin_conn(config) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    settings = config.database.model_copy(
        update={"url": _url_for(config.database.url, name), "timescale": timescale})
    if migrate and not template:
        run_migrations(settings, config.utility)
    return DbHandle(settings=settings, name=name)


def drop_database(config: Config, name: str) -> None:
    with contextlib.suppress(psycopg.Error), _admin_conn(config) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_template(config: Config) -> Iterator[str]:
    """A migrated plain-PostgreSQL database used as a template for fast fresh copies."""
    name = f"umt_{RUN_ID}_template"
    create_database(config, name)
    # Nothing may stay connected to a template, or CREATE DATABASE ... TEMPLATE fails: close
    # it to new connections (TimescaleDB's background-worker scheduler connects to every
    # database when the server preloads the library) and end the ones already there.
    with _admin_conn(config) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
    yield name
    drop_database(config, name)


@pytest.fixture
def database(config: Config, migrated_template: str) -> Iterator[DbHandle]:
    """A fresh, migrated plain-PostgreSQL database for one test."""
    name = f"umt_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    db = create_database(config, name, template=migrated_template)
    yield db
    drop_database(config, name)


@pytest.fixture
def empty_database(config: Config) -> Iterator[DbHandle]:
    """A fresh database with no migrations applied."""
    name = f"umt_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    db = create_database(config, name, migrate=False)
    yield db
    drop_database(config, name)


def timescale_available(config: Config) -> bool:
    with _admin_conn(config) as conn:
        row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
                           ).fetchone()
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    return bool(row) and bool(preload) and "timescaledb" in str(preload[0])


@pytest.fixture
def timescale_database(config: Config) -> Iterator[DbHandle]:
    """A fresh database migrated for TimescaleDB; skipped when the extension is absent."""
    if not timescale_available(config):
        pytest.skip("TimescaleDB is not installed on this PostgreSQL server "
                    "(no timescaledb extension, or not in shared_preload_libraries)")
    name = f"umt_{RUN_ID}_ts_{uuid.uuid4().hex[:6]}"
    db = create_database(config, name, timescale="on")
    yield db
    drop_database(config, name)


# --------------------------------------------------------------------------- MQTT


@pytest.fixture(scope="session")
def mqtt_settings(config: Config) -> MqttSettings:
    """MQTT settings with a topic root of this session; the broker is reachable."""
    from urllib.parse import urlsplit

    from unimeter.services.mosquitto import mqtt_reachable

    parts = urlsplit(config.mqtt.url)
    if not mqtt_reachable(parts.hostname or "", parts.port or 1883):
        pytest.fail(f"MQTT broker not reachable at {config.mqtt.url}: run `unimeter services "
                    "up` (make test does) or set UNIMETER_MQTT_URL")
    return config.mqtt.model_copy(update={"topic_root": f"test/{RUN_ID}"})


# --------------------------------------------------------------------------- private services
#
# Fault tests stop and kill brokers and databases. They must never touch the shared services
# other test runs are using, so they start private instances on free ports, in a state
# directory of their own under .unimeter/private/ (the Kafka jars are shared by symlink).


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A private server is stopped and killed and started again on the same port. A port from
    the ephemeral range (what binding port 0 hands out) may meanwhile become the local port
    of any outgoing connection on the machine — a Kafka client of another test, say — and the
    restart then fails with 'address already in use' for as long as that connection lives:
    the more connections a loaded machine makes, the likelier. Ports below the range are never
    handed out that way.
    """
    import random
    import socket

    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = max(1024, low - 12_000)
    for _ in range(200):
        port = random.randrange(first, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {first} and {low}")


def private_services_settings(config: Config, name: str):  # type: ignore[no-untyped-def]
    """ServicesSettings for a private instance: own state dir and free ports."""
    import os

    state = config.services.state_dir / "private" / f"{RUN_ID}-{name}-{uuid.uuid4().hex[:4]}"
    (state / "kafka").mkdir(parents=True, exist_ok=True)
    shared_lib = config.services.state_dir / "kafka" / "lib"
    if shared_lib.exists():
        os.symlink(shared_lib, state / "kafka" / "lib")
    return config.services.model_copy(update={
        "state_dir": state, "kafka_port": free_port(), "kafka_controller_port": free_port(),
        "postgres_port": free_port(), "mosquitto_port": free_port(), "kafka_heap": "384m",
    })


@pytest.fixture
def private_kafka(config: Config) -> Iterator[object]:
    """A private Kafka broker (``LocalKafka``) a test may stop, kill and restart.

    ``private_kafka.bootstrap`` is its address; topics are not created — use
    ``unimeter.topics.create_topics`` with a ``KafkaSettings`` pointing at it.
    """
    import shutil

    from unimeter.services.kafka import LocalKafka

    settings = private_services_settings(config, "kafka")
    kafka = LocalKafka(settings)
    kafka.start()
    yield kafka
    kafka.stop()
    shutil.rmtree(settings.state_dir, ignore_errors=True)


@pytest.fixture
def private_postgres(config: Config) -> Iterator[object]:
    """A private PostgreSQL server (``LocalPostgres``) a test may stop, kill and restart.

    ``private_postgres.url()`` is its superuser URL for the ``unimeter`` database.
    """
    import shutil

    from unimeter.services.postgres import LocalPostgres

    settings = private_services_settings(config, "pg")
    pg = LocalPostgres(settings)
    pg.start()
    yield pg
    pg.stop()
    shutil.rmtree(settings.state_dir, ignore_errors=True)
