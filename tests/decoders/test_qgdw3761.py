"""Q/GDW 376.1: login/heartbeat confirmation, AFN 10 forwarding of DL/T 645 frames."""

from __future__ import annotations

import pytest

from decoders import DataItem, Frame, LengthError, get_protocol
from decoders.qgdw3761 import QGDW3761, data_unit, fn_of, pn_of
from tests.decoders.conftest import VECTORS

LOGIN = next(r["bytes"] for r in VECTORS if r["protocol"] == "qgdw376.1")
BLOCK_REPLY = next(r["bytes"] for r in VECTORS if r["expect"].get("di") == "0001FF00")


def proto() -> QGDW3761:
    p = get_protocol("qgdw376.1")
    assert isinstance(p, QGDW3761)
    return p


def test_login_is_a_report_and_gets_its_confirmation() -> None:
    login = proto().decode(LOGIN)
    assert (login.function, login.direction, login.address) == ("login", "report", "02001234")
    confirmation = proto().decode(proto().confirm(login))
    assert confirmation.function == "confirm_all"
    assert confirmation.identifier == "AFN00:p0:F1"
    assert confirmation.sequence == login.sequence
    assert confirmation.address == login.address
    assert confirmation.control == 0x0B


def test_heartbeat_and_logout_names() -> None:
    for fn, name in ((2, "logout"), (3, "heartbeat")):
        frame = Frame(protocol="qgdw376.1", direction="report", function=name,
                      address="02001234", control=0xC9, identifier=f"AFN02:p0:F{fn}",
                      sequence=2, header={"prm": True})
        assert proto().decode(proto().encode(frame)).function == name


def test_forwarding_a_dlt645_read_and_its_answer() -> None:
    p = proto()
    cmd = p.encode_command("read_now", "02001234",
                           {"meter_address": "201000000012", "identifier": "0001FF00"},
                           sequence=3)
    sent = cmd.request.values()
    assert sent["port"] == 2
    assert get_protocol("dlt645-2007").decode(sent["forwarded"]).identifier == "0001FF00"
    assert cmd.request.header["pw"] == "00" * 16
    answer = p.decode(p.encode(Frame(
        protocol="qgdw376.1", direction="reply", function="data_forwarding",
        address="02001234", control=0x88, identifier="AFN10:p0:F1", sequence=3,
        header={"prm": False}, items=(DataItem(name="port", value=2),
                                      DataItem(name="forwarded", value=BLOCK_REPLY)))))
    assert answer.values()["forwarded_frame"]["identifier"] == "0001FF00"
    assert p.matches(cmd, answer)
    outcome = p.interpret(cmd, answer)
    assert outcome.status == "ok"
    assert outcome.data["forward_active_energy"][0] == "1.29"


def test_forwarded_answer_for_another_identifier_is_refused() -> None:
    p = proto()
    cmd = p.encode_command("read_now", "02001234", {"meter_address": "201000000012"},
                           sequence=3)
    answer = Frame(protocol="qgdw376.1", direction="reply", function="data_forwarding",
                   address="02001234", control=0x88, identifier="AFN10:p0:F1", sequence=3,
                   items=(DataItem(name="port", value=2),
                          DataItem(name="forwarded", value=BLOCK_REPLY)))
    outcome = p.interpret(cmd, p.decode(p.encode(answer)))
    assert outcome.error_code == "mismatched_answer"


def test_deny_and_empty_answer() -> None:
    p = proto()
    cmd = p.encode_command("read_now", "02001234", {"meter_address": "201000000012"})
    deny = p.decode(p.encode(Frame(protocol="qgdw376.1", direction="reply",
                                   function="deny_all", address="02001234", control=0x88,
                                   identifier="AFN00:p0:F2", sequence=0)))
    assert deny.abnormal
    assert p.matches(cmd, deny)
    assert p.interpret(cmd, deny).error_code == "denied"


def test_missing_password_is_explained_and_the_variant_accepts_it() -> None:
    p = proto()
    cmd = p.encode_command("read_now", "02001234", {"meter_address": "201000000012"})
    raw = bytearray(cmd.data)
    user = bytes(raw[6:-2 - 16])  # drop PW
    length = ((len(user) << 2) | 2).to_bytes(2, "little")
    stripped = b"\x68" + length + length + b"\x68" + user + bytes([sum(user) & 0xFF, 0x16])
    with pytest.raises(LengthError) as caught:
        p.decode(stripped)
    assert "no-password" in caught.value.reason
    frame = get_protocol("qgdw376.1:no-password").decode(stripped)
    assert frame.item("forwarded") is not None


def test_data_unit_arithmetic() -> None:
    assert pn_of(bytes([0x01, 0x01])) == [1]
    assert pn_of(bytes([0x80, 0x02])) == [16]
    assert fn_of(bytes([0x04, 0x01])) == [11]
    assert data_unit(9, 25) == bytes([0x01, 0x02, 0x01, 0x03])
