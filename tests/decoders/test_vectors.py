"""Every golden frame decodes to the values its source states, and re-encodes to itself."""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from typing import Any

import pytest

from decoders import (
    ChecksumError,
    DataItem,
    DecodeError,
    Frame,
    apply_report,
    get_protocol,
    protocol_registry,
)
from tests.decoders.conftest import CONSTRUCTED, VECTORS

IMPLEMENTED = set(protocol_registry.names())


def _vectors(valid: bool | None = None) -> list[Any]:
    out = []
    for row in VECTORS:
        if valid is not None and row["frame_valid"] is not valid:
            continue
        marks = [] if row["protocol"] in IMPLEMENTED else \
            [pytest.mark.skip(reason=f"protocol {row['protocol']} not implemented yet")]
        out.append(pytest.param(row, id=row["id"], marks=marks))
    return out


def _hexnum(text: str) -> int:
    return int(text.split()[0], 16)


def check_modbus(frame: Frame, expect: dict[str, Any]) -> None:
    values = frame.values()
    for key, stated in expect.items():
        if key in ("slave", "unit_id"):
            assert frame.address == str(stated)
        elif key == "function":
            assert frame.control == stated
        elif key == "registers":
            assert values["registers"] == stated
        elif key == "byte_count":
            raw = values.get("registers", values.get("coils"))
            assert raw is not None
            assert len(raw) * (2 if "registers" in values else 1) == \
                (stated if "registers" in values else stated * 8)
        elif key == "start_address":
            assert values["start_address"] == int(stated.split()[0], 16)
        elif key == "quantity":
            assert values["quantity"] == stated
        elif key == "coil_bytes":
            bits = [bool(b >> i & 1) for b in bytes.fromhex(stated) for i in range(8)]
            assert values["coils"] == bits
        elif key == "coil_address":
            assert values["address"] == int(stated, 16)
        elif key == "value":
            assert values["value"] is stated.startswith("FF00")
        elif key == "transaction_id":
            assert frame.sequence == stated
        elif key == "float32_word_swapped":
            from decoders import CommandFrame

            proto = get_protocol("modbus-rtu:float-meter-demo")
            request = proto.decode(proto.encode(Frame(
                protocol="modbus-rtu", direction="request", function="read_input_registers",
                address=frame.address, control=4,
                items=(DataItem(name="start_address", value=0),
                       DataItem(name="quantity", value=8)))))
            command = CommandFrame(protocol="modbus-rtu", command="read_now",
                                   address=frame.address, data=b"", request=request)
            named = proto.apply_map(command, frame).values()  # type: ignore[attr-defined]
            # The source shows 7 significant digits; float32 carries about 7.2.
            for index, shown in enumerate(stated, 1):
                ours = named[f"value_{index}"]
                assert abs(ours - Decimal(str(shown))) <= abs(Decimal(str(shown))) * \
                    Decimal("1e-6")


_MBUS_FUNCTIONS = {"Instantaneous value": "instantaneous", "Maximum value": "maximum",
                   "Minimum value": "minimum", "Value during error state": "error_state"}
_MBUS_QUANTITIES = {"Volume": "volume", "Time point (date & time)": "time_point",
                    "Time point (date)": "time_point", "Fabrication No": "fabrication_no",
                    "Digital Output": "digital_output", "Error flags": "error_flags",
                    "Special supplier information": "special_supplier_information",
                    "On time": "on_time", "Volume flow": "volume_flow",
                    "Model / Version": "model_version",
                    "Parameter set identification": "parameter_set_identification",
                    "Firmware version": "firmware_version"}
