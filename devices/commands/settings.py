"""Settings of the command control plane (section ``commands``, ``UNIMETER_COMMANDS_*``)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from pydantic import Field, SecretStr

from devices.safety import PolicyLimits
from schemas.settings import ComponentSettings

__all__ = ["CommandSettings"]


class CommandSettings(ComponentSettings):
    """The safety policy's numbers and how ``unimeter command serve`` runs."""

    section: ClassVar[str] = "commands"

    mass_threshold: int = Field(default=10, ge=1,
                                description="A request for more devices than this is a mass "
                                            "command: two approvers, a preview, waves.")
    mass_approvers: int = Field(default=2, ge=2, le=5,
                                description="Distinct approvers of a mass command (never the "
                                            "requester).")
    direct_open_approvers: int = Field(default=1, ge=1, le=3,
                                       description="Approvers besides the requester of a direct "
                                                   "valve open or a reopen after a safety close.")
    anomaly_max_commands: int = Field(default=50, ge=1,
                                      description="State-changing commands one person may request "
                                                  "per anomaly window before quarantine.")
    anomaly_window_s: int = Field(default=600, ge=10, description="Anomaly window, seconds.")
    wave_size: int = Field(default=50, ge=1, description="Mass commands: most in flight at once.")
    wave_interval_s: float = Field(default=30.0, ge=0,
                                   description="Mass commands: least time between two waves.")
    max_failures: int = Field(default=5, ge=1,
                              description="Mass commands pause at this many failures …")
    max_failure_ratio: float = Field(default=0.2, gt=0, le=1,
                                     description="… or when this share of finished ones failed.")
    min_finished: int = Field(default=10, ge=1,
                              description="Finished members before the failure ratio counts.")
    max_attempts: int = Field(default=3, ge=1, le=20,
                              description="Dispatch attempts of a command before it fails.")
    retry_backoff_s: float = Field(default=30.0, ge=0,
                                   description="Wait before a retry, doubled per attempt.")
    lost_after_s: float = Field(default=120.0, ge=1,
                                description="A dispatched 'now' command with no result after its "
                                            "reply timeout plus this is dispatched again.")
    on_wake_lost_after_s: float = Field(default=36 * 3600.0, ge=60,
                                        description="The same for devices reached on wake-up.")
    poll_interval_s: float = Field(default=1.0, gt=0, le=60,
                                   description="How often the service looks for due work.")
    batch_size: int = Field(default=500, ge=1, le=10000,
                            description="Commands handled per database round.")
    consumer_group: str = Field(default="",
                                description="Kafka consumer group of `command serve`. Empty = "
                                            "'<topic prefix>-commands' (unimeter-commands).")
    audit_key: SecretStr = Field(default=SecretStr(""),
                                 description="HMAC key of the audit chain; empty = plain SHA-256.")

    def limits(self) -> PolicyLimits:
        return PolicyLimits(
            mass_threshold=self.mass_threshold, mass_approvers=self.mass_approvers,
            direct_open_approvers=self.direct_open_approvers,
            anomaly_max_commands=self.anomaly_max_commands,
            anomaly_window=timedelta(seconds=self.anomaly_window_s),
            wave_size=self.wave_size, wave_interval=timedelta(seconds=self.wave_interval_s),
            max_failures=self.max_failures, max_failure_ratio=self.max_failure_ratio,
            min_finished=self.min_finished,
        )

    def audit_key_bytes(self) -> bytes | None:
        key = self.audit_key.get_secret_value()
        return key.encode() if key else None
