"""``unimeter topics create | list``: the Kafka topic catalog on the broker."""

from __future__ import annotations

import click

from schemas.topics import TOPICS
from unimeter.config import load_config
from unimeter.topics import create_topics


@click.group(name="topics")
def command() -> None:
    """The topic catalog (DESIGN.md §3), with the configured prefix."""


@command.command()
def create() -> None:
    """Create the catalog's topics that do not exist yet (existing ones are kept)."""
    config = load_config()
    report = create_topics(config.kafka, progress=lambda m: click.echo(f"  {m}"))
    click.echo(f"{len(report.created)} created, {len(report.existing)} already existed "
               f"(prefix '{config.kafka.topic_prefix}')")


@command.command(name="list")
def list_() -> None:
    """Print the catalog: name, key, partitions, retention or compaction, payload types."""
    config = load_config()
    for spec in TOPICS:
        parts = spec.partitions or config.kafka.default_partitions
        keep = "compacted" if spec.compacted else (
            f"{(spec.retention_ms or 0) // 86_400_000} d" if spec.retention_ms else "forever")
        payloads = ", ".join(p.SCHEMA for p in spec.payloads)
        click.echo(f"{config.kafka.topic(spec.name):<40} key={spec.key:<18} p={parts:<3} "
                   f"{keep:<10} {payloads}")
