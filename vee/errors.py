"""Errors of the VEE engine."""

from __future__ import annotations

from schemas.errors import UnimeterError

__all__ = ["EditError", "RuleConfigError", "VeeError", "VeeInputError"]


class VeeError(UnimeterError):
    """Root of the VEE engine's errors."""


class RuleConfigError(VeeError):
    """A rule set or rule group is wrong: ``where`` names the file and the path in it."""


class VeeInputError(VeeError):
    """Input the engine cannot use (a CSV row, an edit of a value that does not exist)."""


class EditError(VeeInputError):
    """A manual edit cannot be applied (unknown value, final value, bad reason code)."""