_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def check_mbus(frame: Frame, expect: dict[str, Any]) -> None:
    """Compare with libmbus's normalised XML (its names, units and value forms)."""
    slave = expect["slave"]
    assert int(frame.identifier or "0") == int(slave["Id"])
    header = frame.header
    assert header["manufacturer"] == slave["Manufacturer"]
    assert header["version"] == int(slave["Version"])
    medium = slave["Medium"].split(" (")[0].lower().replace(" ", "_")
    assert header["medium"] == medium
    assert header["access_number"] == int(slave["AccessNumber"])
    assert header["status"] == int(slave["Status"], 16)
    assert header["signature"] == int(slave["Signature"], 16)
    records = [i for i in frame.items if i.name != "idle_filler"]
    assert len(records) == len(expect["records"])
    for ours, stated in zip(records, expect["records"], strict=True):
        if stated["Function"] == "Manufacturer specific":
            assert ours.name == "manufacturer_specific"
            assert ours.value == bytes.fromhex(stated["Value"])
            continue
        attrs = ours.attrs or {}
        assert attrs["function"] == _MBUS_FUNCTIONS[stated["Function"]]
        assert attrs["storage"] == int(stated["StorageNumber"])
        if "Tariff" in stated:
            assert attrs["tariff"] == int(stated["Tariff"])
            assert attrs["subunit"] == int(stated["Device"])
        assert ours.name == _MBUS_QUANTITIES[stated["Quantity"]]
        value = stated["Value"]
        if stated["Quantity"].startswith("Time point"):
            if attrs.get("kind") == "invalid_date":
                assert value == "2000-00-00"  # libmbus prints the zero date as is
            else:
                assert ours.value.isoformat().startswith(value.rstrip("Z").replace(
                    "T00:00:00", ""))
        elif isinstance(ours.value, str):
            assert ours.value == value
        elif ours.name == "on_time":
            assert Decimal(ours.value) * _SECONDS[ours.unit] == Decimal(value)
        else:
            assert Decimal(ours.value) == Decimal(value)
            assert ours.unit == stated["Unit"].replace("^", "").replace("-", "")


def check_qgdw(frame: Frame, expect: dict[str, Any]) -> None:
    header = frame.header
    for key, stated in expect.items():
        if key == "control":
            assert frame.control == _hexnum(stated)
        elif key == "direction":
            assert stated.startswith("up")
            assert frame.direction in ("reply", "report")
        elif key == "address":
            if "A1_area_code" in stated:
                assert header["a1"] == stated["A1_area_code"]
            if "A1_area_code_wire" in stated:
                assert header["a1"] == bytes.fromhex(stated["A1_area_code_wire"])[::-1].hex()
            if "A2_terminal" in stated:
                assert header["a2"] == int(stated["A2_terminal"], 16)
            if "A2_terminal_wire" in stated:
                assert header["a2"] == int.from_bytes(bytes.fromhex(
                    stated["A2_terminal_wire"]), "little")
            assert header["msa"] == 0
            assert header["group"] is False
        elif key == "afn":
            assert frame.identifier is not None
            assert frame.identifier.startswith(f"AFN{_hexnum(stated):02X}")
        elif key == "seq":
            number = _hexnum(stated)
            assert frame.sequence == number & 0x0F
            assert (header["fir"], header["fin"], header["con"]) == \
                (bool(number & 0x40), bool(number & 0x20), bool(number & 0x10))
        elif key == "da":
            assert ":p0:" in (frame.identifier or "")
        elif key == "dt":
            assert frame.identifier is not None
            assert frame.identifier.endswith(":F1")
            assert frame.function == "login"
        elif key == "user_data_len":
            assert len(get_protocol(frame.protocol).encode(frame)) == stated + 8
        elif key == "protocol_id":
            assert header.get("protocol_id", 2) == stated


