"""Private service instances for fault tests: started, killed and restarted without touching
the shared services (the basis of every 'nothing lost while X was down' test)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from unimeter.services.kafka import kafka_reachable
from unimeter.services.postgres import postgres_reachable

pytestmark = pytest.mark.integration


def test_private_postgres_survives_kill_9(private_postgres: Any, config: Any) -> None:
    url = private_postgres.url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")  # committed: fsync is on
    private_postgres.kill()
    assert not postgres_reachable(url, timeout=1)
    assert postgres_reachable(config.database.url)  # the shared server is untouched
    private_postgres.start()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_private_kafka_restarts(private_kafka: Any, config: Any) -> None:
    assert kafka_reachable(private_kafka.bootstrap)
    private_kafka.stop()
    assert not kafka_reachable(private_kafka.bootstrap, 1000)
    assert kafka_reachable(config.kafka.bootstrap)  # the shared broker is untouched
    private_kafka.start()
    assert kafka_reachable(private_kafka.bootstrap)


def test_private_kafka_starts_right_after_kill_9(private_kafka: Any) -> None:
    """Regression: kill() returned while the broker was still dying, and a start() right
    after found it "already running", waited on it and failed when it exited."""
    private_kafka.kill()
    assert not private_kafka.running()
    assert private_kafka.start() is True
    assert kafka_reachable(private_kafka.bootstrap)
