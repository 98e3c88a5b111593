"""What billing must know of the control plane's safety locks, sent on ``billing.inbox``.

Strategy: the billing agent arms a prepaid meter's valve again after a top-up unless the
account is under a *safety lock* (``billing.engine``: a close for a leak, tamper or an
operator's safety cause is never reopened automatically). The control plane is where those
locks are set by operators and cleared by people who checked the installation, so it tells
billing with :class:`~schemas.messages.BillingControl` ``safety_lock`` / ``clear_safety_lock``
for the meter's account, written to the command outbox in the same transaction as the lock
row (never published for a change that did not commit, never lost for one that did). The
control id is derived from the command, so a replay is applied once. Meters without an
account (no billing) get nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import psycopg

from devices.commands import outbox
from schemas.messages import BillingControl

__all__ = ["account_of", "enqueue_safety_control"]


def account_of(conn: psycopg.Connection[Any], meter_id: str) -> str | None:
    row = conn.execute("SELECT account_id FROM ledger.meters WHERE meter_id = %s",
                       (meter_id,)).fetchone()
    return str(row[0]) if row is not None and row[0] is not None else None


def enqueue_safety_control(conn: psycopg.Connection[Any], meter_id: str,
                           action: Literal["safety_lock", "clear_safety_lock"], *,
                           command_id: str, actor: str, reason: str, now: datetime
                           ) -> BillingControl | None:
    """Queue the control for the meter's account; None when the meter bills no account."""
    account_id = account_of(conn, meter_id)
    if account_id is None:
        return None
    control = BillingControl(control_id=f"{action}:{command_id}", account_id=account_id,
                             action=action, ts=now, requested_by=actor, reason=reason,
                             meter_id=meter_id)
    outbox.enqueue(conn, "billing.inbox", control)
    return control
