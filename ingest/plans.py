"""The ledger's collection plans, as the FEP runs them.

Strategy: the control plane keeps collection plans in the ledger (what to read, how often —
an interval or a cron schedule — within which local-time window, from which devices); the
view ``ledger.collection_plan_devices`` resolves each plan to its installed meters with
address, link and service point. Each FEP reads the rows of the service points it serves
(every ``ledger_plans_refresh_s``) and the poller schedules one job per plan; a run asks
only the meters whose link this FEP holds at that moment (another FEP asks the others).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import time
from typing import Any

from schemas.settings import DatabaseSettings

__all__ = ["LedgerPlan", "PlanTarget", "load_ledger_plans"]


@dataclass(frozen=True)
class PlanTarget:
    device_id: str
    address: str
    link_id: str | None
    service_point: str
    protocol: str


@dataclass(frozen=True)
class LedgerPlan:
    plan_id: str
    command: str
    interval_s: int | None
    schedule: str
    window_start: time | None
    window_end: time | None
    retries: int
    params: dict[str, Any] = field(default_factory=dict)
    targets: tuple[PlanTarget, ...] = ()

    def in_window(self, local: time) -> bool:
        """Whether a run at local time ``local`` is allowed (windows may cross midnight)."""
        start, end = self.window_start, self.window_end
        if start is None or end is None:
            return True
        if start <= end:
            return start <= local < end
        return local >= start or local < end

    def fingerprint(self) -> tuple[Any, ...]:
        return (self.command, self.interval_s, self.schedule, self.window_start,
                self.window_end, self.retries)


_QUERY = """
SELECT plan_id, command, params, interval_s, schedule, window_start, window_end, retries,
       device_id, address, link_id, service_point_id, protocol
  FROM ledger.collection_plan_devices
 WHERE service_point_id = ANY(%s) AND kind = 'meter' AND address IS NOT NULL
 ORDER BY plan_id, device_id
"""


async def load_ledger_plans(database: DatabaseSettings, service_points: Sequence[str]
                            ) -> dict[str, LedgerPlan]:
    """Every enabled plan with its meters on ``service_points`` (acting as the ingest role)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(database.conninfo("ingest"),
                                                     autocommit=True) as conn:
        cur = await conn.execute(_QUERY, (list(service_points),))
        rows = await cur.fetchall()
    plans: dict[str, LedgerPlan] = {}
    targets: dict[str, list[PlanTarget]] = {}
    for (plan_id, command, params, interval_s, schedule, window_start, window_end, retries,
         device_id, address, link_id, service_point, protocol) in rows:
        if plan_id not in plans:
            plans[plan_id] = LedgerPlan(
                plan_id=plan_id, command=command, interval_s=interval_s,
                schedule=schedule or "", window_start=window_start, window_end=window_end,
                retries=retries, params=dict(params or {}))
            targets[plan_id] = []
        targets[plan_id].append(PlanTarget(device_id=device_id, address=address,
                                           link_id=link_id, service_point=service_point,
                                           protocol=protocol or ""))
    return {pid: LedgerPlan(**{**plan.__dict__, "targets": tuple(targets[pid])})
            for pid, plan in plans.items()}
