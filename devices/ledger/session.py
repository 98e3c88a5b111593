"""Who changes the ledger and why: the actor and reason recorded in ``ledger.history``."""

from __future__ import annotations

import psycopg

__all__ = ["acting_as"]


def acting_as(conn: psycopg.Connection, actor: str, reason: str = "") -> None:
    """Record ``actor``/``reason`` for the ledger changes of the current transaction.

    Uses ``set_config(..., is_local => true)``: it ends with the transaction, so call it inside
    the transaction that makes the changes (``with conn.transaction(): acting_as(...)``).
    """
    conn.execute("SELECT set_config('unimeter.actor', %s, true), "
                 "set_config('unimeter.reason', %s, true)", (actor, reason))
