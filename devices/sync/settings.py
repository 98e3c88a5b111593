"""Settings of the sync process (``UNIMETER_SYNC_*`` or the ``sync`` section)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.settings import ComponentSettings

__all__ = ["SyncSettings"]


class SyncSettings(ComponentSettings):
    """How ``unimeter sync`` exchanges changes with the utility's customer/billing system."""

    section: ClassVar[str] = "sync"

    consumer_group: str = Field(default="",
                                description="Kafka consumer group of the sync process. Empty = "
                                            "'<topic prefix>-sync' (unimeter-sync).")
    retry_window_s: float = Field(
        default=600.0, ge=0,
        description="How long a change whose reference is missing (a meter's account that "
                    "is still on its way on another topic) is retried before it is rejected.")
    retry_interval_s: float = Field(default=5.0, gt=0,
                                    description="How often pending changes are retried.")
    availability_hour: int = Field(
        default=2, ge=0, le=23,
        description="Local hour after which yesterday's data availability is published.")
    publish_outbox: bool = Field(
        default=True,
        description="Also run the ledger outbox publisher (standby when another one leads), "
                    "so top-ups and tariff versions flow with `unimeter sync` alone.")
