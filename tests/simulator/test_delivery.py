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
