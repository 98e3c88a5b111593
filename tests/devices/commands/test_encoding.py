"""Unified commands to the real protocol encoders of ``decoders``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import decoders
from devices.commands.encoding import encode_for_device, handler_commands
from devices.commands.errors import InvalidParametersError, UnsupportedCommandError

GAS = "00000000000001"
ELEC = "000000000001"
TIERS = [{"upper": "350", "price": "2.61"}, {"upper": "500", "price": "2.83"},
         {"upper": None, "price": "4.23"}]


def test_handlers_carry_what_their_encoder_offers() -> None:
    cjt = handler_commands("cjt188-2004")
    assert cjt is not None
    assert {"valve_close", "valve_arm_open", "valve_open", "top_up", "set_price"} <= cjt
    assert "relay_trip" not in cjt
    assert "set_balance" not in cjt  # CJ/T 188 has no balance write
    dlt = handler_commands("dlt645-2007")
    assert dlt is not None
    assert {"relay_trip", "relay_close"} <= dlt
    assert "valve_close" not in dlt
    assert handler_commands("no-such-protocol") is None


def test_step_prices_become_cjt188_prices_and_limits_and_encode() -> None:
    encoded = encode_for_device("cjt188-2004", "set_price",
                                {"tariff_id": "BJ", "tariff_version": 1, "tiers": TIERS},
                                address=GAS, medium="gas")
    assert encoded.command == "set_price"
    assert encoded.params == {"meter_type": "gas", "prices": ["2.61", "2.83", "4.23"],
                              "step_limits": ["350", "500"]}
    # The preview is exactly what the encoder sends, and decodes back to the same prices.
    frame = decoders.get_protocol("cjt188-2004").decode(bytes.fromhex(encoded.preview_hex))
    values = {i.name: i.value for i in frame.items}
    assert str(values["price_1"]) == "2.61"
    assert str(values["price_3"]) == "4.23"


def test_what_a_protocol_cannot_carry_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidParametersError, match="3 price tiers"):
        encode_for_device("cjt188-2004", "set_price",
                          {"tariff_id": "X", "tariff_version": 1,
                           "tiers": [*TIERS[:2], {"upper": "600", "price": "4"},
                                     {"upper": None, "price": "5"}]},
                          address=GAS, medium="gas")
    with pytest.raises(InvalidParametersError, match="one tariff price"):
        encode_for_device("dlt645-2007", "set_price",
                          {"tariff_id": "X", "tariff_version": 1, "tiers": TIERS},
                          address=ELEC)
    with pytest.raises(UnsupportedCommandError, match="cannot carry"):
        encode_for_device("dlt645-2007", "valve_close", {}, address=ELEC)
    with pytest.raises(UnsupportedCommandError, match="known"):
        encode_for_device("gb376", "read_now", {}, address=ELEC)
    with pytest.raises(InvalidParametersError, match="address"):
        encode_for_device("dlt645-2007", "read_now", {}, address=GAS)


def test_valve_open_travels_as_the_open_code_and_relay_passwords_come_from_options() -> None:
    opened = encode_for_device("cjt188-2004", "valve_open", {}, address=GAS, medium="gas")
    assert opened.command == "valve_arm_open"
    assert opened.preview_hex.split()[-3] == "55"  # A017 55: open
    vendor = encode_for_device("cjt188-2004:free-valve", "valve_close", {"cause": "debt"},
                               address=GAS, medium="gas")
    assert vendor.preview_hex.split()[-3] == "77"
    trip = encode_for_device("dlt645-2007", "relay_trip", {"cause": "debt"}, address=ELEC,
                             options={"password_level": "2", "password": "123456",
                                      "operator": "00001234"})
    assert trip.params == {"password_level": "2", "password": "123456",
                           "operator": "00001234"}


def test_history_and_balance_reads() -> None:
    now = datetime(2024, 6, 15, tzinfo=UTC)
    history = encode_for_device("cjt188-2004", "read_history",
                                {"start": "2024-03-01T00:00:00+08:00",
                                 "end": "2024-04-01T00:00:00+08:00"},
                                address=GAS, medium="water", now=now)
    assert history.params == {"meter_type": "cold_water", "months_ago": 3}
    balance = encode_for_device("dlt645-2007", "read_now", {"what": "balance"}, address=ELEC)
    assert balance.params == {"identifier": "00900200"}


def test_handler_names_resolve_to_registered_encoders() -> None:
    from devices.commands.encoding import protocol_of, resolve_handler

    # The ledger may name a handler by family and a vendor variant the encoder lacks.
    name = resolve_handler("cjt188:goldcard", "cjt188", "cjt188-2004:goldcard", "cjt188-2004")
    assert name is not None
    assert name != "cjt188:goldcard"
    protocol = protocol_of(name)
    assert protocol is not None
    assert protocol.name == "cjt188-2004"
    free = resolve_handler("cjt188:free-valve")
    assert free is not None
    assert protocol_of(free) is not None
    assert resolve_handler("dlt645:no-such-variant", "dlt645") == "dlt645"  # decoders alias
    assert resolve_handler("gb376", None) is None


IMEI = "868000000000042"


def test_balance_and_report_interval_travel_where_the_protocol_carries_them() -> None:
    json_gas = handler_commands("nbiot-json:nbiot-gas")
    assert json_gas is not None
    assert {"set_balance", "set_report_interval", "valve_close", "top_up"} <= json_gas
    balance = encode_for_device("nbiot-json:nbiot-gas", "set_balance",
                                {"balance": "50.00", "reason": "meter replaced"},
                                address=IMEI, sequence=4)
    assert balance.params == {"balance": "50.00"}
    assert bytes.fromhex(balance.preview_hex).decode() == (
        '{"cmd":"setBalance","msgId":0,"imei":"868000000000042","balance":"50.00"}')
    interval = encode_for_device("nbiot-json:nbiot-gas", "set_report_interval",
                                 {"minutes": 240}, address=IMEI)
    assert '"minutes":240' in bytes.fromhex(interval.preview_hex).decode()
    # a Modbus flow computer counts its report interval in seconds (register 0x0020)
    modbus = encode_for_device("modbus-tcp:flow-computer", "set_report_interval",
                               {"minutes": 15}, address="5")
    frame = decoders.get_protocol("modbus-tcp").decode(bytes.fromhex(modbus.preview_hex))
    assert frame.values()["value"] == 900
    top_up = encode_for_device("nbiot-json:nbiot-gas", "top_up",
                               {"amount": "100.00", "topup_id": "T-77"}, address=IMEI)
    assert '"orderId":"T-77"' in bytes.fromhex(top_up.preview_hex).decode()


def test_balance_and_report_interval_are_refused_where_the_protocol_has_no_frame() -> None:
    for handler, address in (("cjt188-2004", GAS), ("dlt645-2007", ELEC)):
        for command, params in (("set_balance", {"balance": "10.00"}),
                                ("set_report_interval", {"minutes": 60})):
            with pytest.raises(UnsupportedCommandError, match=f"cannot carry '{command}'"):
                encode_for_device(handler, command, params, address=address, medium="gas")
