"""The quality model and its ESPI / NEM12 codes."""

from __future__ import annotations

import pytest

from vee.quality import (
    METHOD_CODES,
    QUALITY_CODES,
    espi_quality,
    event_flags_from_status,
    nem12_codes,
)


@pytest.mark.parametrize(("quality", "method", "code"), [
    ("actual", "none", 14), ("validated", "none", 17), ("edited", "manual", 7),
    ("estimated", "like_day", 8), ("estimated", "linear", 9), ("questionable", "none", 10),
    ("derived", "none", 11), ("estimated", "zero", 16), ("final", "agreed", 19),
])
def test_espi_quality_of_reading(quality: str, method: str, code: int) -> None:
    assert espi_quality(quality, method) == code


@pytest.mark.parametrize(("quality", "method", "kind", "forward", "codes"), [
    ("validated", "none", "interval", False, ("A", None)),
    ("estimated", "like_day", "interval", False, ("S", 14)),
    ("estimated", "average_like_day", "interval", False, ("S", 15)),
    ("estimated", "linear", "interval", False, ("S", 17)),
    ("estimated", "zero", "interval", False, ("S", 19)),
    ("final", "agreed", "interval", False, ("F", 16)),
    ("estimated", "average_daily", "cumulative", True, ("E", 65)),
    ("estimated", "linear", "cumulative", False, ("S", 54)),
    ("missing", "none", "interval", False, ("N", None)),
    ("questionable", "none", "interval", False, ("V", None)),
])
def test_nem12_quality_and_method(quality: str, method: str, kind: str, forward: bool,
                                  codes: tuple[str, int | None]) -> None:
    assert nem12_codes(quality, method, kind=kind, forward=forward) == codes


def test_state_codes_are_stable() -> None:
    # stored state depends on these numbers: they may grow, never change
    assert QUALITY_CODES["estimated"] == 2
    assert QUALITY_CODES["final"] == 6
    assert METHOD_CODES["linear"] == 1
    assert METHOD_CODES["meter_history"] == 12


def test_status_tags_to_event_flags() -> None:
    assert event_flags_from_status(("valve_state:closed", "battery_low", "battery_low:no",
                                    "magnetic", "unknown_tag")) == (
        "valve_closed", "battery_low", "tamper")
    assert event_flags_from_status(()) == ()