def check_dlms(frame: Frame, expect: dict[str, Any]) -> None:
    header, values = frame.header, frame.values()
    for key, stated in expect.items():
        if key == "destination" or key == "source":
            for field, number in stated.items():
                if field == "bytes":
                    assert header[key] == stated["bytes"].replace(" ", "")
                elif field == "client_logical":
                    assert header[f"{key}_sap"] == number
                else:
                    assert header[f"{key}_{field}"] == number
        elif key == "control":
            assert frame.control == _hexnum(stated)
            if "SNRM" in stated:
                assert frame.function == "snrm"
                assert header["poll_final"]
            if "I-frame" in stated:
                assert header["frame_kind"] == "i"
            if "S=0 R=1" in stated:
                assert (header["ns"], header["nr"]) == (0, 1)
        elif key == "segmented":
            assert header["segmented"] is stated
        elif key == "length":
            data = get_protocol(frame.protocol).encode(frame)
            if frame.protocol == "dlms-hdlc":
                assert (data[1] << 8 | data[2]) & 0x7FF == stated
            else:
                assert len(data) - 8 == stated
        elif key == "llc":
            assert header["llc"] == stated.replace(" ", "")
        elif key == "apdu":
            if stated.startswith("AARE"):
                assert frame.function == "aare"
                assert values["result"] == "accepted"
                assert values["max_pdu_size"] == 0x04C8
            elif stated.startswith("GET-Response-Normal"):
                assert frame.function == "get_response_normal"
            elif stated == "GET-Request-Normal":
                assert frame.function == "get_request_normal"
        elif key == "apdu_tag":
            assert frame.function == "general_glo_ciphering"
        elif key == "data_type":
            assert frame.item("value").attrs == {"type": "double_long_unsigned"}  # type: ignore[union-attr]
        elif key == "value":
            assert values["value"] == stated
        elif key in ("invoke_id", "class_id", "attribute", "ciphered_length") and \
                not frame.function.startswith("get_response"):
            # (a GET response does not repeat the request's class, OBIS or attribute)
            assert values[key] == stated
        elif key == "invoke_id_and_priority":
            assert (values["invoke_id"], values["confirmed"], values["high_priority"]) == \
                (1, True, True)
        elif key in ("confirmed", "high_priority"):
            assert values[key] is stated
        elif key == "obis" and "obis" in values:
            assert values["obis"] == stated.split()[0]
        elif key == "access_selection":
            assert values["access_selection"] is None
        elif key in ("source_wport", "destination_wport"):
            assert header[key] == stated
        elif key == "system_title":
            assert values["system_title"] == stated.replace(" ", "")
        elif key == "security_control":
            assert values["security_control"] == _hexnum(stated)
        elif key == "invocation_counter":
            assert values["invocation_counter"] == int(stated, 16)


def check_stated(frame: Frame, expect: dict[str, Any]) -> None:
    """Compare what the source states with what we decoded, key by key."""
    if frame.protocol.startswith("dlms"):
        check_dlms(frame, expect)
        return
    if frame.protocol == "qgdw376.1":
        check_qgdw(frame, expect)
        return
    if frame.protocol.startswith("modbus"):
        check_modbus(frame, expect)
        return
    if frame.protocol == "mbus-en13757":
        check_mbus(frame, expect)
        return
    values = frame.values()
    for key, stated in expect.items():
        if key in ("address",):
            assert frame.address == stated
        elif key == "address_wire":
            raw = bytes.fromhex(stated)
            assert frame.address == raw[::-1].hex().upper()
        elif key == "meter_number":
            assert frame.address[-len(stated):] == stated
        elif key == "manufacturer_code":
            assert frame.address[:4] == stated
        elif key == "control":
            assert frame.control == _hexnum(stated)
        elif key == "di":
            assert frame.identifier == stated.split()[0]
        elif key == "di_wire":
            assert frame.identifier is not None
            wire = bytes.fromhex(stated)
            assert wire.hex().upper() == frame.identifier or \
                wire[::-1].hex().upper() == frame.identifier
        elif key == "ser":
            assert frame.sequence == (stated if isinstance(stated, int) else _hexnum(stated))
        elif key == "meter_type":
            code = _hexnum(stated)
            names = {0x10: "cold_water", 0x20: "heat"}
            assert frame.header["meter_type"] == names[code]
        elif key == "preamble_fe":
            assert frame.header.get("preamble", 4) == stated
        elif key == "value" and isinstance(stated, dict):
            assert [i.value for i in frame.items] == [stated["value"]]
            assert frame.items[0].unit == stated["unit"]
        elif key == "value":
            assert len(frame.items) == 1
            assert frame.items[0].value == Decimal(str(stated))
            assert frame.items[0].unit == expect["unit"]
        elif key == "values_kWh":
            item = frame.items[0]
            assert item.value == [Decimal(str(v)) for v in stated]
            assert item.unit == "kWh"
        elif key == "time":
            assert values["meter_time"] == time.fromisoformat(stated)
        elif key == "error_word":
            assert frame.abnormal
            bits = _hexnum(stated)
            assert values["error"] == tuple(
                name for bit, name in enumerate(
                    ["other_error", "no_requested_data", "unauthorized"]) if bits >> bit & 1)
        elif key == "valve_command":
            assert values["valve_action"] == "free_open"
        elif key == "operate":
            assert values["valve_action"] == "open"
        elif key == "length":
            pass  # checked by the envelope (size = L + fixed part)


