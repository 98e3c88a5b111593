"""The three parsers of a layout (fast, compiled construct, interpreted construct) agree."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders import DataItem, FieldValueError, Frame, get_protocol
from decoders.template.elements import BcdElement, DateTimeElement, ElementError
from decoders.template.protocol import TemplateProtocol
from tests.decoders.conftest import CONSTRUCTED, VECTORS

ROWS = [pytest.param(r, id=r["id"]) for r in VECTORS + CONSTRUCTED
        if r["protocol"] in ("cjt188-2004", "dlt645-2007", "dlt645-1997")
        and r.get("frame_valid", True)]


_ENGINES: dict[str, list[TemplateProtocol]] = {}


def engines(name: str) -> list[TemplateProtocol]:
    if name not in _ENGINES:
        proto = get_protocol(name)
        assert isinstance(proto, TemplateProtocol)
        _ENGINES[name] = [proto.with_engine(e) for e in ("fast", "compiled", "interpreted")]
    return _ENGINES[name]


@pytest.mark.parametrize("row", ROWS)
def test_engines_agree_on_golden_frames(row: dict[str, Any]) -> None:
    fast, compiled, interpreted = engines(row["protocol"])
    frame = fast.decode(row["bytes"])
    assert compiled.decode(row["bytes"]) == frame
    assert interpreted.decode(row["bytes"]) == frame


volumes = st.decimals(min_value=0, max_value=Decimal("999999.99"), places=2,
                      allow_nan=False, allow_infinity=False)
clocks = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))


@given(current=volumes, settlement=volumes, clock=clocks, status=st.integers(0, 0xFFFF),
       sequence=st.integers(0, 255), address=st.from_regex(r"\A[0-9]{14}\Z"),
       unit=st.sampled_from(["m3", "L", "GJ", "kWh"]))
def test_901f_replies_round_trip_through_every_engine(
        current: Decimal, settlement: Decimal, clock: datetime, status: int, sequence: int,
        address: str, unit: str) -> None:
    frame = Frame(protocol="cjt188-2004", direction="reply", function="read_data",
                  address=address, identifier="901F", sequence=sequence,
                  header={"meter_type": "gas"},
                  items=(DataItem(name="current_volume", value=current, unit=unit),
                         DataItem(name="settlement_volume", value=settlement, unit=unit),
                         DataItem(name="meter_time", value=clock.replace(microsecond=0)),
                         DataItem(name="status", value=status)))
    fast, compiled, interpreted = engines("cjt188-2004")
    data = fast.encode(frame)
    decoded = fast.decode(data)
    assert compiled.decode(data) == decoded == interpreted.decode(data)
    assert fast.encode(decoded) == data
    values = decoded.values()
    assert values["current_volume"] == current
    assert values["settlement_volume"] == settlement
    assert values["meter_time"] == clock.replace(microsecond=0)
    assert values["status"] == status
    assert decoded.sequence == sequence
    assert decoded.address == address


@pytest.mark.parametrize("engine", ["fast", "compiled", "interpreted"])
def test_bad_bcd_is_located_by_every_engine(engine: str) -> None:
    row = CONSTRUCTED[0]
    data = bytearray(row["bytes"])
    position = data.index(bytes.fromhex("67 45 23 01")) + 2  # a byte of current_volume
    data[position] = 0x2A  # nibble A is not BCD
    data[-2] = sum(data[4:-2]) & 0xFF
    proto = get_protocol("cjt188-2004")
    assert isinstance(proto, TemplateProtocol)
    with pytest.raises(FieldValueError) as caught:
        proto.with_engine(engine).decode(bytes(data))  # type: ignore[arg-type]
    assert caught.value.field == "items.901F.current_volume"
    assert caught.value.offset == position
    assert "not BCD" in caught.value.reason


@given(st.integers(0, 10**8 - 1), st.integers(0, 4), st.booleans())
def test_bcd_round_trip(number: int, decimals: int, negative: bool) -> None:
    element = BcdElement("x", 4, little=True, decimals=decimals, signed=True)
    value = Decimal(number).scaleb(-decimals)
    if negative:
        value = -value
    if number >= 8 * 10**7:  # regression: the sign bit needs the top bit free
        with pytest.raises(ElementError):
            element.encode(value)
        return
    assert element.decode(element.encode(value)) == value


def test_absent_value_is_none_not_zero() -> None:
    element = BcdElement("x", 4, little=True, decimals=2, absent=0xFF)
    assert element.decode(b"\xff\xff\xff\xff") is None
    assert element.encode(None) == b"\xff\xff\xff\xff"


def test_impossible_date_is_a_field_error() -> None:
    clock = DateTimeElement("t", 7, parts=("second", "minute", "hour", "day", "month",
                                           "year_lo", "year_hi"))
    with pytest.raises(ElementError):
        clock.decode(bytes.fromhex("00 00 00 31 02 26 20"))  # 31 February


@pytest.mark.parametrize("row", ROWS)
def test_the_generated_fast_path_takes_every_golden_frame(row: dict[str, Any]) -> None:
    """The fast path declines nothing valid we know (else it is only a slower detour)."""
    fast = engines(row["protocol"])[0]
    frame = fast._decode_fast(row["bytes"])
    assert frame is not None
    assert frame == fast._decode_general(row["bytes"])
