"""JSON meters (``nbiot-json:<map>``): field mapping per device type, typed values, clear
errors with the JSON path, command documents and reply matching by message id."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from decoders import (
    CommandNotSupportedError,
    DecodeError,
    EncodeError,
    TemplateError,
    apply_report,
    get_protocol,
)
from decoders.json_meter import JsonMeter, load_json_map

IMEI = "868000000000042"
PROTO = get_protocol("nbiot-json:nbiot-gas")


def _doc(**data: object) -> bytes:
    return json.dumps({"imei": IMEI, "msgType": "report", "msgId": 11,
                       "meterTime": "20261127083000", "data": data}).encode()


def test_fields_are_mapped_typed_and_scaled() -> None:
    frame = PROTO.decode(_doc(totalVolume=1234567, valve=1, batteryVoltage=3.61,
                              batteryLow="false", balance="-3.50"))
    values = frame.values()
    assert (frame.direction, frame.address, frame.sequence) == ("report", IMEI, 11)
    assert values["current_volume"] == Decimal("1234.567")  # litres -> m3 by the map
    assert values["battery_voltage"] == Decimal("3.61")  # the float's text, not its binary
    assert values["valve_state"] == "closed"
    assert values["battery_low"] is False
    assert values["balance"] == Decimal("-3.50")
    assert values["meter_time"] == datetime(2026, 11, 27, 8, 30)
    report = apply_report(frame)
    assert report is not None
    registers = {r.register: r for r in report.readings}
    assert registers["volume"].meter_clock is not None
    assert registers["volume"].meter_clock.astimezone(UTC) == datetime(2026, 11, 27, 0, 30,
                                                                       tzinfo=UTC)
    assert registers["remaining_money"].kind == "state"
    assert "valve_state:closed" in registers["volume"].status


def test_absent_fields_give_no_value_never_zero() -> None:
    frame = PROTO.decode(_doc(valve=0))
    assert "current_volume" not in frame.values()
    report = apply_report(frame)
    assert report is not None
    assert not report.readings


@pytest.mark.parametrize(("payload", "field"), [
    (b"\x68\x01\x02", "json"),
    (b"[1, 2]", "json"),
    (json.dumps({"msgType": "report"}).encode(), "imei"),
    (_doc(totalVolume="lots"), "data.totalVolume"),
    (_doc(valve=9), "data.valve"),
    (_doc(totalVolume=True), "data.totalVolume"),
    (_doc(reportInterval=1.5), "data.reportInterval"),
])
def test_bad_documents_say_which_path(payload: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        PROTO.decode(payload)
    assert caught.value.field == field


def test_commands_are_documents_and_replies_match_by_message_id() -> None:
    cmd = PROTO.encode_command("sync_time", IMEI,
                               {"time": datetime(2026, 11, 27, 0, 0, 5, tzinfo=UTC)},
                               sequence=21)
    assert json.loads(cmd.data) == {"cmd": "setTime", "msgId": 21, "imei": IMEI,
                                    "time": "20261127080005"}  # the meter's local time
    ok = PROTO.decode(json.dumps({"imei": IMEI, "msgType": "cmdResp", "msgId": 21,
                                  "result": 0}).encode())
    other = PROTO.decode(json.dumps({"imei": IMEI, "msgType": "cmdResp", "msgId": 22,
                                     "result": 0}).encode())
    someone_else = PROTO.decode(json.dumps({"imei": "1", "msgType": "cmdResp", "msgId": 21,
                                            "result": 0}).encode())
    upload = PROTO.decode(_doc(totalVolume=1))
    assert PROTO.matches(cmd, ok)
    assert not PROTO.matches(cmd, other)
    assert not PROTO.matches(cmd, someone_else)
    assert not PROTO.matches(cmd, upload)
    assert PROTO.interpret(cmd, ok).status == "ok"
    refused = PROTO.decode(json.dumps({"imei": IMEI, "msgType": "cmdResp", "msgId": 21,
                                       "result": "E_BUSY"}).encode())
    outcome = PROTO.interpret(cmd, refused)
    assert (outcome.status, outcome.error_code) == ("device_error", "result_E_BUSY")
    with pytest.raises(EncodeError, match="'minutes'"):
        PROTO.encode_command("set_report_interval", IMEI, {}, sequence=1)
    with pytest.raises(CommandNotSupportedError):
        PROTO.encode_command("relay_trip", IMEI, {}, sequence=1)


def test_the_protocol_needs_a_map_and_maps_are_validated() -> None:
    bare = get_protocol("nbiot-json")
    with pytest.raises(CommandNotSupportedError, match="JSON map"):
        bare.decode(_doc())
    with pytest.raises(CommandNotSupportedError, match="no JSON map"):
        get_protocol("nbiot-json:no-such-map")
    text = ("format: unimeter-json-map/1\nmap: broken\ntitle: t\naddress: id\n"
            "fields:\n  volume: {path: v, type: decimal, scale: lots}\n")
    with pytest.raises(TemplateError) as caught:
        load_json_map("broken.yaml", text=text)
    assert "fields.volume.scale" in str(caught.value)
    typo = "format: unimeter-json-map/1\nmap: t\ntitle: t\naddress: id\nfeilds: {}\n"
    with pytest.raises(TemplateError, match="feilds"):
        load_json_map("typo.yaml", text=typo)


def test_a_vendor_map_is_a_variant() -> None:
    text = ("format: unimeter-json-map/1\nmap: vendor-b\ntitle: vendor B water\n"
            "address: dev.id\nclock: {path: t, format: epoch_ms}\n"
            "fields:\n  current_volume: {path: v.total, unit: L}\n")
    vendor = JsonMeter(maps={"vendor-b": load_json_map("b.yaml", text=text)}) \
        .with_variant("vendor-b")
    frame = vendor.decode(json.dumps({"dev": {"id": "W-9"}, "t": 1764201600000,
                                      "v": {"total": 12300}}).encode())
    assert frame.address == "W-9"
    assert frame.values()["meter_time"] == datetime(2025, 11, 27, 0, 0, tzinfo=UTC)
    report = apply_report(frame)
    assert report is not None
    assert [(r.register, r.value) for r in report.readings] == [("volume", Decimal("12.3"))]


def test_a_pack_of_hourly_values_gives_one_reading_per_hour_at_its_own_time() -> None:
    frame = PROTO.decode(_doc(hourlyStart="20261127010000", valve=0,
                              hourly=[1000100, 1000250, None, 1000900]))
    series = [i for i in frame.items if i.attrs and "time" in i.attrs]
    assert [(i.id, i.value) for i in series] == [
        ("data.hourly.0", Decimal("1000.100")), ("data.hourly.1", Decimal("1000.250")),
        ("data.hourly.3", Decimal("1000.900"))]  # the null hour: no value, never a zero
    report = apply_report(frame)
    assert report is not None
    volume = [r for r in report.readings if r.register == "volume"]
    # 01:00, 02:00 and 04:00 Asia/Shanghai: 17:00, 18:00, 20:00 UTC the day before
    assert [(r.ts, r.value) for r in volume] == [
        (datetime(2026, 11, 26, 17, tzinfo=UTC), Decimal("1000.100")),
        (datetime(2026, 11, 26, 18, tzinfo=UTC), Decimal("1000.250")),
        (datetime(2026, 11, 26, 20, tzinfo=UTC), Decimal("1000.900"))]
    # the upload's clock stays the meter clock (what clock-drift checks look at)
    assert {r.meter_clock for r in volume} == {datetime(2026, 11, 27, 0, 30, tzinfo=UTC)}
    assert all("valve_state:open" in r.status for r in volume)


@pytest.mark.parametrize(("payload", "field"), [
    (_doc(hourlyStart="20261127010000", hourly=[1, "lots", 3]), "data.hourly.1"),
    (_doc(hourlyStart="20261127010000", hourly={"0": 1}), "data.hourly"),
    (_doc(hourly=[1, 2]), "data.hourlyStart"),
    (_doc(hourlyStart="yesterday", hourly=[1]), "data.hourlyStart"),
])
def test_a_malformed_pack_says_which_path(payload: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        PROTO.decode(payload)
    assert caught.value.field == field


@pytest.mark.parametrize(("series", "path", "reason"), [
    ("{path: h, field: volume_typo, start: {path: s}, interval_min: 60}", "series.0.field",
     "no field 'volume_typo'"),
    ("{path: h, field: valve, start: {path: s}, interval_min: 60}", "series.0.field",
     "decimal or int"),
    ("{path: h, field: volume, start: {path: s}, interval_min: 0}", "series.0.interval_min",
     "greater than 0"),
    ("{path: h, field: volume, start: {path: s}, interval_min: 60, every: 60}", "series.0",
     "every"),
])
def test_series_are_validated_at_load(series: str, path: str, reason: str) -> None:
    text = ("format: unimeter-json-map/1\nmap: packs\ntitle: t\naddress: id\n"
            "fields:\n  volume: {path: v}\n  valve: {path: x, type: enum, values: {'0': open}}\n"
            f"series:\n  - {series}\n")
    with pytest.raises(TemplateError) as caught:
        load_json_map("packs.yaml", text=text)
    assert path in str(caught.value)
    assert reason in str(caught.value)
