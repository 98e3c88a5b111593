"""Delivery mode of the simulator (fault tests): copies and reordering, as configured."""

from __future__ import annotations

import pytest

from simulator.runner import DeliverySettings, SimulatorSettings, parse_delivery


def test_the_default_is_one_copy_in_order() -> None:
    delivery = SimulatorSettings().delivery
    assert (delivery.copies_min, delivery.copies_max, delivery.reorder) == (1, 1, 0)


def test_a_delivery_spec_reads_copies_reorder_and_hold() -> None:
    delivery = parse_delivery("copies=1-5, reorder=8, hold=0.25")
    assert delivery == DeliverySettings(copies_min=1, copies_max=5, reorder=8,
                                        reorder_hold_s=0.25)
    assert parse_delivery("copies=3").copies_max == 3


@pytest.mark.parametrize(("text", "why"), [
    ("copies=5-1", "below copies_min"),
    ("copies=0", "greater than or equal to 1"),
    ("shuffle=3", "unknown delivery option 'shuffle'"),
])
def test_a_bad_delivery_spec_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_delivery(text)


async def test_uploads_held_for_reordering_are_pending_when_the_link_drops() -> None:
    """Regression: uploads built while the link held them for shuffling were not yet pending
    when the connection dropped (an FEP killed), so they were never sent — readings the meter
    logged as sent vanished."""
    import asyncio
    from datetime import UTC, datetime

    from simulator.clock import SimClock
    from simulator.fleet import FleetSpec
    from simulator.links import DtuLink
    from simulator.runner import Simulator

    spec = FleetSpec(gas_dtu_meters=4, water_dtu_meters=0, electricity_dtu_meters=0,
                     electricity_meters=0, nbiot_meters=0, modbus_rtus=0, meters_per_dtu=4)
    settings = SimulatorSettings(delivery=parse_delivery("reorder=8,hold=30"))
    start = datetime(2026, 1, 5, tzinfo=UTC)
    sim = Simulator(settings, spec=spec, clock=SimClock(start, 3600), log_path=None)
    link = DtuLink(sim, next(iter(sim.fleet.links.values())), "127.0.0.1", 1)
    assert link.has_ack
    meters = link.link.meters
    first = link.build_upload(meters[0], start)
    assert first is not None
    link.add_pending(first)
    holding = asyncio.create_task(link._reordered(first))
    for meter in meters[1:]:
        link.queue.put_nowait((meter, start))
    await asyncio.sleep(0.1)  # the link has built the others and waits for more
    holding.cancel()  # the connection dropped
    with pytest.raises(asyncio.CancelledError):
        await holding
    assert len(link.pending) == len(meters), "every built upload is sent after reconnecting"


def test_a_late_delivery_spec_reads_share_and_distance() -> None:
    delivery = parse_delivery("copies=1-5,reorder=8,late=0.05,late_after=20")
    assert (delivery.late, delivery.late_after) == (0.05, 20)
    assert SimulatorSettings().delivery.late == 0
    with pytest.raises(ValueError, match=r"less than or equal to 0\.5"):
        parse_delivery("late=0.9")


async def test_late_uploads_reach_the_fep_after_the_same_meters_next_reports() -> None:
    """Delivery mode ``late``: a held upload goes after ``late_after`` later uploads of the
    link — past the same meter's next report, so the platform sees one meter's readings out
    of time order — and stays pending while held (a dropped link sends it at once)."""
    import asyncio
    from datetime import UTC, datetime, timedelta
    from typing import Any

    from simulator.clock import SimClock
    from simulator.fleet import FleetSpec
    from simulator.links import DtuLink, Upload
    from simulator.runner import Simulator

    spec = FleetSpec(gas_dtu_meters=4, water_dtu_meters=0, electricity_dtu_meters=0,
                     electricity_meters=0, nbiot_meters=0, modbus_rtus=0, meters_per_dtu=4)
    settings = SimulatorSettings(delivery=parse_delivery("late=0.3,late_after=6"), window=64)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    sim = Simulator(settings, spec=spec, clock=SimClock(start, 3600), log_path=None, seed=3)
    link = DtuLink(sim, next(iter(sim.fleet.links.values())), "127.0.0.1", 1)
    hours = 6
    built: dict[bytes, tuple[str, datetime]] = {}
    all_built = asyncio.Event()
    build = link.build_upload

    def recording(meter: Any, at: datetime) -> Upload | None:
        upload = build(meter, at)
        if upload is not None:
            built[upload.data] = (meter.meter_id, at)
        if len(built) == hours * len(link.link.meters):
            all_built.set()
        return upload

    link.build_upload = recording  # type: ignore[method-assign]
    written: list[tuple[str, datetime]] = []

    class Writer:
        def write(self, data: bytes) -> None:
            if data in built:
                written.append(built[data])

        async def drain(self) -> None:
            return None

    for hour in range(hours):
        for meter in link.link.meters:
            link.queue.put_nowait((meter, start + timedelta(hours=hour)))
    sending = asyncio.create_task(link._send_loop(Writer()))  # type: ignore[arg-type]
    await asyncio.wait_for(all_built.wait(), 10)
    await asyncio.sleep(0.05)  # the last one sent (or held)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert sim.stats["frames_late"] > 0
    seen: dict[str, datetime] = {}
    overtaken = 0
    for meter_id, at in written:
        if meter_id in seen and at < seen[meter_id]:
            overtaken += 1
        seen[meter_id] = max(at, seen.get(meter_id, at))
    assert overtaken > 0, written
    held = [u for u, _ in link._late]
    assert len(written) + len(held) == len(built) == hours * len(link.link.meters)
    assert all(u.frame_id in link.pending for u in held)
