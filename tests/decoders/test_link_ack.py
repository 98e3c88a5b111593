"""DTU link ``ack`` packets: the FEP names the upload it acknowledges (pattern groups)."""

from __future__ import annotations

import pytest

from decoders import DataItem, EncodeError, Frame, get_protocol


def _ack(ref: str) -> Frame:
    return Frame(protocol="dtu-text", direction="request", function="ack",
                 items=(DataItem(name="ref", value=ref),))


def test_ack_round_trip_names_the_upload() -> None:
    link = get_protocol("dtu-text")
    data = link.encode(_ack("0A1B2C3D"))
    assert data == b"ACK:0A1B2C3D\r\n"
    packet = link.decode(data)
    assert packet.function == "ack"
    assert packet.values()["ref"] == "0A1B2C3D"


def test_registration_still_encodes_with_the_device_id() -> None:
    link = get_protocol("dtu-text")
    data = link.encode(Frame(protocol="dtu-text", direction="report", function="registration",
                             address="DTU000042"))
    assert data == b"REG:DTU000042\r\n"
    assert link.decode(data).address == "DTU000042"


def test_ack_without_ref_or_with_a_bad_ref_is_refused() -> None:
    link = get_protocol("dtu-text")
    with pytest.raises(EncodeError, match="ref"):
        link.encode(Frame(protocol="dtu-text", direction="request", function="ack"))
    with pytest.raises(EncodeError):
        link.encode(_ack("not-hex!"))
