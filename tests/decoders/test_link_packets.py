"""DTU link packets: ack packets naming an upload (pattern groups), first-byte hints."""

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


def test_pattern_packets_tell_the_framer_their_first_byte() -> None:
    """A regression: pattern packets used to accept any first byte, so the framer tried the
    pattern at every byte of garbage (a flooding link cost ~90 ms of CPU per 16 KiB)."""
    from decoders.link import _pattern_first_bytes

    link = get_protocol("dtu-text")
    firsts = {spec.spec.name: spec.first_bytes  # type: ignore[attr-defined]
              for spec in link.frame_specs()}
    assert firsts["registration"] == frozenset(b"R")
    assert firsts["ack"] == frozenset(b"A")
    import re

    assert _pattern_first_bytes(re.compile(rb"^[0-9A-F]{8}")) == frozenset(b"0123456789ABCDEF")
    assert _pattern_first_bytes(re.compile(rb"(?P<id>\d+)")) is None  # a group first: any
    assert _pattern_first_bytes(re.compile(rb"[^x]y")) is None


def test_framer_still_finds_packets_after_garbage() -> None:
    from decoders import Framer

    link = get_protocol("dtu-text")
    framer = Framer(link.frame_specs())
    framer.feed(b"\x00\x13RXX" + b"REG:DTU77\r\n" + b"zzHB")
    assert framer.next_frame() == b"REG:DTU77\r\n"
    assert framer.next_frame() == b"HB"
