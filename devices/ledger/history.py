"""Reading the ledger's change history: what changed on a device, meter, account … when, by
whom and why (``ledger.history`` is written by the triggers of every entity table)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = ["ENTITY_TABLES", "history_of"]

#: Entity words people use -> the ledger table whose history holds them.
ENTITY_TABLES = {
    "device": "devices", "meter": "meters", "account": "accounts", "customer": "customers",
    "location": "locations", "org_unit": "org_units", "supply_node": "supply_nodes",
    "service_point": "service_points", "device_type": "device_types", "tariff": "tariffs",
    "tariff_version": "tariff_versions", "vee_group": "vee_groups",
    "collection_plan": "collection_plans", "manufacturer": "manufacturers",
}


def history_of(conn: psycopg.Connection, entity_id: str, *, entity: str | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
    """The changes of ``entity_id``, newest first. Without ``entity`` a device id also shows
    its meter attributes' changes (the two tables share the id)."""
    tables: list[str]
    if entity is None:
        tables = ["devices", "meters"] if conn.execute(
            "SELECT 1 FROM ledger.history WHERE entity IN ('devices', 'meters') "
            "AND entity_id = %s LIMIT 1", (entity_id,)).fetchone() else list(
            ENTITY_TABLES.values())
    else:
        table = ENTITY_TABLES.get(entity, entity)
        tables = [table] if table != "devices" else ["devices", "meters"]
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT history_id, entity, entity_id, op, row_version, changed_at, actor, "
                    "reason, before, after FROM ledger.history "
                    "WHERE entity = ANY(%s) AND entity_id = %s "
                    "ORDER BY history_id DESC LIMIT %s", (tables, entity_id, limit))
        return cur.fetchall()
