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
