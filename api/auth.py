"""Authentication with bearer tokens, roles, and per-object authorisation by region.

Strategy: a token is an opaque random string (``umt_…``) handed out once; the database keeps
only its SHA-256 (``ops.api_tokens``), with the user name, the roles and the regions the
token may see. Roles grant permissions (:data:`ROLE_PERMISSIONS`); every route declares the
one permission it needs (:func:`require`). Objects carry a region (devices through their
location, commands and operations from their device), and a principal limited to some
regions is told *not found* for everything elsewhere — an operator of one region cannot
even learn that another region's device exists. Verified tokens are cached for
``token_cache_s`` so a request costs no extra round trip; revocation takes effect within that.

Roles (DESIGN.md users): **operator** (console: devices, commands, alerts), **approver**
(operator + second approvals, quarantine release, mass commands), **outworker** (meter
install/replace/remove operations), **billing** (the billing system: commands and account
operations from automation, readings and aggregates), **analyst** (readings, aggregates,
topology; no commands), **admin** (everything, tokens, audit, imports).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = [
    "HUMAN_ROLES",
    "ROLES",
    "ROLE_PERMISSIONS",
    "Principal",
    "create_token",
    "principal_from_token",
    "require",
    "revoke_token",
]

ROLES = ("operator", "approver", "outworker", "billing", "analyst", "admin")
HUMAN_ROLES = frozenset({"operator", "approver", "outworker", "analyst", "admin"})

_READ = {"devices:read", "topology:read", "commands:read", "operations:read", "readings:read",
         "alerts:read"}
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": frozenset(_READ | {"commands:submit", "groups:submit", "commands:cancel"}),
    "approver": frozenset(_READ | {"commands:submit", "groups:submit", "commands:cancel",
                                   "commands:approve", "groups:approve", "quarantine:release"}),
    "outworker": frozenset({"devices:read", "topology:read", "commands:read", "operations:read",
                            "operations:submit:meter", "readings:read"}),
    "billing": frozenset({"devices:read", "commands:read", "commands:submit", "operations:read",
                          "operations:submit:account", "readings:read", "aggregates:read"}),
    "analyst": frozenset({"devices:read", "topology:read", "readings:read", "aggregates:read",
                          "alerts:read"}),
    "admin": frozenset(_READ | {"commands:submit", "groups:submit", "commands:cancel",
                                "commands:approve", "groups:approve", "quarantine:release",
                                "operations:submit:meter", "operations:submit:account",
                                "operations:cancel", "aggregates:read", "imports:write",
                                "audit:read", "tokens:admin"}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: user, roles, and the regions they may see (None = all)."""

    user: str
    roles: frozenset[str]
    regions: frozenset[str] | None
    token_id: str

    @property
    def permissions(self) -> frozenset[str]:
        out: set[str] = set()
        for role in self.roles:
            out |= ROLE_PERMISSIONS.get(role, frozenset())
        return frozenset(out)

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def sees(self, region: str | None) -> bool:
        """Whether an object of ``region`` is visible (objects without region: all-region
        principals only)."""
        return self.regions is None or (region is not None and region in self.regions)

    def region_list(self) -> list[str] | None:
        return None if self.regions is None else sorted(self.regions)

    @property
    def origin(self) -> str:
        """The command origin of this caller: a person (``api``) or the billing system."""
        return "api" if self.roles & HUMAN_ROLES else "billing"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: psycopg.Connection[Any], *, user: str, roles: Iterable[str],
                 regions: Sequence[str] | None = None, description: str = "",
                 created_by: str = "", expires_at: datetime | None = None) -> tuple[str, str]:
    """Create a token; returns ``(token_id, secret)`` — the secret is shown only once."""
    roles = sorted(set(roles))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown role(s) {unknown}; roles: {', '.join(ROLES)}")
    secret = "umt_" + secrets.token_urlsafe(32)
    token_id = uuid.uuid4().hex[:12]
    conn.execute(
        "INSERT INTO ops.api_tokens (token_id, token_hash, user_name, roles, regions, "
        "description, created_by, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (token_id, _digest(secret), user, roles, list(regions) if regions is not None else None,
         description, created_by, expires_at))
    return token_id, secret


def revoke_token(conn: psycopg.Connection[Any], token_id: str) -> bool:
    row = conn.execute("UPDATE ops.api_tokens SET revoked_at = now() WHERE token_id = %s AND "
                       "revoked_at IS NULL RETURNING token_id", (token_id,)).fetchone()
    return row is not None


def principal_from_token(conn: psycopg.Connection[Any], token: str) -> Principal | None:
    row = conn.execute(
        "UPDATE ops.api_tokens SET last_used_at = now() WHERE token_hash = %s AND "
        "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
        "RETURNING token_id, user_name, roles, regions", (_digest(token),)).fetchone()
    if row is None:
        return None
    return Principal(user=row[1], roles=frozenset(row[2]),
                     regions=None if row[3] is None else frozenset(row[3]), token_id=row[0])


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer umt_…` — create a "
                                                   "token with `unimeter api token create`")


class _TokenCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str, ttl: float) -> Principal | None:
        hit = self._entries.get(token)
        if hit is None or time.monotonic() - hit[0] > ttl:
            return None
        return hit[1]

    def put(self, token: str, principal: Principal) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[token] = (time.monotonic(), principal)


def _unauthenticated(reason: str) -> HTTPException:
    return HTTPException(401, detail={"reason": reason,
                                      "hint": "send Authorization: Bearer <token>"},
                         headers={"WWW-Authenticate": "Bearer"})


def current_principal(request: Request,
                      credentials: Annotated[HTTPAuthorizationCredentials | None,
                                             Depends(_bearer)]) -> Principal:
    if credentials is None or not credentials.credentials:
        raise _unauthenticated("no bearer token")
    token = credentials.credentials
    state = request.app.state
    cache: _TokenCache = state.token_cache
    principal = cache.get(token, state.api_settings.token_cache_s)
    if principal is None:
        with state.pool.connection() as conn:
            principal = principal_from_token(conn, token)
        if principal is None:
            raise _unauthenticated("unknown, expired or revoked token")
        cache.put(token, principal)
    request.state.principal = principal
    return principal


def require(*permissions: str) -> Callable[..., Principal]:
    """A dependency: the caller, who must hold one of ``permissions``."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not any(principal.can(p) for p in permissions):
            raise HTTPException(403, detail={
                "reason": f"{principal.user} ({', '.join(sorted(principal.roles))}) may not "
                          f"do this: needs {' or '.join(permissions)}",
                "hint": "ask an administrator for a token with a role that allows it"})
        return principal

    return check


def utc_now() -> datetime:
    return datetime.now(UTC)
