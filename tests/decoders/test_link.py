"""DTU registration and heartbeat packets, alone and interleaved with meter frames."""

from __future__ import annotations

import pytest

from decoders import NEED_DATA, Frame, Framer, FramingError, get_protocol
from decoders.link import LinkTemplate
from tests.decoders.conftest import VECTORS


def link(name: str) -> LinkTemplate:
    proto = get_protocol(name)
    assert isinstance(proto, LinkTemplate)
    return proto


@pytest.mark.parametrize("name", ["dtu-text", "dtu-binary"])
def test_registration_and_heartbeat_round_trip(name: str) -> None:
    dtu = link(name)
    for kind in ("registration", "heartbeat"):
        frame = Frame(protocol=name, direction="report", function=kind, address="13912345678")
        data = dtu.encode(frame)
        decoded = dtu.decode(data)
        assert decoded.function == kind
        if name == "dtu-binary" or kind == "registration":
            assert decoded.address == "13912345678"
        assert dtu.encode(decoded) == data


@pytest.mark.parametrize("name", ["dtu-text", "dtu-binary"])
def test_link_packets_interleaved_with_meter_frames(name: str) -> None:
    dtu = link(name)
    meter = get_protocol("dlt645-2007")
    reg = dtu.encode(Frame(protocol=name, direction="report", function="registration",
                           address="13912345678"))
    beat = dtu.encode(Frame(protocol=name, direction="report", function="heartbeat",
                            address="13912345678"))
    reply = next(r["bytes"] for r in VECTORS if r["bytes"].endswith(b"\x16\x16"))
    framer = Framer([*dtu.frame_specs(), *meter.frame_specs()])
    stream = reg + reply + beat + reply
    got = []
    for index in range(len(stream)):  # byte by byte, the hardest case
        framer.feed(stream[index:index + 1])
        while (chunk := framer.next_frame()) is not NEED_DATA:
            got.append((framer.last_spec in dtu.frame_specs(), chunk))
    assert got == [(True, reg), (False, reply), (True, beat), (False, reply)]
    assert framer.stats.garbage_bytes == 0


def test_binary_registration_gets_its_reply() -> None:
    dtu = link("dtu-binary")
    reg = dtu.decode(dtu.encode(Frame(protocol="dtu-binary", direction="report",
                                      function="registration", address="13912345678")))
    assert dtu.reply_to(reg) == bytes.fromhex("7B 81 00 06 02 7B")


def test_unknown_packet_is_a_framing_error() -> None:
    with pytest.raises(FramingError):
        link("dtu-text").decode(b"hello")


@pytest.mark.parametrize("name", ["dtu-text", "dtu-binary"])
def test_empty_input_is_a_decode_error(name: str) -> None:
    # Regression (found by the fuzz test): an empty buffer "matched" a packet whose
    # measure said "need more data" (0 == len(b"")), and an envelope indexed past the end.
    from decoders import LengthError

    with pytest.raises(LengthError):
        link(name).decode(b"")
