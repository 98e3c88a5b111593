"""Report templates turn decoded items into canonical readings and device events."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from decoders import TemplateError, apply_report, get_protocol, load_report
from decoders.reports import reports
from schemas import codec
from schemas.messages import Reading
from tests.decoders.conftest import CONSTRUCTED, VECTORS


def test_901f_gas_reply_gives_volume_readings_clock_and_status() -> None:
    frame = get_protocol("cjt188-2004").decode(CONSTRUCTED[0]["bytes"])
    report = apply_report(frame, timezone="Asia/Shanghai")
    assert report is not None
    assert report.report == "cjt188-water-gas"
    by_register = {r.register: r for r in report.readings}
    assert by_register["volume"].value == Decimal("12345.67")
    assert by_register["volume"].unit == "m3"
    assert by_register["volume_settlement"].value == Decimal("12000.00")
    assert report.meter_clock == datetime(2026, 5, 14, 0, 30, 15, tzinfo=UTC)
    assert by_register["volume"].status == ("valve_state:open", "battery_low")
    kinds = {(e.kind, e.attributes.get("alarm")) for e in report.events}
    assert ("alarm", "battery_low") in kinds
    assert ("alarm", "valve_abnormal") not in kinds


def test_litres_are_converted_to_cubic_metres() -> None:
    proto = get_protocol("cjt188-2004")
    frame = proto.decode(CONSTRUCTED[0]["bytes"])
    items = tuple(i if i.name != "current_volume" else
                  type(i)(name=i.name, value=Decimal("1234.50"), unit="L", id=i.id)
                  for i in frame.items)
    litres = proto.decode(proto.encode(type(frame)(**{**{f: getattr(frame, f) for f in
                                                         frame.__struct_fields__},
                                                      "items": items})))
    report = apply_report(litres)
    assert report is not None
    volume = next(r for r in report.readings if r.register == "volume")
    assert volume.value == Decimal("1.23450")
    assert volume.source_unit == "L"


def test_draft_becomes_a_reading_message_that_encodes() -> None:
    frame = get_protocol("cjt188-2004").decode(CONSTRUCTED[0]["bytes"])
    report = apply_report(frame)
    assert report is not None
    received = datetime(2026, 5, 14, 0, 31, tzinfo=UTC)
    reading = report.readings[0].to_reading(meter_id="GAS-1", received_at=received,
                                            device_id="DTU-1", protocol=frame.protocol)
    assert isinstance(reading, Reading)
    assert reading.ts == received
    assert reading.meter_clock == report.meter_clock
    _, decoded = codec.decode(codec.encode(reading, producer="test"), Reading)
    assert decoded == reading


def test_dlt645_block_total_is_energy_import() -> None:
    row = next(r for r in VECTORS if r["expect"].get("di") == "0001FF00")
    report = apply_report(get_protocol("dlt645-2007").decode(row["bytes"]))
    assert report is not None
    assert [(r.register, r.value, r.unit) for r in report.readings] == \
        [("energy_import", Decimal("1.29"), "kWh")]


def test_dlt645_error_reply_is_a_device_event_not_a_reading() -> None:
    frame = get_protocol("dlt645-2007").decode(
        bytes.fromhex("68 12 00 00 00 10 20 68 D1 01 35 19 16"))
    report = apply_report(frame)
    assert report is not None
    assert report.readings == ()
    assert report.events[0].kind == "device_error"


def test_every_shipped_report_names_canonical_registers() -> None:
    assert {r.name for r in reports()} >= {"cjt188-water-gas", "cjt188-heat",
                                           "dlt645-2007-meter", "dlt645-1997-meter"}


def test_unknown_register_is_a_template_error() -> None:
    text = """
format: unimeter-report-template/1
report: bad
protocol: cjt188-2004
title: bad
readings:
  - {item: current_volume, register: volumes}
"""
    with pytest.raises(TemplateError) as caught:
        load_report("bad.yaml", text=text)
    assert caught.value.path == "readings.0.register"
    assert "volumes" in caught.value.reason
