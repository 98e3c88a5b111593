"""DLMS/COSEM: HDLC and wrapper transports, GET request/response, A-XDR data."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders import ChecksumError, DataItem, Frame, get_protocol
from decoders.dlms_apdu import decode_axdr, encode_axdr
from tests.decoders.conftest import VECTORS

KAMSTRUP = next(r["bytes"] for r in VECTORS if r["expect"].get("meter") ==
                "Kamstrup Omnipower 1P")


def test_get_response_value_and_matching_over_hdlc() -> None:
    proto = get_protocol("dlms-hdlc")
    cmd = proto.encode_command("read_now", "2021", {"obis": "0-0:96.1.0.255",
                                                     "class_id": 1, "client": "25"},
                               sequence=1)
    sent = cmd.request.values()
    assert (sent["obis"], sent["class_id"], sent["attribute"]) == ("0-0:96.1.0.255", 1, 2)
    assert cmd.request.header["llc"] == "E6E600"
    reply = proto.decode(KAMSTRUP)
    assert proto.matches(cmd, reply)
    outcome = proto.interpret(cmd, reply)
    assert outcome.status == "ok"
    assert outcome.data["value"] == 36765667
    other = proto.encode_command("read_now", "2021", {"client": "25"}, sequence=2)
    assert not proto.matches(other, reply)


def test_data_access_error_is_a_device_error() -> None:
    proto = get_protocol("dlms-wrapper")
    cmd = proto.encode_command("read_now", "1", sequence=3)
    reply = Frame(protocol="dlms-wrapper", direction="reply", function="get_response_normal",
                  address="16", header={"source_wport": 1, "destination_wport": 16},
                  items=(DataItem(name="invoke_id", value=3),
                         DataItem(name="confirmed", value=True),
                         DataItem(name="high_priority", value=True),
                         DataItem(name="error", value=("object_undefined",))))
    decoded = proto.decode(proto.encode(reply))
    assert decoded.sequence == 3
    assert proto.matches(cmd, decoded)
    outcome = proto.interpret(cmd, decoded)
    assert outcome.status == "device_error"
    assert outcome.error_code == "object_undefined"


def test_hcs_is_checked() -> None:
    data = bytearray(KAMSTRUP)
    data[7] ^= 0xFF  # HCS low byte
    from decoders.checksums import crc16_x25

    data[-3:-1] = crc16_x25(bytes(data[1:-3])).to_bytes(2, "little")
    with pytest.raises(ChecksumError) as caught:
        get_protocol("dlms-hdlc").decode(bytes(data))
    assert caught.value.field == "hcs"
    assert caught.value.offset == 7


def test_agrees_with_dlms_cosem_on_get_requests() -> None:
    from dlms_cosem.connection import XDlmsApduFactory

    for row in VECTORS:
        if row["protocol"] not in ("dlms-apdu", "dlms-wrapper"):
            continue
        frame = get_protocol(row["protocol"]).decode(row["bytes"])
        if frame.function != "get_request_normal":
            continue
        apdu = row["bytes"][8:] if row["protocol"] == "dlms-wrapper" else row["bytes"]
        peer = XDlmsApduFactory.apdu_from_bytes(apdu)
        values = frame.values()
        assert values["class_id"] == int(peer.cosem_attribute.interface)
        assert values["attribute"] == peer.cosem_attribute.attribute
        instance = peer.cosem_attribute.instance
        assert values["obis"] == f"{instance.a}-{instance.b}:{instance.c}.{instance.d}." \
                                 f"{instance.e}.{instance.f}"
        assert values["invoke_id"] == peer.invoke_id_and_priority.invoke_id


scalars = st.one_of(
    st.tuples(st.just("double_long_unsigned"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("long"), st.integers(-(2**15), 2**15 - 1)),
    st.tuples(st.just("octet_string"), st.binary(max_size=20).map(lambda b: b.hex().upper())),
    st.tuples(st.just("visible_string"), st.text(alphabet="ABC xyz-0123", max_size=12)),
    st.tuples(st.just("enum"), st.integers(0, 255)),
    st.tuples(st.just("boolean"), st.booleans()),
    st.tuples(st.just("null_data"), st.none()),
)
values = st.recursive(
    scalars, lambda inner: st.tuples(st.sampled_from(["array", "structure"]),
                                     st.lists(inner.map(lambda t: {"type": t[0], "value": t[1]}),
                                              max_size=4)),
    max_leaves=12)


@given(values)
def test_axdr_round_trip(value: tuple[str, Any]) -> None:
    kind, data = value
    raw = encode_axdr(data, kind)
    decoded, decoded_kind, end = decode_axdr(raw)
    assert end == len(raw)
    assert decoded_kind == kind
    assert decoded == data
