"""M-Bus: link frames, variable-data records, regressions found by fuzzing, reports."""

from __future__ import annotations

from decimal import Decimal

import pytest

from decoders import FieldValueError, apply_report, get_protocol
from decoders.mbus import manufacturer_code, manufacturer_id
from decoders.mbus_records import build_records, parse_records
from tests.decoders.conftest import VECTORS

MBUS = [r for r in VECTORS if r["protocol"] == "mbus-en13757"]


def test_ack_and_short_frames() -> None:
    proto = get_protocol("mbus-en13757")
    assert proto.decode(b"\xe5").function == "ack"
    cmd = proto.encode_command("read_now", "1", sequence=1)
    assert cmd.data == bytes.fromhex("10 7B 01 7C 16")  # REQ_UD2, FCB set
    assert cmd.request.function == "req_ud2"
    reply = proto.decode(MBUS[0]["bytes"])
    assert proto.matches(cmd, reply)
    outcome = proto.interpret(cmd, reply)
    assert outcome.status == "ok"
    assert outcome.data["volume"] == "10834.092"


def test_manufacturer_letters() -> None:
    assert manufacturer_code(0x30E2) == "LGB"
    assert manufacturer_id("LGB") == 0x30E2
    # Regression (fuzzing): a field that is not three letters crashed the decoder.
    assert manufacturer_code(0x77E2) == "0x77E2"
    assert manufacturer_id("0x77E2") == 0x77E2


@pytest.mark.parametrize("record", [
    "09 FD 1A F0",           # BCD "-0" (regression: re-encoded as 00)
    "0D 78 D0",              # LVAR negative BCD of zero length (regression)
    "0D 78 F1 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10 11 12 13 14",  # LVAR F1: 20 bytes
    "04 13 4C 01 00 00",
    "05 13 00 00 80 3F",     # real32 1.0 m3 × 10^-3
])
def test_records_round_trip(record: str) -> None:
    raw = bytes.fromhex(record)
    items = parse_records(raw)
    assert build_records(items) == raw


def test_real_value() -> None:
    (item,) = parse_records(bytes.fromhex("05 13 00 00 80 3F"))
    assert item.value == Decimal("1.0")


def test_truncated_record_is_a_field_error() -> None:
    proto = get_protocol("mbus-en13757")
    good = MBUS[1]["bytes"]
    user = good[4:19] + bytes.fromhex("04 13 4C 01")  # a 4-byte value cut after 2
    data = bytes([0x68, len(user), len(user), 0x68]) + user + bytes([sum(user) & 0xFF, 0x16])
    with pytest.raises(FieldValueError) as caught:
        proto.decode(data)
    assert caught.value.field == "records"
    assert caught.value.offset == 21


def test_report_gives_current_volume_in_m3() -> None:
    frame = get_protocol("mbus-en13757").decode(MBUS[1]["bytes"])
    report = apply_report(frame)
    assert report is not None
    readings = {(r.register, r.value) for r in report.readings}
    assert ("volume", Decimal("0.332")) in readings
    assert ("volume_settlement", Decimal("0.331")) in readings
    assert ("flow_rate", Decimal("0.000")) in readings


def test_agrees_with_pymeterbus_on_the_volumes() -> None:
    import meterbus

    for row in MBUS:
        ours = [i for i in get_protocol("mbus-en13757").decode(row["bytes"]).items
                if i.name == "volume"]
        peer = [r for r in meterbus.load(list(row["bytes"])).records
                if str(r.unit) == "m^3"]
        assert [round(float(i.value), 6) for i in ours] == \
            [round(float(r.value), 6) for r in peer]
