"""Settings of the stream-processing worker(s) (``pipeline`` section, ``UNIMETER_PIPELINE_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from schemas.settings import ComponentSettings

__all__ = ["PipelineSettings"]


class PipelineSettings(ComponentSettings):
    """How the faust worker runs: its consumer group, state store, batching and agents."""

    section: ClassVar[str] = "pipeline"

    app_id: str = Field(
        default="pipeline",
        description="Name of the faust app; the consumer group and the internal (changelog) "
                    "topics are '<kafka topic prefix><app_id>…', so two deployments with "
                    "different prefixes never share state.",
    )
    agents: tuple[str, ...] = Field(
        default=(),
        description="Agents to run (module pipeline/<name>_agent.py each). Empty = every "
                    "agent module found in the pipeline package.",
    )
    store: str = Field(
        default="rocksdb://",
        description="State store of the per-meter tables: rocksdb:// (production, through "
                    "rocksdict) or memory:// (tests; state is rebuilt from the changelog).",
    )
    data_dir: Path = Field(
        default=Path(".unimeter/pipeline"),
        description="Where the worker keeps its RocksDB state and the ledger view.",
    )
    workers: int = Field(default=1, ge=1, le=64,
                         description="Worker processes `unimeter pipeline` starts (one "
                                     "consumer group; partitions are shared among them).")
    batch_max: int = Field(default=1000, ge=1, le=100_000,
                           description="Most input events an agent handles in one batch.")
    batch_within_s: float = Field(default=0.2, gt=0, le=10,
                                  description="Longest wait for a batch to fill. faust does "
                                              "not fill the next batch while one is handled, "
                                              "so a short wait means small batches and one "
                                              "acknowledgement round trip for few readings.")
    send_timeout_s: float = Field(default=30.0, gt=0,
                                  description="Longest wait for the broker to acknowledge a "
                                              "batch's output before the worker gives up.")
    session_timeout_s: float = Field(
        default=15.0, ge=6, le=90,
        description="How long the broker waits for a silent worker before it declares it dead "
                    "and gives its partitions to the others (or to its restarted self: a "
                    "worker killed with -9 is only replaced after this). Shorter means a faster "
                    "takeover; but the heartbeat runs in the worker's event loop, so a worker "
                    "stalled longer than this (a long batch, swapping) is also declared dead "
                    "and the group rebalances. faust's default is 60 s; the broker accepts "
                    "6–300 s (group.min/max.session.timeout.ms); at most faust's 90 s request "
                    "timeout.",
    )
    heartbeat_interval_s: float = Field(
        default=3.0, gt=0,
        description="How often the worker tells the broker it is alive; at most a third of "
                    "session_timeout_s, so two lost heartbeats do not end the session. It is "
                    "also how soon a surviving worker notices that a rebalance started.",
    )
    ledger_wait_s: float = Field(
        default=60.0, ge=0,
        description="How long agents wait at start-up for the ledger view to catch up with "
                    "the ledger.* topics before they process readings anyway.",
    )
    ledger_cache_size: int = Field(default=100_000, ge=0,
                                   description="Decoded ledger entries kept in memory.")
    vee_state_cache: int = Field(
        default=20_000, ge=0,
        description="Meters whose decoded VEE state a worker keeps between batches, used only "
                    "while the stored state is still the one the worker wrote. Pays off when "
                    "the same meters come back soon (a backlog after an outage, packs, small "
                    "fleets); costs up to ~8 KB per hourly meter (a whole day in the window), "
                    "well under 1 KB per daily one. 0: decode from the store every batch.")
    billing_state_cache: int = Field(
        default=10_000, ge=0,
        description="Accounts whose decoded billing state a worker keeps between batches, "
                    "used only while the stored state is still the one the worker wrote. Pays "
                    "off when the same accounts come back before 10,000 others did (small "
                    "fleets, a backlog, accounts read more often than the worker's batches "
                    "hold them); costs ~9 KB per account (its open day, month and year: ~90 MB "
                    "when full). 0: decode from the store every batch.")
    web_port: int = Field(default=0, ge=0, le=65535,
                          description="faust's web server (metrics, tables) port; 0 = off.")
    heartbeat_file: Path | None = Field(
        default=None,
        description="File touched every few seconds while the worker is healthy (the "
                    "supervisor's heartbeat check).",
    )
    vee_rules: Path | None = Field(
        default=None,
        description="VEE rule-set file (YAML). Empty = the rule set shipped with unimeter; "
                    "groups published on ledger.vee_groups override groups of the same id.",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")

    @model_validator(mode="after")
    def _check_heartbeat(self) -> PipelineSettings:
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ValueError(f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be at most "
                             f"a third of session_timeout_s ({self.session_timeout_s})")
        return self

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if value not in ("rocksdb://", "memory://"):
            raise ValueError("allowed: rocksdb:// or memory://")
        return value

    @field_validator("app_id")
    @classmethod
    def _check_app_id(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("allowed: letters, digits, '.', '_', '-'")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("allowed: debug, info, warning, error")
        return value.lower()