@pytest.mark.parametrize("row", _vectors(valid=True))
def test_valid_vector_decodes_to_stated_values(row: dict[str, Any]) -> None:
    proto = get_protocol(row["protocol"])
    frame = proto.decode(row["bytes"])
    assert frame.protocol == row["protocol"]
    check_stated(frame, row["expect"])


@pytest.mark.parametrize("row", _vectors(valid=True))
def test_valid_vector_reencodes_to_the_same_bytes(row: dict[str, Any]) -> None:
    proto = get_protocol(row["protocol"])
    assert proto.encode(proto.decode(row["bytes"])) == row["bytes"]


@pytest.mark.parametrize("row", _vectors(valid=False))
def test_invalid_vector_is_rejected_with_the_reason(row: dict[str, Any]) -> None:
    proto = get_protocol(row["protocol"])
    with pytest.raises(DecodeError) as caught:
        proto.decode(row["bytes"])
    if not row["checksum_ok"]:
        assert isinstance(caught.value, ChecksumError)
        assert caught.value.field == "checksum"
        assert caught.value.offset == len(row["bytes"]) - 2
        assert "[C6]" in caught.value.excerpt


def test_the_dlt645_frame_whose_checksum_equals_the_end_byte_decodes_whole() -> None:
    row = next(r for r in VECTORS if r["bytes"].endswith(b"\x16\x16"))
    frame = get_protocol(row["protocol"]).decode(row["bytes"])
    assert frame.items[0].value == Decimal("4.999")


@pytest.mark.parametrize("row", [pytest.param(r, id=r["id"]) for r in CONSTRUCTED])
def test_constructed_frames(row: dict[str, Any]) -> None:
    proto = get_protocol(row["protocol"])
    frame = proto.decode(row["bytes"])
    assert proto.encode(frame) == row["bytes"]
    expect, values = row["expect"], frame.values()
    for key in ("current_volume", "settlement_volume", "current_heat", "flow_rate",
                "supply_temperature"):
        if key in expect:
            assert values[key] == Decimal(expect[key])
    for key in ("valve_state", "battery_low", "meter_type"):
        if key in expect:
            assert (frame.header.get(key) if key == "meter_type" else values[key]) == \
                expect[key]
    if "meter_time" in expect:
        assert values["meter_time"].isoformat() == expect["meter_time"]
    if "heat_energy_GJ" in expect:
        report = apply_report(frame)
        assert report is not None
        heat = next(r for r in report.readings if r.register == "heat_energy")
        assert heat.value == Decimal(expect["heat_energy_GJ"])
        assert heat.unit == "GJ"
        assert frame.item("current_heat").unit == expect["heat_unit"]  # type: ignore[union-attr]
    if expect.get("abnormal"):
        assert frame.abnormal
