"""Errors of the command control plane: catalog, lifecycle, safety policy, audit.

Every error says what was refused, on which object, and what the person reading it can do
next (the ``hint``). The HTTP API maps them to status codes by class (see ``http_status``).
"""

from __future__ import annotations

from typing import ClassVar

from schemas.errors import UnimeterError

__all__ = [
    "ApprovalError",
    "AuditIntegrityError",
    "CommandConflictError",
    "CommandError",
    "CommandNotFoundError",
    "InvalidParametersError",
    "InvalidTransitionError",
    "SafetyPolicyError",
    "UnknownCommandError",
    "UnsupportedCommandError",
]


class CommandError(UnimeterError):
    """Root of the control-plane errors; ``http_status`` is what the API answers with."""

    http_status: ClassVar[int] = 400
    code: ClassVar[str] = "command_error"


class UnknownCommandError(CommandError):
    """The command name is not in the catalog."""

    code = "unknown_command"


class InvalidParametersError(CommandError):
    """The parameters do not fit the command's typed parameter schema."""

    http_status = 422
    code = "invalid_parameters"


class UnsupportedCommandError(CommandError):
    """The device's type has no handler for this command."""

    http_status = 422
    code = "unsupported_command"


class CommandNotFoundError(CommandError):
    """No command, group or operation with that id (or not visible to the caller)."""

    http_status = 404
    code = "not_found"


class CommandConflictError(CommandError):
    """The same client command id was submitted earlier with different content."""

    http_status = 409
    code = "conflict"


class InvalidTransitionError(CommandError):
    """A lifecycle step that the command's current state does not allow."""

    http_status = 409
    code = "invalid_transition"


class ApprovalError(CommandError):
    """An approval that the four-eyes rules refuse (self-approval, the same approver twice)."""

    http_status = 403
    code = "approval_refused"


class SafetyPolicyError(CommandError):
    """The safety policy refuses the command (protected customer, safety lock …)."""

    http_status = 403
    code = "safety_policy"


class AuditIntegrityError(CommandError):
    """The audit log's hash chain does not verify: a record was changed, removed or inserted."""

    http_status = 500
    code = "audit_integrity"
