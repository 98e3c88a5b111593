"""Unified commands: encoded per protocol, matched to their replies, interpreted."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from decoders import (
    CommandNotSupportedError,
    DataItem,
    EncodeError,
    Frame,
    get_protocol,
)

GAS = {"meter_type": "gas"}
ADDRESS = "78330011223344"


def reply_to(request: Frame, *, items: tuple[DataItem, ...] = (), abnormal: bool = False,
             **changes: object) -> Frame:
    fields = {"protocol": request.protocol, "direction": "reply",
              "function": request.function, "address": request.address,
              "identifier": request.identifier, "sequence": request.sequence,
              "header": {k: v for k, v in request.header.items() if k != "preamble"},
              "abnormal": abnormal, "items": items}
    fields.update(changes)
    return Frame(**fields)  # type: ignore[arg-type]


def test_cjt188_valve_close_is_a_standard_a017_write() -> None:
    proto = get_protocol("cjt188-2004")
    cmd = proto.encode_command("valve_close", ADDRESS, GAS, sequence=5)
    assert cmd.data.startswith(b"\xfe" * 4 + b"\x68\x30")
    assert cmd.request.function == "write_data"
    assert cmd.request.identifier == "A017"
    assert cmd.request.values()["valve_action"] == "close"
    assert cmd.request.sequence == 5
    assert proto.decode(cmd.data) == cmd.request


def test_cjt188_vendor_variant_changes_the_valve_codes() -> None:
    proto = get_protocol("cjt188-2004:free-valve")
    cmd = proto.encode_command("valve_close", ADDRESS, GAS)
    assert cmd.request.values()["valve_action"] == "free_close"
    assert proto.variant == "free-valve"


def test_cjt188_reply_matching_uses_address_identifier_and_sequence() -> None:
    proto = get_protocol("cjt188-2004")
    cmd = proto.encode_command("valve_arm_open", ADDRESS, GAS, sequence=9)
    ok = reply_to(cmd.request, items=(DataItem(name="status", value=0),))
    ok_bytes = proto.encode(ok)
    decoded = proto.decode(ok_bytes)
    assert proto.matches(cmd, decoded)
    outcome = proto.interpret(cmd, decoded)
    assert outcome.status == "ok"
    assert outcome.data["valve_state"] == "open"
    assert not proto.matches(cmd, reply_to(cmd.request, sequence=10))
    assert not proto.matches(cmd, reply_to(cmd.request, address="78330011223345"))
    assert not proto.matches(cmd, reply_to(cmd.request, identifier="A018"))
    assert not proto.matches(cmd, cmd.request)  # our own request echoed is not a reply


def test_cjt188_abnormal_reply_is_a_device_error() -> None:
    proto = get_protocol("cjt188-2004")
    cmd = proto.encode_command("valve_close", ADDRESS, GAS, sequence=1)
    abnormal = reply_to(cmd.request, abnormal=True, identifier=None,
                        items=(DataItem(name="status", value=3),))
    decoded = proto.decode(proto.encode(abnormal))
    assert decoded.abnormal
    assert decoded.identifier is None
    assert proto.matches(cmd, decoded)
    outcome = proto.interpret(cmd, decoded)
    assert outcome.status == "device_error"
    assert outcome.error_code == "abnormal_reply"
    assert "valve_state=abnormal" in outcome.reason


def test_cjt188_read_now_and_history() -> None:
    proto = get_protocol("cjt188-2004")
    assert proto.encode_command("read_now", ADDRESS, GAS).request.identifier == "901F"
    assert proto.encode_command("read_history", ADDRESS, {**GAS, "months_ago": 1}
                                ).request.identifier == "D120"
    assert proto.encode_command("read_history", ADDRESS, {**GAS, "months_ago": 12}
                                ).request.identifier == "D12B"
    with pytest.raises(EncodeError, match="months_ago"):
        proto.encode_command("read_history", ADDRESS, {**GAS, "months_ago": 13})


def test_cjt188_top_up_set_price_sync_time() -> None:
    proto = get_protocol("cjt188-2004")
    top_up = proto.encode_command("top_up", ADDRESS,
                                  {**GAS, "amount": Decimal("100.50"), "purchase_sequence": 7})
    assert top_up.request.values() == {"purchase_sequence": 7,
                                       "purchase_amount": Decimal("100.50")}
    price = proto.encode_command("set_price", ADDRESS,
                                 {**GAS, "prices": ["2.80", "3.50", "4.20"],
                                  "step_limits": [300, 600]})
    assert price.request.values()["price_3"] == Decimal("4.20")
    sync = proto.encode_command("sync_time", ADDRESS,
                                {**GAS, "time": datetime(2026, 5, 14, 0, 30, 15, tzinfo=UTC)})
    assert sync.request.values()["meter_time"] == datetime(2026, 5, 14, 8, 30, 15)


def test_missing_parameter_and_unsupported_command() -> None:
    proto = get_protocol("cjt188-2004")
    with pytest.raises(EncodeError, match="amount"):
        proto.encode_command("top_up", ADDRESS, {**GAS, "purchase_sequence": 1})
    with pytest.raises(EncodeError, match="meter_type"):
        proto.encode_command("read_now", ADDRESS)
    with pytest.raises(CommandNotSupportedError) as caught:
        proto.encode_command("relay_trip", ADDRESS, GAS)
    assert caught.value.fault == "caller"
    assert "relay_trip" not in proto.commands()


def test_dlt645_relay_trip_and_close() -> None:
    proto = get_protocol("dlt645-2007")
    trip = proto.encode_command("relay_trip", "201000000012", {"password": "123456"})
    values = trip.request.values()
    assert values["relay_action"] == "trip"
    assert values["password"] == "123456"
    close = proto.encode_command("relay_close", "201000000012")
    assert close.request.values()["relay_action"] == "close_allowed"
    direct = proto.encode_command("relay_close", "201000000012", {"mode": "direct_close"})
    assert direct.request.values()["relay_action"] == "direct_close"
    ok = proto.decode(proto.encode(reply_to(trip.request, items=())))
    assert proto.matches(trip, ok)
    assert proto.interpret(trip, ok).status == "ok"


def test_dlt645_error_reply_carries_the_reason() -> None:
    proto = get_protocol("dlt645-2007")
    cmd = proto.encode_command("read_now", "201000000012")
    reply = proto.decode(bytes.fromhex("68 12 00 00 00 10 20 68 D1 01 35 19 16"))
    assert proto.matches(cmd, reply)
    outcome = proto.interpret(cmd, reply)
    assert outcome.status == "device_error"
    assert outcome.error_code == "no_requested_data"
    assert outcome.errors == ("no_requested_data",)


def test_dlt645_read_reply_gives_the_data_read_back() -> None:
    proto = get_protocol("dlt645-2007")
    cmd = proto.encode_command("read_now", "201000000012", {"identifier": "0001FF00"})
    reply = proto.decode(bytes.fromhex(
        "68 12 00 00 00 10 20 68 91 18 33 32 34 33 5C 34 33 33 95 33 33 33 93 33 33 33 "
        "36 33 33 33 35 33 33 33 74 16"))
    assert proto.matches(cmd, reply)
    outcome = proto.interpret(cmd, reply)
    assert outcome.status == "ok"
    assert outcome.data["forward_active_energy"] == ["1.29", "0.62", "0.60", "0.03", "0.02"]
    other = proto.encode_command("read_now", "201000000012", {"identifier": "00010000"})
    assert not proto.matches(other, reply)


def test_dlt645_wildcard_request_matches_the_real_address() -> None:
    proto = get_protocol("dlt645-2007")
    cmd = proto.encode_command("read_now", "AAAAAAAAAAAA")
    reply = reply_to(cmd.request, address="201000000012",
                     items=(DataItem(name="forward_active_energy", value=Decimal("1.00"),
                                     unit="kWh"),))
    assert proto.matches(cmd, proto.decode(proto.encode(reply)))


def test_dlt645_time_broadcast_expects_no_reply() -> None:
    proto = get_protocol("dlt645-2007")
    cmd = proto.encode_command("sync_time", "999999999999",
                               {"time": "2026-05-14T00:30:15+00:00"})
    assert not cmd.expects_reply
    assert cmd.request.values()["time"] == datetime(2026, 5, 14, 8, 30, 15)


def test_dlt645_set_price_writes_the_tariff_price() -> None:
    proto = get_protocol("dlt645-2007")
    cmd = proto.encode_command("set_price", "201000000012", {"price": "0.5283", "tariff": 2})
    assert cmd.request.identifier == "04050102"
    assert cmd.request.values()["tariff_price"] == Decimal("0.5283")
    with pytest.raises(EncodeError, match="more than 4 decimals"):
        proto.encode_command("set_price", "201000000012", {"price": "0.52831"})
