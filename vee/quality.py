"""The quality model: quality, method and event flags of a value, and their published codes.

Three separate things are kept per value, as MDM products and regulators do:

* **quality** — actual, validated, estimated, edited, missing, questionable, final, derived;
* **method** — how an estimated or edited value was made (linear, like-day, average daily,
  scaled to register, zero, agreed, manual, meter history …);
* **flags** — the validation rules that fired (their ids) and device/event flags (power
  fail, clock forward/back/invalid, tamper, reverse flow, rollover, valve closed, battery low,
  leak, overload).

For interchange they map to the Green Button ESPI ``QualityOfReading`` code and to the AEMO
NEM12 quality flag and method code (:func:`espi_quality`, :func:`nem12_codes`).

State files keep quality and method as small integers: the code tables below are append-only
(never reorder or reuse a code — stored state would be misread).
"""

from __future__ import annotations

from typing import get_args

from schemas.messages import Method, Quality

__all__ = [
    "EVENT_FLAGS",
    "METHOD_CODES",
    "METHOD_NAMES",
    "QUALITY_CODES",
    "QUALITY_NAMES",
    "espi_quality",
    "event_flags_from_status",
    "nem12_codes",
]

#: quality name -> stable state code (append-only).
QUALITY_CODES: dict[str, int] = {
    "actual": 0, "validated": 1, "estimated": 2, "edited": 3, "missing": 4,
    "questionable": 5, "final": 6, "derived": 7,
}
QUALITY_NAMES: tuple[str, ...] = tuple(QUALITY_CODES)

#: method name -> stable state code (append-only).
METHOD_CODES: dict[str, int] = {
    "none": 0, "linear": 1, "flat": 2, "like_day": 3, "average_like_day": 4, "profile": 5,
    "average_daily": 6, "scaled_to_register": 7, "check_meter": 8, "zero": 9, "agreed": 10,
    "manual": 11, "meter_history": 12,
}
METHOD_NAMES: tuple[str, ...] = tuple(METHOD_CODES)

assert set(QUALITY_CODES) == set(get_args(Quality)), "quality codes out of step with schemas"
assert set(METHOD_CODES) == set(get_args(Method)), "method codes out of step with schemas"

#: Event flags a value may carry besides the ids of the rules that fired.
EVENT_FLAGS: frozenset[str] = frozenset({
    "power_fail", "clock_forward", "clock_back", "clock_invalid", "clock_set", "tamper",
    "reverse_flow", "rollover", "valve_closed", "valve_fault", "battery_low", "leak",
    "overload", "device_error",
})

#: Device status tags (as ``decoders`` report templates write them) -> event flag.
_STATUS_TAGS: dict[str, str] = {
    "valve_state:closed": "valve_closed", "valve_closed": "valve_closed",
    "valve:closed": "valve_closed", "valve_state:abnormal": "valve_fault",
    "valve_fault": "valve_fault", "valve_state:fault": "valve_fault",
    "battery_low": "battery_low", "battery:low": "battery_low",
    "tamper": "tamper", "magnetic": "tamper", "magnetic_tamper": "tamper",
    "cover_open": "tamper", "reverse_flow": "reverse_flow", "reverse": "reverse_flow",
    "leak": "leak", "continuous_flow": "leak", "overload": "overload", "overflow": "overload",
    "over_flow": "overload", "power_fail": "power_fail", "power_failure": "power_fail",
    "power_down": "power_fail", "clock_set": "clock_set", "clock_forward": "clock_forward",
    "clock_back": "clock_back", "clock_backward": "clock_back",
    "clock_invalid": "clock_invalid", "clock_error": "clock_invalid",
    "device_error": "device_error", "crc_error": "device_error", "parity_error": "device_error",
}


def event_flags_from_status(status: tuple[str, ...]) -> tuple[str, ...]:
    """Event flags implied by a reading's status tags (``battery_low:no`` implies none)."""
    if not status:
        return ()
    out: list[str] = []
    for tag in status:
        flag = _STATUS_TAGS.get(tag.lower())
        if flag is not None and flag not in out:
            out.append(flag)
    return tuple(out)


# --------------------------------------------------------------------------- ESPI

#: ESPI QualityOfReading codes (Green Button): 0 valid, 7 manually edited, 8 estimated using
#: a reference day, 9 estimated using linear interpolation, 10 questionable, 11 derived,
#: 14 raw, 16 other, 17 validated, 19 revenue-quality.
_ESPI_BY_METHOD = {"like_day": 8, "average_like_day": 8, "profile": 8, "linear": 9}


def espi_quality(quality: str, method: str = "none") -> int:
    """The ESPI ``QualityOfReading`` of a value."""
    if quality == "actual":
        return 14
    if quality == "validated":
        return 17
    if quality == "estimated":
        return _ESPI_BY_METHOD.get(method, 16)
    if quality == "edited":
        return 7
    if quality == "questionable":
        return 10
    if quality == "derived":
        return 11
    if quality == "final":
        return 19
    return 16  # missing: ESPI has no code of its own


# --------------------------------------------------------------------------- NEM12

#: Substitution method codes of AEMO's metrology procedure: interval meters (type 1–6 data,
#: 11–19) and accumulation ("basic") meters (51–69).
_NEM12_INTERVAL = {"check_meter": 11, "scaled_to_register": 12, "average_daily": 12,
                   "flat": 12, "profile": 12, "like_day": 14, "average_like_day": 15,
                   "agreed": 16, "manual": 16, "linear": 17, "zero": 19,
                   "meter_history": 13}
_NEM12_BASIC = {"check_meter": 53, "meter_history": 52, "flat": 52, "linear": 54,
                "scaled_to_register": 54, "agreed": 55, "manual": 55, "profile": 57,
                "like_day": 51, "average_like_day": 51, "zero": 58, "average_daily": 65}


def nem12_codes(quality: str, method: str = "none", *, kind: str = "interval",
                forward: bool = False) -> tuple[str, int | None]:
    """NEM12 (quality flag, method code) of a value.

    Quality flags: A actual, S substituted, F final substituted, E forward estimate,
    N null (missing), V variable — used here for questionable data, which NEM12 would
    report with a reason code. ``forward`` marks a one-sided (provisional) estimate.
    ``kind='cumulative'`` picks the accumulation-meter method codes.
    """
    table = _NEM12_BASIC if kind == "cumulative" else _NEM12_INTERVAL
    if quality in ("actual", "validated", "derived"):
        return "A", None
    if quality == "missing":
        return "N", None
    if quality == "questionable":
        return "V", None
    code = table.get(method)
    if quality == "final":
        return "F", code
    if quality == "estimated" and forward:
        return "E", code
    return "S", code
