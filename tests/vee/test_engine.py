"""The engine: late and out-of-order values, versions, duplicates, edits, state, determinism."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from schemas import codec
from schemas.messages import Dimensions, ReadingEdit
from tests.vee.conftest import T0, gas_meter, reading, run
from vee.engine import VeeEngine
from vee.errors import EditError
from vee.groups import default_rules_path, load_rule_set
from vee.model import MeterInfo, decode_state, encode_state


def test_a_late_value_revalidates_its_neighbour_with_a_new_version() -> None:
    r = run("[max_flow]", [reading(0, "10"), reading(1, "11"), reading(3, "13")])
    assert r.at(3).consumption == 2
    r.feed([reading(2, "12")])
    assert r.at(2).version == 1
    after = r.at(3)
    assert (after.version, after.consumption) == (2, Decimal("1.000"))
    assert after.interval_start == T0 + timedelta(hours=2)
    assert r.at(1).version == 1  # untouched


def test_a_value_older_than_the_window_is_left_to_revalidate() -> None:
    r = run("[]", [reading(h, str(10 + h)) for h in range(30)], window_points=8)
    before = len(r.outputs)
    r.feed([reading(2.5, "12.5")])
    assert r.dropped == ["late"]
    assert len(r.outputs) == before
    assert r.alerts[-1].code == "vee.late_beyond_window"
    assert "unimeter vee revalidate" in r.alerts[-1].reason


def test_replaying_the_same_input_on_the_same_state_gives_identical_messages() -> None:
    rs = load_rule_set(default_rules_path())
    seq = [reading(h, str(10 + h * 0.7)) for h in range(12)]
    seq[5] = reading(5, "99")  # rejected and estimated
    seq.append(reading(2, "11.4"))  # late duplicate
    engine = VeeEngine(rs)
    state = None
    for r in seq[:6]:
        state = engine.process(r, gas_meter(), state).state
    saved = encode_state(state)  # type: ignore[arg-type]
    first = [engine.process(r, gas_meter(), decode_state(saved)) for r in seq[6:7]]
    again = [engine.process(r, gas_meter(), decode_state(saved)) for r in seq[6:7]]
    encode = lambda res: [codec.encode_payload(o) for o in res.outputs]  # noqa: E731
    assert [encode(x) for x in first] == [encode(x) for x in again]
    assert encode(first[0])


def test_continuing_from_decoded_state_equals_continuing_in_memory() -> None:
    rs = load_rule_set(default_rules_path())
    seq = [reading(h, str(100 + h)) for h in range(20)]
    engine = VeeEngine(rs)
    state = None
    for r in seq[:10]:
        state = engine.process(r, gas_meter(), state).state
    copied = decode_state(encode_state(state))  # type: ignore[arg-type]
    live = [o for r in seq[10:] for o in engine.process(r, gas_meter(), state).outputs]
    resumed = [o for r in seq[10:] for o in engine.process(r, gas_meter(), copied).outputs]
    assert live == resumed


def test_a_second_run_over_the_same_data_changes_nothing() -> None:
    seq = [reading(h, str(10 + h)) for h in range(10)] + [reading(14, "30")]
    r = run("[missing, max_flow]", seq, estimation="[{method: linear, max_gap: 5h}]")
    state_before = encode_state(r.state)
    outputs_before = len(r.outputs)
    r.feed(seq)
    assert len(r.outputs) == outputs_before
    assert encode_state(r.state) == state_before
    assert set(r.dropped) <= {"duplicate", "late"}


def test_an_actual_read_back_from_the_meter_replaces_a_marker() -> None:
    seq = [reading(h, str(10 + h)) for h in range(4)] + [reading(6, "16.5")]
    r = run("[missing]", seq, estimation="[{method: linear, max_gap: 3h}]")
    assert r.at(4).quality == "estimated"
    r.feed([reading(4, "14.2", source="history")])
    corrected = r.at(4)
    assert corrected.value == Decimal("14.200")
    assert corrected.quality == "validated"
    assert corrected.method == "meter_history"
    assert corrected.edit is not None
    assert corrected.edit.reason_code == "METER_HISTORY"
    assert corrected.edit.previous_value is not None
    assert r.at(5).version == 2  # re-estimated between the new actual and 16.5


def test_manual_edit_keeps_who_when_why_and_the_previous_value() -> None:
    r = run("[]", [reading(h, str(10 + h)) for h in range(4)])
    edit = ReadingEdit(edit_id="e-1", meter_id="GM-1", register="volume",
                       ts=T0 + timedelta(hours=2), user="bob", at=T0 + timedelta(days=1),
                       reason_code="READ_BY_OUTWORKER", value=Decimal("12.5"), note="photo")
    result = r.engine.apply_edit(edit, r.meter, r.state)
    edited = next(o for o in result.outputs if o.ts == edit.ts)
    assert (edited.quality, edited.method, edited.version) == ("edited", "manual", 2)
    assert edited.edit is not None
    assert (edited.edit.user, edited.edit.reason_code, edited.edit.previous_value,
            edited.edit.previous_version, edited.edit.note) == (
        "bob", "READ_BY_OUTWORKER", Decimal("12.000"), 1, "photo")
    assert edited.original_value == Decimal("12.000")
    nxt = next(o for o in result.outputs if o.ts == T0 + timedelta(hours=3))
    assert nxt.consumption == Decimal("0.500")  # the neighbour follows the edit
    assert r.engine.apply_edit(edit, r.meter, result.state).dropped == "duplicate"
    with pytest.raises(EditError, match="no value of this register"):
        r.engine.apply_edit(ReadingEdit(edit_id="x", meter_id="GM-1", register="heat",
                                        ts=T0, user="bob", at=T0, reason_code="X"),
                            r.meter, r.state)


def test_dimensions_and_provenance_on_every_version() -> None:
    dims = Dimensions(account_id="A-1", customer_type="residential", region="north",
                      tariff_id="BJ-GAS", vee_group="gas", medium="gas")
    engine = VeeEngine(load_rule_set(default_rules_path()))
    r0 = reading(0, "10")
    out = engine.process(r0, gas_meter(dims=dims), None).outputs[0]
    assert out.dims == dims
    assert out.received_at == r0.received_at
    assert out.validated_at == r0.received_at  # deterministic: the input's time, not now()


def test_day_totals_are_kept_compact_after_eviction() -> None:
    seq = [reading(h, str(10 + h * 0.5)) for h in range(24 * 10)]
    r = run("[]", seq, window_points=16)
    ch = r.state.channels["volume"]
    assert len(ch.points) == 16
    assert 8 <= len(ch.days) <= 21
    assert ch.days[-2] == 12_000_000  # a full day at 0.5 m³/h
    assert len(encode_state(r.state)) < 700


def test_the_oldest_value_keeps_its_consumption_when_the_window_is_re_derived() -> None:
    # Regression (issue 6 follow-up): a late value for the marker at the window's start made
    # the engine re-derive from there; the oldest value lost its consumption (published
    # without one) and added nothing to its day when it left the window.
    hours = [*range(10), 11, 12, 13, 10, *range(14, 30)]
    r = run("[missing]", [reading(h, f"{1000 + h / 2:.3f}") for h in hours],
            estimation="[{method: linear, max_gap: 6h}]", window_points=4, history_days=30)
    ch = r.state.channels["volume"]
    assert r.at(10).consumption == Decimal("0.5")
    assert r.at(11).consumption == Decimal("0.5")
    horizon_hours = (ch.horizon - int(T0.timestamp())) // 3600
    assert sum(ch.days) == (horizon_hours / 2) * 1_000_000  # the advance since hour 0
    assert decode_state(encode_state(r.state)) == r.state


def test_a_hole_at_the_window_start_is_estimated_from_the_value_that_left_it() -> None:
    # a late value re-estimates the hole after it; the hole's start has left the window
    r = run("[missing]", [reading(h, f"{1000 + h:.3f}") for h in (0, 1, 2, 6, 7)],
            estimation="[{method: linear, max_gap: 6h}]", window_points=4)
    assert r.at(3).quality == "estimated"
    assert r.state.channels["volume"].points[0].quality != 0  # a marker leads the window
    r.feed([reading(5, "1005.000")])  # late actual in the hole
    assert r.at(4).quality == "estimated"
    assert r.at(4).value == Decimal("1004.000")
    assert r.at(4).consumption == Decimal("1.000")


def test_state_of_the_previous_format_still_decodes() -> None:
    # format 1 (before the channel kept its base value): what a running table may hold
    import msgspec

    r = run("[missing]", [reading(h, f"{1000 + h:.3f}") for h in range(3)])
    fmt, valve, channels = msgspec.msgpack.decode(encode_state(r.state))
    assert fmt == 2
    assert all(c[-1] is None for c in channels)  # nothing left the window yet
    old = msgspec.msgpack.encode([1, valve, [c[:-1] for c in channels]])
    assert decode_state(old) == r.state
    # after values left the window, format 1 held no base: the oldest value's consumption
    # gives it back
    r.feed([reading(h, f"{1000 + h:.3f}") for h in range(3, 25)])
    ch = r.state.channels["volume"]
    assert ch.base_value is not None
    unbased = msgspec.structs.replace(r.state, channels={"volume": msgspec.structs.replace(
        ch, base_value=None, base_ts=0)})
    fmt, valve, channels = msgspec.msgpack.decode(encode_state(unbased))
    old = msgspec.msgpack.encode([1, valve, [c[:-1] for c in channels]])
    assert decode_state(old) == r.state


def test_a_register_that_went_back_leaves_no_negative_day_total() -> None:
    # Regression (hypothesis, test_state_survives_encoding): a decrease nothing could
    # estimate stays questionable with its negative consumption; folded into its day's
    # total once evicted, the negative total read back as "no data" after encoding.
    values = ["10", "11", "10.2", "10.5", "10.8", "11.1", "11.4", "11.7", "12.0"]
    r = run("[negative_consumption]", [reading(h, v) for h, v in enumerate(values)],
            window_points=4)
    assert r.at(2).quality == "questionable"
    ch = r.state.channels["volume"]
    assert ch.days
    assert min(ch.days) >= 0
    assert ch.bad_days & 1 << (len(ch.days) - 1)  # never a like day
    assert decode_state(encode_state(r.state)) == r.state


def test_unknown_meters_are_validated_with_defaults() -> None:
    engine = VeeEngine(load_rule_set(default_rules_path()))
    meter = MeterInfo.unknown("NOPE-1")
    out = engine.process(reading(0, "1", meter="NOPE-1"), meter, None).outputs[0]
    assert "inactive_device" in out.flags
    assert out.quality == "questionable"
