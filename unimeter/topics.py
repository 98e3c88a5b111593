"""Create the catalog's topics on the broker (``unimeter topics create``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.settings import KafkaSettings
from schemas.topics import TOPICS, TopicSpec
from unimeter.errors import ServiceError

__all__ = ["TopicReport", "create_topics", "delete_topics"]


@dataclass
class TopicReport:
    created: list[str]
    existing: list[str]


def _admin(kafka: KafkaSettings):  # type: ignore[no-untyped-def]
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, RetriableError

    try:
        return KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=15000,
                                bootstrap_timeout_ms=15000, client_id=f"{kafka.client_id}-admin")
    except (RetriableError, KafkaConnectionError, KafkaTimeoutError, OSError) as exc:
        raise ServiceError(f"Kafka is not reachable at {kafka.bootstrap}: {exc}",
                           hint="start it with `unimeter services up` or correct "
                                "UNIMETER_KAFKA_BOOTSTRAP") from None


def create_topics(kafka: KafkaSettings, specs: tuple[TopicSpec, ...] = TOPICS, *,
                  progress: Callable[[str], None] = lambda _m: None) -> TopicReport:
    """Create every catalog topic that does not exist yet; existing ones are left as they are."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = _admin(kafka)
    try:
        existing = set(admin.list_topics())
        report = TopicReport(created=[], existing=[])
        new = []
        for spec in specs:
            name = kafka.topic(spec.name)
            if name in existing:
                report.existing.append(name)
                continue
            partitions = spec.partitions or kafka.default_partitions
            new.append(NewTopic(name, partitions, kafka.replication_factor,
                                topic_configs=spec.config()))
        if new:
            # Created concurrently by another process: fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new, timeout_ms=30000)
            for topic in new:
                report.created.append(topic.name)
                progress(f"created {topic.name} ({topic.num_partitions} partitions)")
        _wait_until_usable(admin, kafka, report.created + report.existing)
        return report
    finally:
        admin.close()


#: How long a created topic may take to show up, with a leader for every partition.
_USABLE_TIMEOUT_MS = 120_000


def _wait_until_usable(admin: Any, kafka: KafkaSettings, names: list[str]) -> None:
    """Return once every topic is in the broker's metadata with a leader for each partition.

    The broker answers CreateTopics before the new topics are in its metadata (KRaft
    propagates them a little later; much later on a busy machine). A consumer that joins its
    group meanwhile is assigned nothing and only notices the topics at a later metadata
    refresh, and a producer blocks: both are why callers wait here, on the real condition.
    """
    from kafka.errors import KafkaTimeoutError

    try:
        admin.wait_for_topics(names, timeout_ms=_USABLE_TIMEOUT_MS)
    except KafkaTimeoutError as exc:
        raise ServiceError(f"Kafka at {kafka.bootstrap} created the topics but they are not "
                           f"usable yet: {exc}",
                           hint="the broker may be overloaded; check its log and retry "
                                "`unimeter topics create`") from None


def delete_topics(kafka: KafkaSettings, names: list[str]) -> None:
    """Delete topics by full name (tests clean up their prefixed topics with this)."""
    admin = _admin(kafka)
    try:
        present = set(admin.list_topics())
        doomed = [n for n in names if n in present]
        if doomed:
            admin.delete_topics(doomed, timeout_ms=30000)
    finally:
        admin.close()


def topics_with_prefix(kafka: KafkaSettings, prefix: str) -> list[str]:
    """The names of the topics that start with ``prefix``."""
    admin = _admin(kafka)
    try:
        return sorted(t for t in admin.list_topics() if t.startswith(prefix))
    finally:
        admin.close()


def delete_topics_with_prefix(kafka: KafkaSettings, prefix: str, *, wait_s: float = 60.0
                              ) -> list[str]:
    """Delete every topic starting with ``prefix`` and wait (at most ``wait_s``) until the
    broker has: deletion completes in the background, and creating a topic of the same name
    before it has would fail. Returns the names deleted."""
    doomed = topics_with_prefix(kafka, prefix)
    if not doomed:
        return doomed
    delete_topics(kafka, doomed)
    deadline = time.monotonic() + wait_s
    while topics_with_prefix(kafka, prefix) and time.monotonic() < deadline:
        time.sleep(0.5)
    return doomed
