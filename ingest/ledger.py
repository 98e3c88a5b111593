"""The FEP's view of the ledger and the admission decision made on it.

Strategy: the control plane publishes every meter to the compacted topic ``ledger.meters``
(:class:`~schemas.messages.LedgerMeter`: address, protocol, link, service point, status). Each
FEP reads the topic from the beginning at start-up (all partitions, no consumer group: every
FEP needs every meter), waits until it has reached the end offsets, and keeps following it,
so a meter installed in the ledger can report seconds later. Lookups are by address (what a
frame carries) and by link (what a DTU or concentrator carries).

Admission answers one question for every frame: may *this link* report for *this address*?
In ``ledger`` mode only for installed or active meters assigned to the link (or to no link)
and to the service point (or to none). In ``auto`` mode — commissioning a new network — every
device is admitted, and each one unknown to the ledger is audited once
(``ops.fep_auto_registrations``, a ``device.events`` record and an alert) so the ledger can
adopt or remove it. A rejection says why, so operators can fix the ledger or the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schemas import codec
from schemas.errors import MessageDecodeError
from schemas.messages import LedgerMeter
from schemas.settings import KafkaSettings

__all__ = ["Admission", "AdmissionDecision", "LedgerView", "normalise_address"]

log = logging.getLogger(__name__)

_REPORTING = frozenset({"installed", "active"})


def normalise_address(address: str) -> str:
    """One spelling of an address or link id for comparisons: upper case, no spaces, dashes
    or colons (the ledger may write a concentrator ``4201-0001`` that its frames call
    ``42010001``)."""
    return address.replace(" ", "").replace("-", "").replace(":", "").upper()


class LedgerView:
    """Meters by id, address and link, kept current from ``ledger.meters``."""

    def __init__(self) -> None:
        self.meters: dict[str, LedgerMeter] = {}
        self._by_address: dict[str, set[str]] = defaultdict(set)
        self._by_link: dict[str, set[str]] = defaultdict(set)  # normalised link id → meters
        self._link_spelling: dict[str, str] = {}  # normalised → as the ledger writes it
        self._unlinked_points: dict[str, int] = defaultdict(int)
        self._by_point: dict[tuple[str, int], str] = {}  # (normalised link, pN) → meter
        self.ready = asyncio.Event()
        #: bumped by every change: decisions taken on an older generation are stale
        self.generation = 0
        self.decode_errors = 0
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None

    # ------------------------------------------------------------------ content

    def apply(self, meter: LedgerMeter) -> None:
        """Insert or replace a meter (a newer ``ledger_version`` wins over an older one)."""
        old = self.meters.get(meter.meter_id)
        if old is not None:
            if old.ledger_version > meter.ledger_version:
                return
            self._unindex(old)
        self.generation += 1
        self.meters[meter.meter_id] = meter
        if meter.address:
            self._by_address[normalise_address(meter.address)].add(meter.meter_id)
        if meter.link_id:
            key = normalise_address(meter.link_id)
            self._by_link[key].add(meter.meter_id)
            self._link_spelling[key] = meter.link_id
            if meter.point_no is not None and meter.status != "removed":
                self._by_point[(key, meter.point_no)] = meter.meter_id
        elif meter.service_point and meter.status in _REPORTING:
            self._unlinked_points[meter.service_point] += 1

    def remove(self, meter_id: str) -> None:
        old = self.meters.pop(meter_id, None)
        if old is not None:
            self.generation += 1
            self._unindex(old)

    def _unindex(self, meter: LedgerMeter) -> None:
        if meter.address:
            key = normalise_address(meter.address)
            self._by_address[key].discard(meter.meter_id)
            if not self._by_address[key]:
                del self._by_address[key]
        if meter.link_id:
            key = normalise_address(meter.link_id)
            if meter.point_no is not None and \
                    self._by_point.get((key, meter.point_no)) == meter.meter_id:
                del self._by_point[(key, meter.point_no)]
            self._by_link[key].discard(meter.meter_id)
            if not self._by_link[key]:
                del self._by_link[key]
                self._link_spelling.pop(key, None)
        elif meter.service_point and meter.status in _REPORTING:
            self._unlinked_points[meter.service_point] -= 1

    def load(self, meters: Iterable[LedgerMeter]) -> None:
        for meter in meters:
            self.apply(meter)
        self.ready.set()

    def by_address(self, address: str, protocol: str = "") -> list[LedgerMeter]:
        ids = self._by_address.get(normalise_address(address), ())
        found = [self.meters[i] for i in ids]
        if protocol and len(found) > 1:
            family = protocol.split("-")[0]
            same = [m for m in found if m.protocol.split("-")[0] == family]
            found = same or found
        return found

    def at_point(self, link_id: str, point_no: int) -> LedgerMeter | None:
        """The meter at measuring point ``point_no`` of the concentrator ``link_id``."""
        meter_id = self._by_point.get((normalise_address(link_id), point_no))
        return self.meters.get(meter_id) if meter_id is not None else None

    def on_link(self, link_id: str) -> list[LedgerMeter]:
        return [self.meters[i] for i in self._by_link.get(normalise_address(link_id), ())]

    def link_known(self, link_id: str, service_point: str) -> bool:
        return bool(self._by_link.get(normalise_address(link_id))) or \
            self._unlinked_points.get(service_point, 0) > 0

    def canonical_link(self, link_id: str) -> str:
        """The link id as the ledger writes it (the registry and the control plane use
        that spelling), or ``link_id`` itself for a link the ledger does not know."""
        return self._link_spelling.get(normalise_address(link_id), link_id)

    # ------------------------------------------------------------------ Kafka

    async def follow(self, kafka: KafkaSettings, *, client_id: str,
                     ready_timeout_s: float = 60.0) -> None:
        """Read ``ledger.meters`` to its end (then ``ready`` is set) and keep following it."""
        from aiokafka import AIOKafkaConsumer

        topic = kafka.topic("ledger.meters")
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None,
                                    client_id=f"{client_id}-ledger", enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        self._consumer = consumer
        # Without a group, a subscription is every partition, read from the beginning.
        consumer.subscribe([topic])
        self._task = asyncio.create_task(self._run(consumer), name="ledger-follow")
        try:
            await asyncio.wait_for(self.ready.wait(), timeout=ready_timeout_s)
        except TimeoutError:
            log.warning("ledger.meters not fully read after %.0fs; admitting on what is known "
                        "(%d meters)", ready_timeout_s, len(self.meters))
            self.ready.set()

    async def _run(self, consumer: Any) -> None:
        end: dict[Any, int] | None = None
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for record in records:
                    self._apply_record(record)
            if self.ready.is_set():
                continue
            assigned = consumer.assignment()
            if not assigned:
                continue
            if end is None:  # where the topic ended when we started: "read to the end"
                end = await consumer.end_offsets(list(assigned))
            positions = {tp: await consumer.position(tp) for tp in end}
            if all(positions[tp] >= offset for tp, offset in end.items()):
                self.ready.set()

    def _apply_record(self, record: Any) -> None:
        if record.value is None:  # tombstone: the meter left the ledger
            if record.key:
                self.remove(record.key.decode())
            return
        try:
            _, message = codec.decode(record.value, LedgerMeter)
        except MessageDecodeError as exc:
            self.decode_errors += 1
            log.warning("ledger.meters record at offset %s skipped: %s", record.offset, exc)
            return
        assert isinstance(message, LedgerMeter)
        self.apply(message)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    admitted: bool
    meter_id: str | None = None
    reason: str = ""
    auto_registered: bool = False  # first sight of a device unknown to the ledger (auto mode)
    meter: LedgerMeter | None = None


class Admission:
    """Decides, per service point, whether a link may report for a device."""

    def __init__(self, ledger: LedgerView, *, mode: str = "ledger") -> None:
        self.ledger = ledger
        self.mode = mode
        self.rejected: dict[str, int] = defaultdict(int)
        self.admitted = 0
        self._auto_seen: set[tuple[str, str, str]] = set()
        self._cache: dict[tuple[str, str, str, str], tuple[AdmissionDecision, int]] = {}

    def admit_link(self, service_point: str, link_id: str) -> AdmissionDecision:
        if self.mode == "auto" or self.ledger.link_known(link_id, service_point):
            return AdmissionDecision(True)
        self.rejected["unknown_link"] += 1
        return AdmissionDecision(False, reason=f"link '{link_id}' has no meters assigned in "
                                                "the ledger")

    def admit_meter(self, service_point: str, link_id: str, address: str,
                    protocol: str = "") -> AdmissionDecision:
        # A link reports the same meters over and over: remember decisions until the ledger
        # changes (any change: a decision depends on the meter, its link and its point).
        key = (service_point, link_id, address, protocol)
        hit = self._cache.get(key)
        generation = self.ledger.generation
        if hit is not None and hit[1] == generation:
            decision = hit[0]
        else:
            decision = self._decide(service_point, link_id, address, protocol)
            if len(self._cache) > 200_000:
                self._cache.clear()
            # the first sight is reported once; cached repeats are ordinary admissions
            self._cache[key] = (AdmissionDecision(decision.admitted, decision.meter_id,
                                                  decision.reason, False, decision.meter),
                                generation)
        if decision.admitted:
            self.admitted += 1
        else:
            self.rejected[decision.reason.split(":")[0]] += 1
        return decision

    def _decide(self, service_point: str, link_id: str, address: str,
                protocol: str) -> AdmissionDecision:
        candidates = self.ledger.by_address(address, protocol)
        problems: list[str] = []
        for meter in candidates:
            problem = self._problem(meter, service_point, link_id)
            if problem is None:
                return AdmissionDecision(True, meter_id=meter.meter_id, meter=meter)
            problems.append(problem)
        if self.mode == "auto":
            found = candidates[0] if candidates else None
            seen_key = (service_point, link_id, normalise_address(address))
            first = seen_key not in self._auto_seen and found is None
            self._auto_seen.add(seen_key)
            return AdmissionDecision(True, meter_id=found.meter_id if found else
                                     normalise_address(address), auto_registered=first,
                                     meter=found)
        if not candidates:
            return AdmissionDecision(False, reason=f"unknown_address: no meter with address "
                                                   f"{address} in the ledger")
        return AdmissionDecision(False, reason=problems[0])

    @staticmethod
    def _problem(meter: LedgerMeter, service_point: str, link_id: str) -> str | None:
        if meter.status not in _REPORTING:
            return f"not_installed: meter {meter.meter_id} is '{meter.status}' in the ledger"
        if meter.service_point and meter.service_point != service_point:
            return (f"wrong_service_point: meter {meter.meter_id} belongs to service point "
                    f"'{meter.service_point}'")
        if meter.link_id and normalise_address(meter.link_id) not in (
                normalise_address(link_id), normalise_address(meter.meter_id),
                normalise_address(meter.address)):
            return (f"wrong_link: meter {meter.meter_id} is assigned to link "
                    f"'{meter.link_id}', not '{link_id}'")
        return None
