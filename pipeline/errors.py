"""Errors of the stream-processing worker."""

from __future__ import annotations

from schemas.errors import UnimeterError

__all__ = ["PipelineError"]


class PipelineError(UnimeterError):
    """The worker cannot run as configured (missing topic, bad agent module, broker gone)."""
