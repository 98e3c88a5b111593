"""Corrupted input raises the declared decode-error family and nothing else (fuzzing).

The default run tries a bounded number of inputs per property; ``-m slow`` runs the long
fuzz (``make test-slow``).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoders import NEED_DATA, DecodeError, Framer, get_protocol
from tests.decoders.conftest import CONSTRUCTED, VECTORS

PROTOCOLS = ("cjt188-2004", "dlt645-2007", "dlt645-1997", "dtu-text", "dtu-binary",
             "modbus-rtu", "modbus-tcp", "mbus-en13757", "qgdw376.1", "dlms-hdlc",
             "dlms-wrapper", "dlms-apdu")
GOOD = [r for r in VECTORS + CONSTRUCTED
        if r["protocol"] in PROTOCOLS and r.get("frame_valid", True)]
good_frames = st.sampled_from(GOOD)


def decode_or_declared_error(protocol: str, data: bytes) -> None:
    """Decoding may succeed or raise DecodeError — any other exception is a bug."""
    proto = get_protocol(protocol)
    error: DecodeError | None = None
    try:
        frame = proto.decode(data)
    except DecodeError as exc:
        error = exc
    if error is not None:
        assert error.protocol == protocol
        assert error.reason
        assert error.offset is None or 0 <= error.offset <= len(data)
        assert error.fault == "peer"
        return
    # Whatever decodes must encode again to the same bytes.
    assert proto.encode(frame) == data


@given(row=good_frames, data=st.data())
def test_bit_flips(row: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(row["bytes"])
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] ^= 1 << data.draw(st.integers(0, 7))
    decode_or_declared_error(row["protocol"], bytes(raw))


@given(row=good_frames, data=st.data())
def test_truncation(row: dict[str, Any], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(row["bytes"]) - 1))
    with pytest.raises(DecodeError):
        get_protocol(row["protocol"]).decode(row["bytes"][:cut])


@given(row=good_frames, length=st.integers(0, 255))
def test_lying_length_field(row: dict[str, Any], length: int) -> None:
    raw = bytearray(row["bytes"])
    if row["protocol"].startswith(("dtu", "modbus", "mbus", "qgdw", "dlms")):
        return
    begin = len(raw) - len(raw.lstrip(b"\xfe"))
    offset = begin + (10 if row["protocol"] == "cjt188-2004" else 9)
    if raw[offset] == length:
        return
    raw[offset] = length
    raw[-2] = sum(raw[begin:-2]) & 0xFF  # a consistent checksum: only the length lies
    decode_or_declared_error(row["protocol"], bytes(raw))


@given(protocol=st.sampled_from(PROTOCOLS), payload=st.binary(max_size=300))
def test_random_bytes(protocol: str, payload: bytes) -> None:
    decode_or_declared_error(protocol, payload)


@given(protocol=st.sampled_from(PROTOCOLS[:3]), payload=st.binary(max_size=120))
def test_random_bytes_behind_a_valid_envelope(protocol: str, payload: bytes) -> None:
    """The hardest inputs: framing, length and checksum right, the body arbitrary."""
    head = {"cjt188-2004": bytes.fromhex("68 10 01 00 00 00 00 00 00 81"),
            "dlt645-2007": bytes.fromhex("68 01 00 00 00 00 00 68 91"),
            "dlt645-1997": bytes.fromhex("68 01 00 00 00 00 00 68 81")}[protocol]
    frame = bytearray(head + bytes([len(payload)]) + payload)
    frame += bytes([sum(frame) & 0xFF, 0x16])
    decode_or_declared_error(protocol, bytes(frame))


@given(chunks=st.lists(st.one_of(st.binary(max_size=40),
                                 good_frames.map(lambda r: r["bytes"])), max_size=12),
       protocol=st.sampled_from(PROTOCOLS[:3]))
def test_framer_survives_any_stream(chunks: list[bytes], protocol: str) -> None:
    proto = get_protocol(protocol)
    framer = proto.framer()
    for chunk in chunks:
        framer.feed(chunk)
        while (frame := framer.next_frame()) is not NEED_DATA:
            assert isinstance(frame, bytes)
            decode_or_declared_error(protocol, frame)
    framer.close()
    assert framer.buffered == 0


@given(frames=st.lists(good_frames.filter(lambda r: r["protocol"] == "dlt645-2007"),
                       min_size=1, max_size=6), data=st.data())
def test_framer_finds_every_frame_whatever_the_chunking(frames: list[dict[str, Any]],
                                                        data: st.DataObject) -> None:
    stream = b"".join(r["bytes"] for r in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    framer = get_protocol("dlt645-2007").framer()
    got = []
    last = 0
    for cut in [*cuts, len(stream)]:
        framer.feed(stream[last:cut])
        last = cut
        while (frame := framer.next_frame()) is not NEED_DATA:
            got.append(frame)
    assert got == [r["bytes"] for r in frames]


@pytest.mark.slow
@settings(max_examples=20000, deadline=None, suppress_health_check=list(HealthCheck))
@given(protocol=st.sampled_from(PROTOCOLS), payload=st.binary(max_size=600),
       row=good_frames, flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)),
                                       max_size=6))
def test_long_fuzz(protocol: str, payload: bytes, row: dict[str, Any],
                   flips: list[tuple[int, int]]) -> None:
    decode_or_declared_error(protocol, payload)
    raw = bytearray(row["bytes"])
    for index, bit in flips:
        raw[index % len(raw)] ^= 1 << bit
    decode_or_declared_error(row["protocol"], bytes(raw))
    framer = Framer(get_protocol(row["protocol"]).frame_specs())
    framer.feed(payload + bytes(raw) + payload)
    while framer.next_frame() is not NEED_DATA:
        pass


def test_a_body_no_rule_describes_round_trips_as_raw_data() -> None:
    # Regression (found by the long fuzz): a reply whose function has no body rule for its
    # size decoded to one raw "data" item, but encoding picked the function's empty body
    # rule and dropped the data.
    raw = bytearray(bytes.fromhex("68 12 00 00 00 10 20 68 91 07 35 34 33 37 88 86 54 DF 16"))
    raw[8] = 0x95  # write_address reply: its only rule has no data at all
    raw[-2] = sum(raw[:-2]) & 0xFF
    proto = get_protocol("dlt645-2007")
    frame = proto.decode(bytes(raw))
    assert [i.name for i in frame.items] == ["data"]
    assert proto.encode(frame) == bytes(raw)
