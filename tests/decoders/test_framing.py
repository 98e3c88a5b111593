"""Framers: whole, byte by byte, garbage before and after, back to back, bounded."""

from __future__ import annotations

from typing import Any

import pytest

from decoders import NEED_DATA, Framer, FramerOverflowError, get_protocol
from decoders.framing import Envelope, LengthField
from tests.decoders.conftest import CONSTRUCTED, VECTORS

TEMPLATE_PROTOCOLS = ("cjt188-2004", "dlt645-2007", "dlt645-1997", "modbus-rtu", "modbus-tcp",
                      "mbus-en13757", "qgdw376.1", "dlms-hdlc", "dlms-wrapper")
FRAMES = [pytest.param(r, id=r["id"]) for r in VECTORS + CONSTRUCTED
          if r["protocol"] in TEMPLATE_PROTOCOLS and r.get("frame_valid", True)]
GARBAGE = bytes.fromhex("00 16 68 FF 68 01 16 A5")  # start and end bytes included on purpose


def drain(framer: Framer) -> list[bytes]:
    out = []
    while True:
        frame = framer.next_frame()
        if frame is NEED_DATA:
            return out
        assert isinstance(frame, bytes)
        out.append(frame)


@pytest.mark.parametrize("row", FRAMES)
def test_whole(row: dict[str, Any]) -> None:
    framer = get_protocol(row["protocol"]).framer()
    framer.feed(row["bytes"])
    assert drain(framer) == [row["bytes"]]
    assert framer.buffered == 0
    assert framer.stats.garbage_bytes == 0


@pytest.mark.parametrize("row", FRAMES)
def test_byte_by_byte(row: dict[str, Any]) -> None:
    framer = get_protocol(row["protocol"]).framer()
    got: list[bytes] = []
    for index in range(len(row["bytes"])):
        framer.feed(row["bytes"][index:index + 1])
        got += drain(framer)
        if index < len(row["bytes"]) - 1:
            assert got == [], "a frame came out before its last byte"
    assert got == [row["bytes"]]


@pytest.mark.parametrize("row", FRAMES)
def test_garbage_before_and_after(row: dict[str, Any]) -> None:
    framer = get_protocol(row["protocol"]).framer()
    framer.feed(GARBAGE + row["bytes"] + GARBAGE)
    frames = drain(framer)
    assert frames[0].endswith(row["bytes"].lstrip(b"\xfe"))
    assert get_protocol(row["protocol"]).decode(frames[0]) == \
        get_protocol(row["protocol"]).decode(row["bytes"])
    assert framer.stats.garbage_bytes >= len(GARBAGE)
    assert framer.stats.resyncs >= 1
    # The trailing garbage stays buffered until it can be judged (it could start a frame).
    rest = framer.close()
    assert len(rest) + framer.stats.garbage_bytes - len(rest) >= len(GARBAGE)


@pytest.mark.parametrize("row", FRAMES)
def test_back_to_back(row: dict[str, Any]) -> None:
    framer = get_protocol(row["protocol"]).framer()
    framer.feed(row["bytes"] + row["bytes"])
    assert drain(framer) == [row["bytes"], row["bytes"]]


def test_never_splits_on_an_end_byte_inside_the_frame() -> None:
    row = next(r for r in VECTORS if r["bytes"].endswith(b"\x16\x16"))
    framer = get_protocol("dlt645-2007").framer()
    framer.feed(row["bytes"][:-1])  # up to the checksum, which is 0x16
    assert framer.next_frame() is NEED_DATA
    framer.feed(row["bytes"][-1:])
    assert framer.next_frame() == row["bytes"]


def test_a_frame_with_a_bad_checksum_is_skipped_and_counted() -> None:
    bad = next(r for r in VECTORS if not r["checksum_ok"])["bytes"]
    good = next(r for r in VECTORS if r["protocol"] == "dlt645-2007" and r["frame_valid"])
    framer = get_protocol("dlt645-2007").framer()
    framer.feed(bad + good["bytes"])
    assert drain(framer) == [good["bytes"]]
    assert framer.stats.bad_checksum >= 1
    assert framer.take_garbage() == bad
    assert framer.take_garbage() == b""


def test_too_long_a_preamble_keeps_the_allowed_part() -> None:
    row = next(r for r in VECTORS if r["bytes"].startswith(b"\xfe" * 4)
               and r["protocol"] == "cjt188-2004")
    framer = get_protocol("cjt188-2004").framer()
    framer.feed(b"\xfe" * 3 + row["bytes"])
    assert drain(framer) == [row["bytes"]]
    assert framer.stats.garbage_bytes == 3


def test_a_lying_length_field_does_not_hold_back_the_next_frame() -> None:
    good = next(r for r in VECTORS if r["protocol"] == "dlt645-2007" and r["frame_valid"])
    lying = bytearray(good["bytes"])
    lying[9] = 0xC8  # L = 200: the candidate waits for 212 bytes that never come
    framer = get_protocol("dlt645-2007").framer()
    framer.feed(bytes(lying) + good["bytes"])
    assert drain(framer) == [good["bytes"]]
    assert framer.take_garbage() == bytes(lying)


def test_resync_gives_up_a_candidate_on_idle_timeout() -> None:
    good = next(r for r in VECTORS if r["protocol"] == "dlt645-2007" and r["frame_valid"])
    lying = bytearray(good["bytes"])
    lying[9] = 0xC8
    framer = get_protocol("dlt645-2007").framer()
    framer.feed(bytes(lying))
    assert drain(framer) == []
    held = framer.buffered
    framer.resync()
    drain(framer)
    assert framer.buffered < held
    assert framer.stats.garbage_bytes >= 1


def test_the_buffer_is_bounded() -> None:
    framer = get_protocol("cjt188-2004").framer(max_buffer=1024)
    framer.feed(b"\x00" * 600)
    with pytest.raises(FramerOverflowError):
        framer.feed(b"\x00" * 600)
    assert drain(framer) == []  # draining consumes the garbage...
    framer.feed(b"\x00" * 600)  # ...and makes room again
    assert framer.stats.garbage_bytes == 600


def test_garbage_kept_for_the_dead_letter_record_is_bounded() -> None:
    framer = Framer(get_protocol("cjt188-2004").frame_specs(), keep_garbage=16)
    framer.feed(bytes(range(0x20, 0x60)))
    drain(framer)
    assert framer.take_garbage() == bytes(range(0x20, 0x30))
    assert framer.stats.garbage_bytes == 0x40


def test_partial_header_waits_for_more() -> None:
    framer = get_protocol("dlt645-2007").framer()
    framer.feed(b"\x68\x12\x00")
    assert framer.next_frame() is NEED_DATA
    assert framer.buffered == 3


def test_repeated_length_fields_must_agree() -> None:
    # M-Bus style: 68 L L 68 ... ; a mismatch is a bad length, not a frame
    env = Envelope(name="long", protocol="test", start=b"\x68", header_size=4,
                   length=LengthField(offset=1, add=6, repeat_at=2), marks=((3, b"\x68"),),
                   end=b"\x16")
    framer = Framer([env])
    framer.feed(bytes.fromhex("68 03 04 68 01 02 03 AA 16"))
    assert framer.next_frame() is NEED_DATA or framer.stats.bad_length == 1
    assert framer.stats.bad_length >= 1
