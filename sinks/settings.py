"""Settings of the storage sink (``UNIMETER_SINK_*`` or the ``sink:`` section of the YAML)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from schemas.settings import ComponentSettings, KafkaSettings
from schemas.topics import topic_spec

__all__ = ["DEFAULT_TOPICS", "RetentionSettings", "SinkSettings"]

#: The topics the sink stores by default (``frames.raw`` only with ``archive_frames``).
DEFAULT_TOPICS = ("readings.validated", "readings.raw", "device.events", "billing.charges",
                  "billing.balances", "billing.topups", "billing.settlements", "alerts",
                  "commands.results")


class SinkSettings(ComponentSettings):
    """How the sink consumes, batches, retries and reports."""

    section: ClassVar[str] = "sink"

    group_id: str = Field(default="",
                          description="Kafka consumer group; run several sinks in one group to "
                                      "share the partitions. Empty = '<topic prefix>-sink' "
                                      "(unimeter-sink).")
    session_timeout_ms: int = Field(
        default=10_000, ge=6_000, le=300_000,
        description="How long the broker waits for a silent sink before it declares it dead "
                    "and gives its partitions to the others (or to its restarted self: a sink "
                    "killed with -9 is only replaced after this). kafka-python's default is "
                    "45 s. The heartbeat runs in the client's own thread, so a slow batch does "
                    "not end the session (only a stalled process does); the broker accepts "
                    "6–300 s (group.min/max.session.timeout.ms).",
    )
    heartbeat_interval_ms: int = Field(
        default=3_000, ge=100,
        description="How often the sink tells the broker it is alive; at most a third of "
                    "session_timeout_ms.",
    )
    topics: str = Field(default=",".join(DEFAULT_TOPICS),
                        description="Comma-separated catalog topics to store (without prefix).")
    archive_frames: bool = Field(default=False,
                                 description="Also store frames.raw in data.raw_frames.")
    batch_max_records: int = Field(default=20_000, ge=1, le=1_000_000,
                                   description="A partition's batch is written once it holds "
                                               "this many records (one transaction; larger "
                                               "batches spread the commit over more rows).")
    commit_interval_ms: int = Field(default=1000, ge=10, le=600_000,
                                    description="At the latest, pending batches are written and "
                                                "offsets committed this often.")
    poll_max_records: int = Field(default=10000, ge=1, le=1_000_000,
                                  description="Records fetched per poll.")
    retry_initial_ms: int = Field(default=500, ge=1, le=600_000,
                                  description="First back-off while the database is away.")
    retry_max_ms: int = Field(default=30_000, ge=1, le=3_600_000,
                              description="Longest back-off while the database is away.")
    kafka_wait_s: float = Field(default=300.0, ge=0, le=86_400,
                                description="At start, keep trying to reach Kafka this long "
                                            "(with the back-off above) before giving up; "
                                            "0 = give up at the first failure.")
    fast_path: bool = Field(default=True,
                            description="Try a direct binary COPY first and fall back to "
                                        "staging + INSERT … ON CONFLICT when a key exists.")
    metrics_interval_s: float = Field(default=10.0, gt=0, le=3600,
                                      description="How often progress (rows/s, lag, "
                                                  "duplicates) is reported.")
    producer: str = Field(default="sink", description="Producer name in dead-letter envelopes.")

    @model_validator(mode="after")
    def _check_heartbeat(self) -> SinkSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be at "
                             f"most a third of session_timeout_ms ({self.session_timeout_ms})")
        return self

    def group_for(self, kafka: KafkaSettings) -> str:
        """The consumer group: ``group_id``, or this deployment's ``sink`` group."""
        return self.group_id or kafka.group("sink")

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, value: str) -> str:
        for name in cls.split(value):
            try:
                topic_spec(name)
            except KeyError as exc:
                raise ValueError(str(exc.args[0])) from None
        return value

    @staticmethod
    def split(value: str) -> list[str]:
        return [t.strip() for t in value.split(",") if t.strip()]

    def topic_names(self) -> list[str]:
        """The catalog topics to consume (without prefix)."""
        names = self.split(self.topics)
        if self.archive_frames and "frames.raw" not in names:
            names.append("frames.raw")
        return names


class RetentionSettings(ComponentSettings):
    """How long stored data is kept, per table family, in days (0 = for ever)."""

    section: ClassVar[str] = "retention"

    raw_readings_days: int = Field(default=0, ge=0, description="data.raw_readings.")
    validated_readings_days: int = Field(default=0, ge=0,
                                         description="data.validated_readings, edits and "
                                                     "consumption intervals.")
    raw_frames_days: int = Field(default=90, ge=0, description="data.raw_frames (archive).")
    device_events_days: int = Field(default=365, ge=0, description="data.device_events.")
    ops_days: int = Field(default=0, ge=0, description="ops.alerts and ops.command_results.")
    hourly_aggregates_days: int = Field(default=0, ge=0,
                                        description="agg.*_hourly (daily and monthly are kept).")
