"""Modbus RTU/TCP: PDUs, exceptions, register maps, commands, pymodbus agreement."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest
from pymodbus.framer import FramerRTU
from pymodbus.pdu.decoders import DecodePDU

from decoders import ChecksumError, DataItem, Frame, LengthError, get_protocol
from decoders.modbus import ModbusRtu, pdu_size
from tests.decoders.conftest import VECTORS

RTU = [r for r in VECTORS if r["protocol"] == "modbus-rtu"]


def rtu(hex_text: str) -> bytes:
    body = bytes.fromhex(hex_text)
    from decoders.checksums import crc16_modbus

    return body + crc16_modbus(body).to_bytes(2, "little")


def test_exception_reply_is_abnormal_with_the_reason() -> None:
    proto = get_protocol("modbus-rtu")
    frame = proto.decode(rtu("11 83 02"))
    assert frame.abnormal
    assert frame.function == "read_holding_registers"
    assert frame.values()["error"] == ("illegal_data_address",)
    assert proto.encode(frame) == rtu("11 83 02")


def test_bad_crc_and_lying_byte_count() -> None:
    proto = get_protocol("modbus-rtu")
    good = RTU[1]["bytes"]
    with pytest.raises(ChecksumError) as caught:
        proto.decode(good[:-1] + bytes([good[-1] ^ 1]))
    assert caught.value.offset == len(good) - 2
    with pytest.raises(LengthError):
        proto.decode(rtu("11 03 06 00 01 00 02"))  # says 6 bytes, carries 4


def test_register_map_read_now_and_values() -> None:
    proto = get_protocol("modbus-tcp:flow-computer")
    cmd = proto.encode_command("read_now", "5", sequence=77)
    values = cmd.request.values()
    assert cmd.request.function == "read_holding_registers"
    assert (values["start_address"], values["quantity"]) == (0, 11)
    registers = [0x0001, 0xE240, 0, 0x3039, *struct.unpack(">2H", struct.pack(">f", 12.5)),
                 *struct.unpack(">2H", struct.pack(">f", 21.25)),
                 *struct.unpack(">2H", struct.pack(">f", 101.3)), 0x0004]
    reply = proto.decode(proto.encode(Frame(
        protocol="modbus-tcp", direction="reply", function="read_holding_registers",
        address="5", control=3, sequence=77,
        items=(DataItem(name="registers", value=registers),))))
    assert proto.matches(cmd, reply)
    named = proto.apply_map(cmd, reply).values()  # type: ignore[attr-defined]
    assert named["volume_total"] == Decimal("123.456")
    assert named["volume_standard"] == Decimal("12.345")
    assert named["flow_rate"] == Decimal("12.5")
    assert named["pressure"] == Decimal("101.3")
    assert named["alarm_word"] == 4
    outcome = proto.interpret(cmd, reply)
    assert outcome.status == "ok"
    assert outcome.data["volume_total"] == "123.456"
    other = proto.decode(proto.encode(Frame(
        protocol="modbus-tcp", direction="reply", function="read_holding_registers",
        address="5", control=3, sequence=78, items=(DataItem(name="registers", value=[1]),))))
    assert not proto.matches(cmd, other)


def test_map_commands() -> None:
    proto = get_protocol("modbus-rtu:flow-computer")
    close = proto.encode_command("valve_close", "5")
    assert close.data == rtu("05 05 00 10 00 00")
    interval = proto.encode_command("set_report_interval", "5", {"seconds": 900})
    assert interval.request.values() == {"address": 0x20, "value": 900}
    assert "relay_trip" not in proto.commands()


def test_functions_outside_the_fast_eight_go_through_pymodbus() -> None:
    proto = get_protocol("modbus-rtu")
    mask_write = rtu("11 16 00 04 00 F2 00 25")
    frame = proto.decode(mask_write)
    assert frame.function == "mask_write_register"
    assert frame.values()["address"] == 4
    assert proto.encode(frame) == mask_write


@pytest.mark.parametrize("row", RTU, ids=[r["id"] for r in RTU])
def test_sizes_agree_with_pymodbus(row: dict) -> None:  # type: ignore[type-arg]
    data = row["bytes"]
    reply = get_protocol("modbus-rtu").decode(data).direction == "reply"
    framer = FramerRTU(DecodePDU(is_server=not reply))
    used, dev_id, _, pdu = framer.decode(data)
    assert used == len(data)
    assert dev_id == data[0]
    assert pdu_size(data, 1, reply) == len(pdu)  # pymodbus keeps the function code


def test_ambiguous_echo_reads_as_the_expected_direction() -> None:
    echo = next(r["bytes"] for r in RTU if r["bytes"][1] == 5)
    assert get_protocol("modbus-rtu").decode(echo).direction == "request"

    class Master(ModbusRtu):
        expect = "reply"

    assert Master().decode(echo).direction == "reply"
