"""Collection plans: the FEP asks the devices that do not report by themselves.

Strategy: each plan is an apscheduler interval job (``interval_s`` with ``jitter_s`` of random
delay, so thousands of links are not asked in the same second; a run still going when the
next is due is skipped, never stacked). Two kinds of plan:

* ``link`` — for every link of the service point connected to this FEP, every meter the
  ledger assigns to it (or that was heard through it) gets the plan's unified command
  (``read_now`` by default) through the link's stack; the reply flows through the session
  like any frame, so its readings reach ``readings.raw`` with ``source='poll'``. A serial bus
  behind a DTU answers one request at a time: ``per_link_concurrency`` bounds the requests in
  flight per link (links are asked in parallel).
* ``modbus`` — Modbus TCP RTUs (``host:port/unit``) read with pymodbus; the register map is a
  ``decoders`` template that says which registers to read and what they mean. Every request
  and response is kept in ``frames.raw`` (pymodbus' packet trace).

Every plan counts runs, requests, successes, failures and timeouts; ``snapshot()`` reports
them (the FEP's status line and registry heartbeat carry them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ingest.settings import PollPlanSettings
from schemas.errors import UnimeterError

if TYPE_CHECKING:
    from ingest.commands import CommandLink
    from ingest.fep import FepRuntime
    from ingest.plans import LedgerPlan
    from ingest.stack import CommandFrame

__all__ = ["PlanStats", "Poller"]

log = logging.getLogger(__name__)


@dataclass
class PlanStats:
    runs: int = 0
    skipped_runs: int = 0
    requests: int = 0
    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    not_held: int = 0  # meters whose link another FEP holds (it asks them)
    outside_window: int = 0  # runs skipped outside the plan's local-time window
    last_run_at: float = 0.0
    last_run_s: float = 0.0


class Poller:
    def __init__(self, runtime: FepRuntime, plans: dict[str, PollPlanSettings]) -> None:
        self.runtime = runtime
        self.plans = plans
        self.stats = {name: PlanStats() for name in plans}
        self._scheduler: Any = None
        self._running: set[str] = set()
        self._modbus: dict[str, Any] = {}  # plan name → ModbusPoll (keeps its connections)

    async def start(self, *, ledger_plans: bool = False) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._ledger_plans: dict[str, LedgerPlan] = {}
        for name, plan in self.plans.items():
            self._scheduler.add_job(
                self.run_plan, IntervalTrigger(seconds=plan.interval_s,
                                               jitter=plan.jitter_s or None),
                args=[name], id=name, max_instances=1, coalesce=True,
                misfire_grace_time=max(1, int(plan.interval_s)))
        self._scheduler.start()
        if ledger_plans:
            self._refresh_task = asyncio.create_task(self._refresh_loop(), name="ledger-plans")

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh_ledger_plans()
            except Exception as exc:  # the database may be away: keep the plans we have
                log.warning("cannot read the ledger's collection plans: %r", exc)
            await asyncio.sleep(self.runtime.settings.ledger_plans_refresh_s)

    async def refresh_ledger_plans(self) -> dict[str, LedgerPlan]:
        """Read the ledger's plans for our service points and (re)schedule what changed."""
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        from ingest.plans import load_ledger_plans

        runtime = self.runtime
        assert runtime.database is not None
        plans = await load_ledger_plans(runtime.database, list(runtime.points))
        for plan_id in set(self._ledger_plans) - set(plans):
            with contextlib.suppress(Exception):
                self._scheduler.remove_job(f"ledger:{plan_id}")
        for plan_id, plan in plans.items():
            job_id = f"ledger:{plan_id}"
            self.stats.setdefault(job_id, PlanStats())
            old = self._ledger_plans.get(plan_id)
            if old is not None and old.fingerprint() == plan.fingerprint():
                continue
            trigger: Any
            if plan.schedule:
                trigger = CronTrigger.from_crontab(plan.schedule, timezone=runtime.timezone)
            else:
                interval = plan.interval_s or 86_400
                trigger = IntervalTrigger(seconds=interval, jitter=min(300, interval // 10))
            self._scheduler.add_job(self.run_ledger_plan, trigger, args=[plan_id], id=job_id,
                                    max_instances=1, coalesce=True, replace_existing=True,
                                    misfire_grace_time=60)
        self._ledger_plans = plans
        return plans

    async def run_ledger_plan(self, plan_id: str) -> PlanStats:
        """Run one ledger plan now: the meters of its targets whose links this FEP holds."""
        from datetime import UTC, datetime
        from zoneinfo import ZoneInfo

        name = f"ledger:{plan_id}"
        stats = self.stats.setdefault(name, PlanStats())
        plan = self._ledger_plans.get(plan_id)
        if plan is None:
            return stats
        local = datetime.now(UTC).astimezone(ZoneInfo(self.runtime.timezone)).time()
        if not plan.in_window(local):
            stats.outside_window += 1
            return stats
        if name in self._running:
            stats.skipped_runs += 1
            return stats
        self._running.add(name)
        started = time.monotonic()
        stats.runs += 1
        stats.last_run_at = time.time()
        try:
            by_link: dict[int, tuple[CommandLink, list[tuple[str, str | None]]]] = {}
            for target in plan.targets:
                link = self.runtime.link_for_device(target.device_id, target.link_id)
                if link is None:
                    stats.not_held += 1
                    continue
                meter = self.runtime.ledger.meters.get(target.device_id)
                entry = by_link.setdefault(id(link), (link, []))
                entry[1].append((target.address, meter.medium if meter else None))
            settings = PollPlanSettings(
                service_point=plan.targets[0].service_point if plan.targets else "",
                command=plan.command, retries=plan.retries,
                timeout_s=self.runtime.settings.ledger_plan_timeout_s)

            async def one_link(link: CommandLink, meters: list[tuple[str, str | None]]) -> None:
                for address, medium in meters:  # a serial bus answers one at a time
                    await self._ask(link, address, medium, settings, stats, plan.params)

            await asyncio.gather(*(one_link(link, meters) for link, meters in by_link.values()))
        finally:
            stats.last_run_s = time.monotonic() - started
            self._running.discard(name)
        return stats

    async def stop(self) -> None:
        task = getattr(self, "_refresh_task", None)
        if task is not None:
            task.cancel()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        for poll in self._modbus.values():
            with contextlib.suppress(Exception):
                poll.close()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(s) for name, s in self.stats.items()}

    async def run_plan(self, name: str) -> PlanStats:
        """Run one plan now (the scheduler calls this; tests and the CLI may too)."""
        stats = self.stats[name]
        if name in self._running:
            stats.skipped_runs += 1
            return stats
        self._running.add(name)
        started = time.monotonic()
        stats.runs += 1
        stats.last_run_at = time.time()
        try:
            plan = self.plans[name]
            if plan.target == "modbus":
                await self._run_modbus(name, plan, stats)
            elif plan.target == "concentrator":
                await self._run_archives(plan, stats)
            else:
                await self._run_links(plan, stats)
        except Exception:
            log.exception("collection plan %s failed", name)
            stats.failures += 1
        finally:
            stats.last_run_s = time.monotonic() - started
            self._running.discard(name)
        return stats

    # ------------------------------------------------------------------ link plans

    def _targets(self, plan: PollPlanSettings
                 ) -> list[tuple[CommandLink, list[tuple[str, str | None]]]]:
        runtime = self.runtime
        targets: list[tuple[CommandLink, list[tuple[str, str | None]]]] = []
        for link_id, link in list(runtime.links.items()):
            if link.point_name != plan.service_point or link.closed.is_set():
                continue
            addresses: dict[str, str | None] = {}  # address → medium
            for meter in runtime.ledger.on_link(link_id):
                if meter.address and meter.status in ("installed", "active"):
                    addresses[meter.address] = meter.medium
            for address in getattr(link, "meters", {}):
                addresses.setdefault(address, None)
            if not addresses and runtime.points[plan.service_point].link == "direct":
                addresses[link_id] = None
            targets.append((link, list(addresses.items())))
        return targets

    async def _run_links(self, plan: PollPlanSettings, stats: PlanStats) -> None:
        async def one_link(link: CommandLink, addresses: list[tuple[str, str | None]]) -> None:
            slots = asyncio.Semaphore(plan.per_link_concurrency)

            async def one(address: str, medium: str | None) -> None:
                async with slots:
                    await self._ask(link, address, medium, plan, stats)

            await asyncio.gather(*(one(a, m) for a, m in addresses))

        await asyncio.gather(*(one_link(link, addrs) for link, addrs in self._targets(plan)))

    async def _ask(self, link: CommandLink, address: str, medium: str | None,
                   plan: PollPlanSettings, stats: PlanStats,
                   params: dict[str, Any] | None = None) -> None:
        def encode() -> CommandFrame:
            return link.stack.encode_command(plan.command, address, params or {},
                                             sequence=link.next_command_sequence(),
                                             medium=medium, link_id=getattr(
                                                 link, "link_address", None)
                                             or link.device_id)

        await self._exchange(link, plan, stats, encode, what=f"poll {plan.command}",
                             target=address, errors=(UnimeterError,))

    async def _exchange(self, link: CommandLink, plan: PollPlanSettings, stats: PlanStats,
                        encode: Callable[[], CommandFrame], *, what: str, target: str,
                        errors: tuple[type[Exception], ...]) -> None:
        """One request of a plan on ``link``, retried on timeouts, counted in ``stats``."""
        router = self.runtime.commands
        for _attempt in range(plan.retries + 1):
            if link.closed.is_set():
                stats.failures += 1
                return
            try:
                frame = encode()
            except errors as exc:
                stats.failures += 1
                log.warning("plan %s: %s for %s cannot be encoded: %s", plan.command, what,
                            target, exc)
                return
            stats.requests += 1
            sent, reply = await router.exchange(link, frame, wait_s=plan.timeout_s, what=what)
            if not sent:
                stats.failures += 1
                return
            if reply is not None:
                ok, _ = link.stack.reply_outcome(frame, reply)
                if ok:
                    stats.successes += 1
                else:
                    stats.failures += 1
                return
            stats.timeouts += 1
        stats.failures += 1

    # ------------------------------------------------------------------ concentrator archives

    async def _run_archives(self, plan: PollPlanSettings, stats: PlanStats) -> None:
        runtime = self.runtime

        async def one_link(link: CommandLink, points: list[int]) -> None:
            step = plan.points_per_request
            for start in range(0, len(points), step):  # one request at a time per link
                await self._ask_archive(link, points[start:start + step], plan, stats)

        work = []
        for link_id, link in list(runtime.links.items()):
            if link.point_name != plan.service_point or link.closed.is_set():
                continue
            points = sorted({m.point_no for m in runtime.ledger.on_link(link_id)
                             if m.point_no is not None and m.status in ("installed", "active")})
            if points:
                work.append(one_link(link, points))
        await asyncio.gather(*work)

    async def _ask_archive(self, link: CommandLink, points: list[int], plan: PollPlanSettings,
                           stats: PlanStats) -> None:
        def encode() -> CommandFrame:
            frame: CommandFrame = link.stack.encode_archive_request(  # type: ignore[attr-defined]
                getattr(link, "link_address", None) or link.device_id, points,
                sequence=link.next_command_sequence(),
                daily=plan.command == "read_history")
            return frame

        await self._exchange(link, plan, stats, encode, what=f"archive {plan.command}",
                             target=link.device_id, errors=(UnimeterError, AttributeError))

    # ------------------------------------------------------------------ Modbus TCP

    async def _run_modbus(self, name: str, plan: PollPlanSettings, stats: PlanStats) -> None:
        from ingest.protocols import ModbusPoll

        poll = self._modbus.get(name)
        if poll is None:
            poll = self._modbus[name] = ModbusPoll(self.runtime, plan)
        for endpoint in plan.endpoints:
            try:
                ok = await poll.read(endpoint, stats)
            except Exception as exc:
                log.warning("plan %s: %s failed: %r", name, endpoint, exc)
                ok = False
            if ok:
                stats.successes += 1
            else:
                stats.failures += 1
            await asyncio.sleep(0)
