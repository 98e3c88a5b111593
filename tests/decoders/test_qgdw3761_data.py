"""Q/GDW 376.1 class 1/2 data (AFN 0C/0D): energy units per measuring point, decoded from
constructed golden frames, whole, re-encoded exactly, and built by the encoder."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from decoders import DecodeError, EncodeError, apply_report, get_protocol
from decoders.qgdw3761_data import (
    ENERGY_FUNCTIONS,
    data_time,
    encode_energy_unit,
    point_frames,
)

GOLDEN = [json.loads(line) for line in
          (Path(__file__).parents[1] / "data" / "frames" / "qgdw3761_class_data.jsonl")
          .read_text().splitlines() if line.strip()]
PROTO = get_protocol("qgdw376.1")


def _units(frame: Any) -> list[Any]:
    return [i for i in frame.items if i.attrs and "pn" in i.attrs]


@pytest.mark.parametrize("row", GOLDEN, ids=[r["expect"]["identifier"] for r in GOLDEN])
def test_golden_frames(row: dict[str, Any]) -> None:
    data = bytes.fromhex(row["hex"])
    frame = PROTO.decode(data)
    expect = row["expect"]
    assert (frame.direction, frame.address, frame.identifier) == (
        expect["direction"], expect["address"], expect["identifier"])
    if "con" in expect:
        assert frame.header["con"] is expect["con"]
    units = _units(frame)
    assert len(units) == len(expect["units"])
    for item, want in zip(units, expect["units"], strict=True):
        assert (item.id, item.name, item.unit) == (want["id"], want["item"], "kWh")
        assert item.value == [None if v is None else Decimal(v) for v in want["values"]]
        assert item.attrs["read_at"] == datetime.fromisoformat(want["read_at"])
        assert item.attrs["data_time"] == datetime.fromisoformat(want["data_time"])
        if "frozen" in want:
            assert item.attrs["frozen"] == want["frozen"]
            assert item.attrs["frozen_label"] == date.fromisoformat(want["frozen_label"])
    assert PROTO.encode(frame) == data  # the raw units are kept: exact re-encoding


@pytest.mark.parametrize("row", GOLDEN, ids=[r["expect"]["identifier"] for r in GOLDEN])
def test_golden_frames_through_the_framer(row: dict[str, Any]) -> None:
    data = bytes.fromhex(row["hex"])
    framer = PROTO.framer()
    framer.feed(b"\x00\x16garbage")
    for byte in data:
        framer.feed(bytes([byte]))
    framer.feed(b"\x68\x01")
    frame = framer.next_frame()
    while not isinstance(frame, bytes | bytearray):
        frame = framer.next_frame()
    assert bytes(frame) == data


def test_encoder_and_decoder_agree_on_many_points_and_registers() -> None:
    read_at = datetime(2026, 11, 27, 8, 30)
    units = [
        encode_energy_unit(0x0C, 33, 12, read_at=read_at, values=[
            [Decimal("10.0001"), Decimal("4.0000"), Decimal("6.0001")],
            [Decimal("1.50"), Decimal("1.00"), Decimal("0.50")],
            [None, None, None], [Decimal(0), Decimal(0), Decimal(0)]]),
        encode_energy_unit(0x0C, 131, 64, read_at=read_at, values=[[Decimal("999999.9999")]]),
    ]
    frame = PROTO.decode(PROTO.data_frame("42010007", 0x0C, units))
    got = {(i.id, i.name): i.value for i in _units(frame)}
    assert got[("p12:F33", "forward_active_energy")][2] == Decimal("6.0001")
    assert got[("p12:F33", "forward_reactive_energy")] == [Decimal("1.50"), Decimal("1.00"),
                                                           Decimal("0.50")]
    assert got[("p12:F33", "q1_reactive_energy")] == [None, None, None]
    assert got[("p64:F131", "reverse_active_energy")] == [Decimal("999999.9999")]


def test_monthly_frozen_values_hold_at_the_end_of_their_month() -> None:
    unit = encode_energy_unit(0x0D, 177, 3, read_at=datetime(2027, 1, 1, 0, 12),
                              values=[[Decimal("42.0000")]], label=date(2026, 12, 1))
    [(pn, sub)] = point_frames(PROTO.decode(PROTO.data_frame("42010007", 0x0D, [unit])))
    assert pn == 3
    report = apply_report(sub, timezone="Asia/Shanghai")
    assert report is not None
    [reading] = report.readings
    assert (reading.register, reading.value) == ("energy_import", Decimal("42.0000"))
    assert reading.meter_clock is not None
    assert reading.meter_clock.replace(tzinfo=None) == datetime(2027, 1, 1)
    assert reading.status == ("frozen:month",)
    assert data_time(None, "day", date(2026, 2, 28)) == datetime(2026, 3, 1)


def test_current_values_hold_when_the_concentrator_read_them() -> None:
    row = GOLDEN[0]
    [(pn, sub)] = point_frames(PROTO.decode(bytes.fromhex(row["hex"])))
    report = apply_report(sub, timezone="Asia/Shanghai")
    assert report is not None
    assert pn == 1
    [reading] = report.readings  # the total only; rates are not canonical registers
    assert reading.value == Decimal("1234.5678")
    assert reading.meter_clock is not None
    assert reading.meter_clock.isoformat() == "2026-11-27T09:15:00+08:00"
    assert reading.status == ()


def test_a_function_not_described_is_kept_undecoded_with_the_reason() -> None:
    known = encode_energy_unit(0x0C, 129, 1, read_at=None, values=[[Decimal(1)]])
    unknown = bytes.fromhex("01 01 01 03") + bytes(7)  # F25 (power): not described
    frame = PROTO.decode(PROTO.data_frame("42010007", 0x0C, [known, unknown]))
    [unit] = _units(frame)
    assert unit.value == [Decimal("1.0000")]
    assert "read_at" not in unit.attrs
    [rest] = [i for i in frame.items if i.name == "undecoded_units"]
    assert "F25" in rest.attrs["reason"]
    assert bytes(rest.value).startswith(unknown[:4])


def test_malformed_units_say_where() -> None:
    unit = encode_energy_unit(0x0C, 129, 1, read_at=datetime(2026, 1, 1), values=[[
        Decimal(1)]])
    bad_bcd = unit[:10] + b"\x0a" + unit[11:]
    with pytest.raises(DecodeError) as caught:
        PROTO.decode(PROTO.data_frame("42010007", 0x0C, [bad_bcd]))
    assert caught.value.field == "p1:F129.forward_active_energy[0]"
    with pytest.raises(DecodeError) as truncated:
        PROTO.decode(PROTO.data_frame("42010007", 0x0C, [unit[:-2]]))
    assert "forward_active_energy" in str(truncated.value.field)
    bad_time = unit[:4] + bytes.fromhex("61 09 27 11 26") + unit[9:]
    with pytest.raises(DecodeError, match=r"A\.15"):
        PROTO.decode(PROTO.data_frame("42010007", 0x0C, [bad_time]))


def test_requests_for_frozen_data_name_their_day() -> None:
    request = PROTO.decode(PROTO.request_data("42010007", 0x0D, [(5, 161)],
                                              label=date(2026, 11, 26), sequence=3))
    assert (request.direction, request.identifier) == ("request", "AFN0D:p5:F161")
    assert bytes(request.item("data").value) == bytes.fromhex("26 11 26")
    assert not _units(request)  # a request carries no values
    with pytest.raises(EncodeError, match="frozen day"):
        PROTO.request_data("42010007", 0x0D, [(5, 161)])


def test_every_energy_function_round_trips() -> None:
    for (afn, fn), spec in ENERGY_FUNCTIONS.items():
        values = [[Decimal("12.3400"), None] for _ in spec.registers]
        label = date(2026, 5, 1) if spec.frozen else None
        unit = encode_energy_unit(afn, fn, 7, read_at=datetime(2026, 5, 2, 0, 1),
                                  values=values, label=label)
        frame = PROTO.decode(PROTO.data_frame("42010007", afn, [unit]))
        items = _units(frame)
        assert [i.name for i in items] == [name for name, _ in spec.registers]
        assert all(i.value[1] is None for i in items)
        assert all(i.value[0] in (Decimal("12.3400"), Decimal("12.34")) for i in items)
