"""Request and response bodies of the HTTP API (they make the OpenAPI document).

Money and meter values are decimal strings in JSON, times ISO 8601 with a zone. Every list is
a page: ``{"items": [...], "next_cursor": "..."}`` — pass ``cursor`` back for the next one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from devices.commands.catalog import CATALOG
from devices.operations.definitions import OPERATIONS

__all__ = [
    "ApproveIn",
    "AuditRecordOut",
    "BulkCommandIn",
    "BulkCommandOut",
    "CancelIn",
    "CatalogEntryOut",
    "CommandIn",
    "CommandOut",
    "CommandPage",
    "CommandSupportOut",
    "ConsumptionPage",
    "DeviceDetailOut",
    "DeviceOut",
    "DevicePage",
    "GroupApproveIn",
    "GroupIn",
    "GroupOut",
    "ImportOut",
    "MeOut",
    "OperationIn",
    "OperationOut",
    "QuarantineOut",
    "ReadingOut",
    "ReadingPage",
    "ReleaseIn",
    "SelectorIn",
    "StepOut",
    "TokenIn",
    "TokenOut",
    "ValidatedReadingOut",
    "ValidatedReadingPage",
    "VerifyOut",
]

# Built from the catalogs themselves (one source of truth); mypy cannot see through it.
CommandName = Literal[tuple(CATALOG)]  # type: ignore[valid-type]
OperationKind = Literal[tuple(OPERATIONS)]  # type: ignore[valid-type]
CommandStateName = Literal["requested", "quarantined", "approved", "queued", "sent",
                           "confirmed", "failed", "expired", "cancelled", "rejected"]
Id = Field(min_length=1, max_length=200)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------- commands


class CommandIn(_In):
    """A command for one device. ``params`` follow the catalog (``GET /v1/commands/catalog``)."""

    device_id: str = Id
    command: CommandName  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict)
    client_command_id: str | None = Field(default=None, min_length=1, max_length=200,
                                          description="Your id: resending is safe.")
    reason: str = Field(default="", max_length=500)
    ttl_s: int | None = Field(default=None, ge=60, le=30 * 86400,
                              description="Time to live in seconds (default per command).")
    priority: int = Field(default=5, ge=0, le=9)


class BulkCommandIn(_In):
    """One command for several devices: up to the mass threshold one command each, beyond it a
    mass command (preview, two approvers)."""

    device_ids: list[str] = Field(min_length=1, max_length=100_000)
    command: CommandName  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict)
    client_command_id: str | None = Field(default=None, min_length=1, max_length=200)
    reason: str = Field(default="", max_length=500)
    ttl_s: int | None = Field(default=None, ge=60, le=30 * 86400)
    priority: int = Field(default=5, ge=0, le=9)


class CommandOut(_Out):
    command_id: str
    client_command_id: str | None
    requested_by: str
    origin: str
    device_id: str
    device_type: str
    protocol: str
    address: str
    region: str | None
    requested_command: str
    command: str
    params: dict[str, Any]
    safety_class: str
    state: CommandStateName
    approvals_required: int
    approvals: list[str]
    policy_reasons: list[str]
    readback: bool
    sets_safety_lock: bool
    purpose: str
    parent_command_id: str | None
    group_id: str | None
    operation_id: str | None
    reason: str
    priority: int
    requested_at: datetime
    expires_at: datetime
    attempt: int
    max_attempts: int
    delivery: str
    fep: str | None
    service_point: str | None
    link_id: str | None
    handler: str
    wire_command: str
    wire_params: dict[str, Any]
    preview_hex: str
    dispatched_at: datetime | None
    sent_at: datetime | None
    acknowledged_at: datetime | None
    finished_at: datetime | None
    result_detail: str
    error_code: str | None
    reply: dict[str, Any]


class CommandPage(_Out):
    items: list[CommandOut]
    next_cursor: str | None


class CatalogEntryOut(_Out):
    command: str
    summary: str
    safety_class: str
    read_back: str | None
    parameters: dict[str, Any]


class ApproveIn(_In):
    comment: str = Field(default="", max_length=500)


class CancelIn(_In):
    reason: str = Field(default="", max_length=500)


class AuditRecordOut(_Out):
    seq: int
    ts: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class VerifyOut(_Out):
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None
    problem: str


# --------------------------------------------------------------------------- mass commands


class SelectorIn(_In):
    """Exactly one target: a list of devices, a place, a network subtree or a device type."""

    device_ids: list[str] = Field(default_factory=list, max_length=100_000)
    location_id: str | None = Field(default=None, min_length=1, max_length=200)
    under_device: str | None = Field(default=None, min_length=1, max_length=200)
    device_type: str | None = Field(default=None, min_length=1, max_length=200)


class GroupIn(_In):
    command: CommandName  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict)
    selector: SelectorIn
    reason: str = Field(default="", max_length=500)
    client_command_id: str | None = Field(default=None, min_length=1, max_length=200)
    ttl_s: int | None = Field(default=None, ge=60, le=30 * 86400)


class GroupApproveIn(_In):
    preview_hash: str = Field(pattern=r"^[0-9a-f]{64}$",
                              description="The preview_hash of the preview you reviewed.")
    comment: str = Field(default="", max_length=500)


class GroupOut(_Out):
    group_id: str
    client_command_id: str | None
    requested_by: str
    origin: str
    command: str
    params: dict[str, Any]
    reason: str
    selector: dict[str, Any]
    state: Literal["requested", "approved", "running", "paused", "completed", "cancelled"]
    approvals_required: int
    approvals: list[str]
    preview_hash: str
    device_count: int
    excluded_count: int
    requested_at: datetime
    expires_at: datetime
    last_wave_at: datetime | None
    waves: int
    paused_reason: str
    failures_acknowledged: int
    finished_at: datetime | None
    members: dict[str, int]
    preview: list[dict[str, Any]] | None = None


class BulkCommandOut(_Out):
    commands: list[CommandOut]
    group: GroupOut | None
    refused: dict[str, str]


class QuarantineOut(_Out):
    operator: str
    state: str
    reason: str
    since: datetime
    released_by: str | None
    released_at: datetime | None
    times: int


class ReleaseIn(_In):
    cancel_held: bool = False
    comment: str = Field(default="", max_length=500)


# --------------------------------------------------------------------------- devices


class DeviceOut(_Out):
    device_id: str
    kind: str
    device_type: str
    manufacturer_id: str | None = None
    model: str | None = None
    protocol: str | None = None
    protocol_variant: str | None = None
    transport: str | None = None
    wake_mode: str | None = None
    has_valve: bool | None = None
    valve_arm_supported: bool | None = None
    status: str
    address: str | None = None
    serial_no: str | None = None
    parent_device_id: str | None = None
    point_no: int | None = None
    path: list[str] = Field(default_factory=list)
    link_id: str | None = None
    link_device_id: str | None = None
    service_point_id: str | None = None
    location_id: str | None = None
    region_id: str | None = None
    org_unit_id: str | None = None
    medium: str | None = None
    account_id: str | None = None
    protected: bool | None = None
    installed_at: datetime | None = None
    activated_at: datetime | None = None
    removed_at: datetime | None = None
    updated_at: datetime | None = None


class DevicePage(_Out):
    items: list[DeviceOut]
    next_cursor: str | None


class CommandSupportOut(_Out):
    handler: str
    read_back: bool


class DeviceDetailOut(DeviceOut):
    commands: dict[str, CommandSupportOut]
    delivery: str
    safety_lock: dict[str, Any] | None
    recent_commands: list[dict[str, Any]]


# --------------------------------------------------------------------------- operations


class OperationIn(_In):
    kind: OperationKind  # type: ignore[valid-type]
    params: dict[str, Any]
    client_operation_id: str | None = Field(default=None, min_length=1, max_length=200)
    reason: str = Field(default="", max_length=500)


class StepOut(_Out):
    step_no: int
    name: str
    kind: str
    state: str
    device_id: str | None
    command_id: str | None
    compensation_command_id: str | None
    error: str
    result: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None


class OperationOut(_Out):
    operation_id: str
    client_operation_id: str | None
    kind: str
    params: dict[str, Any]
    context: dict[str, Any]
    state: Literal["running", "compensating", "completed", "compensated", "failed"]
    current_step: int
    requested_by: str
    origin: str
    reason: str
    region: str | None
    error: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[StepOut]


# --------------------------------------------------------------------------- data


class ReadingOut(_Out):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    meter_id: str
    # ``register`` would shadow BaseModel.register; the JSON name stays "register".
    register_name: str = Field(alias="register")
    ts: datetime
    value: str
    unit: str
    kind: str
    interval_s: int | None
    status: list[str]
    received_at: datetime
    source: str


class ReadingPage(_Out):
    items: list[ReadingOut]
    next_cursor: str | None


class ValidatedReadingOut(_Out):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    meter_id: str
    register_name: str = Field(alias="register")
    ts: datetime
    version: int
    value: str | None
    unit: str
    quality: str
    method: str
    flags: list[str]
    kind: str
    consumption: str | None
    received_at: datetime | None
    validated_at: datetime | None


class ValidatedReadingPage(_Out):
    items: list[ValidatedReadingOut]
    next_cursor: str | None


class ConsumptionPage(_Out):
    """Aggregate rows: ``bucket``, the grouping columns asked for, and the measures
    (``consumption``, ``reading_count``, ``interval_count``, ``estimated_count``,
    ``min_consumption``, ``max_consumption``)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


class ImportOut(_Out):
    files: list[dict[str, str]]
    counts: dict[str, dict[str, int]]
    dry_run: bool
    changed: int
    summary: str


# --------------------------------------------------------------------------- identity


class MeOut(_Out):
    user: str
    roles: list[str]
    regions: list[str] | None
    permissions: list[str]


class TokenIn(_In):
    user: str = Id
    roles: list[Literal["operator", "approver", "outworker", "billing", "analyst", "admin"]] = \
        Field(min_length=1)
    regions: list[str] | None = None
    description: str = Field(default="", max_length=500)
    expires_at: datetime | None = None


class TokenOut(_Out):
    token_id: str
    token: str = Field(description="The secret: shown once, store it now.")
    user: str
    roles: list[str]
    regions: list[str] | None
