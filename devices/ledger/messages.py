"""Ledger rows as the stream sees them: ``LedgerMeter``, ``LedgerAccount``, ``LedgerTariff``,
``LedgerVeeGroup`` built from the denormalised views, many keys per query.

Every builder takes the keys to build and returns ``{key: message}``; a key that no longer
exists in the ledger is absent from the result (the publisher turns it into a tombstone).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from schemas.messages import (
    LedgerAccount,
    LedgerMeter,
    LedgerTariff,
    LedgerVeeGroup,
    Message,
    TariffTier,
    TopUp,
)

__all__ = [
    "BUILDERS",
    "Builder",
    "build_accounts",
    "build_meters",
    "build_tariffs",
    "build_topups",
    "build_vee_groups",
    "tariff_tiers",
]

Builder = Callable[[AsyncConnection[Any], Sequence[str]], Awaitable[dict[str, Message]]]


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


async def build_meters(conn: AsyncConnection[Any], keys: Sequence[str]) -> dict[str, Message]:
    """``LedgerMeter`` per meter id from ``ledger.meter_dimensions``."""
    out: dict[str, Message] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM ledger.meter_dimensions WHERE meter_id = ANY(%s)",
                          (list(keys),))
        for row in await cur.fetchall():
            out[row["meter_id"]] = LedgerMeter(
                meter_id=row["meter_id"], status=row["status"], medium=row["medium"],
                updated_at=row["updated_at"], address=row["address"],
                device_type=row["device_type"], protocol=row["protocol"],
                manufacturer=row["manufacturer"], size=row["size"], qmax=_dec(row["qmax"]),
                register_digits=row["register_digits"],
                register_decimals=row["register_decimals"], unit=row["unit"],
                has_valve=bool(row["has_valve"]), link_id=row["link_id"],
                service_point=row["service_point"], account_id=row["account_id"],
                customer_type=row["customer_type"], region=row["region"],
                org_unit=row["org_unit"], supply_node=row["supply_node"],
                tariff_id=row["tariff_id"], vee_group=row["vee_group"],
                installed_at=row["installed_at"], removed_at=row["removed_at"],
                point_no=row.get("point_no"),
            )
    return out


async def build_accounts(conn: AsyncConnection[Any], keys: Sequence[str]) -> dict[str, Message]:
    """``LedgerAccount`` per account id from ``ledger.account_dimensions``."""
    out: dict[str, Message] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM ledger.account_dimensions WHERE account_id = ANY(%s)",
                          (list(keys),))
        for row in await cur.fetchall():
            out[row["account_id"]] = LedgerAccount(
                account_id=row["account_id"], customer_type=row["customer_type"],
                billing_mode=row["billing_mode"], updated_at=row["updated_at"],
                customer_id=row["customer_id"], tariff_id=row["tariff_id"],
                status=row["status"], protected=row["protected"],
                alarm1=_dec(row["alarm1"]), alarm2=_dec(row["alarm2"]),
                overdraft_limit=_dec(row["overdraft_limit"]) or Decimal("0"),
                max_balance=_dec(row["max_balance"]),
                reconnect_limit=_dec(row["reconnect_limit"]) or Decimal("0"),
                tier_override={str(k): Decimal(str(v))
                               for k, v in (row["tier_override"] or {}).items()},
                region=row["region"],
            )
    return out


def tariff_tiers(raw: Any) -> tuple[TariffTier, ...]:
    """The ``tiers`` JSON of a tariff version as typed tiers (prices stay exact decimals)."""
    tiers = []
    for tier in raw or ():
        tiers.append(TariffTier(
            upper=_dec(tier.get("upper")),
            price=_dec(tier["price"]) or Decimal("0"),
            components={str(k): Decimal(str(v)) for k, v in (tier.get("components") or {}).items()},
        ))
    return tuple(tiers)


async def build_tariffs(conn: AsyncConnection[Any], keys: Sequence[str]) -> dict[str, Message]:
    """``LedgerTariff`` per ``tariff_id:version`` key."""
    pairs = [k.rsplit(":", 1) for k in keys if ":" in k]
    ids = [p[0] for p in pairs]
    versions = [int(p[1]) for p in pairs if p[1].isdigit()]
    out: dict[str, Message] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT v.*, t.medium, t.currency, t.unit,
                      GREATEST(v.updated_at, t.updated_at) AS changed_at
                 FROM ledger.tariff_versions v JOIN ledger.tariffs t USING (tariff_id)
                WHERE (v.tariff_id, v.version) IN (
                      SELECT * FROM unnest(%s::text[], %s::int[]))""",
            (ids, versions))
        for row in await cur.fetchall():
            key = f"{row['tariff_id']}:{row['version']}"
            out[key] = LedgerTariff(
                tariff_id=row["tariff_id"], version=row["version"], kind=row["kind"],
                effective_from=row["effective_from"], updated_at=row["changed_at"],
                medium=row["medium"], currency=row["currency"], unit=row["unit"],
                cycle=row["cycle"], cycle_start_month=row["cycle_start_month"],
                cycle_start_day=row["cycle_start_day"], tiers=tariff_tiers(row["tiers"]),
                tou=row["tou"] or {}, effective_to=row["effective_to"],
            )
    return out


async def build_vee_groups(conn: AsyncConnection[Any],
                           keys: Sequence[str]) -> dict[str, Message]:
    """``LedgerVeeGroup`` per group id; the group's ``row_version`` is its version."""
    out: dict[str, Message] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT vee_group_id, row_version, spec, updated_at "
                          "FROM ledger.vee_groups WHERE vee_group_id = ANY(%s)", (list(keys),))
        for row in await cur.fetchall():
            updated: datetime = row["updated_at"]
            out[row["vee_group_id"]] = LedgerVeeGroup(
                group_id=row["vee_group_id"], version=row["row_version"], spec=row["spec"],
                updated_at=updated)
    return out


#: Topic (catalog name) -> builder of its messages.
BUILDERS: dict[str, Builder] = {
    "ledger.meters": build_meters,
    "ledger.accounts": build_accounts,
    "ledger.tariffs": build_tariffs,
    "ledger.vee_groups": build_vee_groups,
}


async def build_topups(conn: AsyncConnection[Any], keys: Sequence[str]) -> dict[str, Message]:
    """``TopUp`` per top-up id from ``ledger.sync_topups`` (for ``billing.topups``)."""
    out: dict[str, Message] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM ledger.sync_topups WHERE top_up_id = ANY(%s)",
                          (list(keys),))
        for row in await cur.fetchall():
            out[row["top_up_id"]] = TopUp(
                top_up_id=row["top_up_id"], account_id=row["account_id"],
                amount=_dec(row["amount"]) or Decimal("0"), ts=row["ts"], kind=row["kind"],
                channel=row["channel"], currency=row["currency"], operator=row["operator"],
                reason=row["reason"])
    return out


BUILDERS["billing.topups"] = build_topups
