"""Settings of the HTTP API (section ``api``, ``UNIMETER_API_*``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.settings import ComponentSettings

__all__ = ["ApiSettings"]


class ApiSettings(ComponentSettings):
    """How ``unimeter api`` serves, and the limits every listing and range query obeys."""

    section: ClassVar[str] = "api"

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port to listen on.")
    page_size: int = Field(default=50, ge=1, le=1000, description="Default page size.")
    max_page_size: int = Field(default=500, ge=1, le=10000, description="Largest page.")
    max_raw_range_days: int = Field(default=31, ge=1, le=400,
                                    description="Longest time range of a raw-reading query.")
    max_hourly_range_days: int = Field(default=93, ge=1, le=1000,
                                       description="Longest range of an hourly aggregate query.")
    max_daily_range_days: int = Field(default=800, ge=1, le=5000,
                                      description="Longest range of a daily aggregate query.")
    max_monthly_range_days: int = Field(default=3700, ge=1, le=40000,
                                        description="Longest range of a monthly aggregate query.")
    token_cache_s: float = Field(default=10.0, ge=0, le=300,
                                 description="How long a verified token is trusted without a "
                                             "database look-up (revocation takes this long).")
    pool_size: int = Field(default=10, ge=1, le=200, description="Database connections.")
    sse_heartbeat_s: float = Field(default=15.0, gt=0, le=300,
                                   description="Keep-alive comment interval of event streams.")
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024,
                                  description="Largest import file accepted.")
