"""The service points' protocol stacks (``ingest.protocols``): command handlers chosen by the
control plane, the FEP's clock for ``sync_time``, and readings stamped on reception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import decoders
from decoders import EncodeError
from ingest.commands import delivery_params
from ingest.protocols import RECEPTION_TIME_TAG, DecodersStack
from schemas.messages import CommandDispatch

GAS_METER = "00000000001234"


def _dispatch(command: str, **params: object) -> CommandDispatch:
    return CommandDispatch(command_id="c-1", device_id="GAS-1", command=command,
                           protocol="cjt188-2004", address=GAS_METER,
                           dispatched_at=datetime(2026, 1, 1, tzinfo=UTC), params=dict(params))


def test_the_handler_variant_encodes_the_command() -> None:
    stack = DecodersStack("cjt188-2004")
    params = {"meter_type": "gas"}
    plain = stack.encode_command("valve_arm_open", GAS_METER, params, sequence=1)
    vendor = stack.encode_command("valve_arm_open", GAS_METER, params, sequence=1,
                                  handler="cjt188-2004:free-valve")
    expected = decoders.get_protocol("cjt188-2004:free-valve").encode_command(
        "valve_arm_open", GAS_METER, params, sequence=1)
    assert vendor.data == expected.data
    assert vendor.data != plain.data  # the vendor's valve code, not the standard 55
    assert vendor.encoder is not None
    assert plain.encoder is None


def test_the_handler_judges_its_own_reply() -> None:
    stack = DecodersStack("cjt188-2004")
    handler = "cjt188-2004:free-valve"
    sent = stack.encode_command("valve_close", GAS_METER, {"meter_type": "gas"}, sequence=7,
                                handler=handler)
    proto = decoders.get_protocol(handler)
    reply = proto.encode(decoders.Frame(
        protocol=proto.name, direction="reply", function=sent.request.request.function,
        address=GAS_METER, identifier=sent.request.request.identifier, sequence=7,
        header={"meter_type": "gas"},
        items=(decoders.DataItem(name="valve_state", value="closed"),
               decoders.DataItem(name="battery_low", value=False))))
    inbound = stack.interpret(reply)
    assert stack.reply_matches(sent, inbound)
    ok, _details = stack.reply_outcome(sent, inbound)
    assert ok


def test_a_handler_of_another_protocol_is_refused_with_the_reason() -> None:
    stack = DecodersStack("cjt188-2004")
    with pytest.raises(EncodeError) as caught:
        stack.encode_command("read_now", GAS_METER, {}, sequence=1, handler="dlt645-2007")
    assert "dlt645-2007" in str(caught.value)
    assert "cjt188-2004" in str(caught.value)
    with pytest.raises(EncodeError):
        stack.encode_command("read_now", GAS_METER, {}, sequence=1,
                             handler="cjt188-2004:no-such-vendor")


def test_a_concentrator_forwards_with_the_meters_handler() -> None:
    stack = DecodersStack("qgdw376.1", forwarded_protocol="dlt645-2007")
    meter = "000000001234"
    default = stack.encode_command("read_now", meter, {}, sequence=2, link_id="42010001")
    bare = stack.encode_command("read_now", meter, {}, sequence=2, link_id="42010001",
                                handler="dlt645-2007:no-preamble")
    inner_default = default.request.request.item("forwarded").value
    inner_bare = bare.request.request.item("forwarded").value
    assert bytes(inner_default).startswith(b"\xfe")
    assert not bytes(inner_bare).startswith(b"\xfe")  # the variant without the FE preamble
    # the concentrator's own protocol as handler: forwarded as always
    same = stack.encode_command("read_now", meter, {}, sequence=2, link_id="42010001",
                                handler="qgdw376.1")
    assert same.data == default.data


def test_sync_time_without_a_time_takes_the_clock_at_delivery() -> None:
    now = datetime(2026, 3, 1, 8, 0, 5, tzinfo=UTC)
    params = delivery_params(_dispatch("sync_time", meter_type="gas"), now=now)
    assert params["time"] == now.isoformat()
    later = delivery_params(_dispatch("sync_time"), now=now + timedelta(hours=5))
    assert later["time"] == (now + timedelta(hours=5)).isoformat()
    stated = "2026-02-28T00:00:00+00:00"
    assert delivery_params(_dispatch("sync_time", time=stated), now=now)["time"] == stated
    assert "time" not in delivery_params(_dispatch("read_now"), now=now)


def test_sync_time_from_the_fep_clock_encodes() -> None:
    stack = DecodersStack("cjt188-2004")
    now = datetime(2026, 3, 1, 8, 0, 5, tzinfo=UTC)
    cmd = stack.encode_command("sync_time", GAS_METER,
                               delivery_params(_dispatch("sync_time", meter_type="gas"),
                                               now=now), sequence=1)
    item = cmd.request.request.item("meter_time")
    assert item is not None
    # the meter keeps local time (Asia/Shanghai, UTC+8)
    assert item.value.replace(tzinfo=None) == datetime(2026, 3, 1, 16, 0, 5)


def test_readings_without_a_meter_clock_are_flagged_as_stamped_on_reception() -> None:
    stack = DecodersStack("dlt645-2007")
    reply = bytes.fromhex("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 34 33 8B 16")
    inbound = stack.interpret(reply)
    assert inbound.readings, "a forward active energy reply gives a reading"
    for draft in inbound.readings:
        assert draft.ts is None
        assert RECEPTION_TIME_TAG in draft.status


def test_readings_with_the_meter_clock_carry_no_reception_flag() -> None:
    gas = bytes.fromhex("FE FE FE FE 68 30 44 33 22 11 00 33 78 81 16 90 1F 12 67 45 23 01 2C"
                        " 00 00 20 01 2C 15 30 08 14 05 26 20 04 00 3E 16")
    inbound = DecodersStack("cjt188-2004").interpret(gas)
    volume = [d for d in inbound.readings if d.register == "volume"]
    assert volume
    assert volume[0].value == Decimal("12345.67")
    assert volume[0].ts is not None
    assert RECEPTION_TIME_TAG not in volume[0].status
    received = DecodersStack("cjt188-2004", reading_time="received").interpret(gas)
    assert all(RECEPTION_TIME_TAG in d.status and d.ts is None for d in received.readings)
