"""The billing agent on the memory store: routing by account, the worked example through
the stream, re-delivery, dead letters, per-account order, and table partitions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from faust.streams import current_event

from billing.state import AccountState, decode_state
from pipeline.app import BatchResult, Incoming, PipelineApp
from pipeline.billing_agent import register
from schemas import codec
from schemas.messages import (
    Alert,
    BalanceChange,
    BillingControl,
    Charge,
    CommandRequest,
    DeadLetter,
    Dimensions,
    LedgerAccount,
    LedgerMeter,
    Message,
    Reading,
    Settlement,
    TopUp,
    ValidatedReading,
)
from tests.billing.helpers import daily, local, tariff_file

T0 = datetime(2020, 6, 1, tzinfo=UTC)


def _ledger(app: PipelineApp, **account: Any) -> None:
    for tariff in tariff_file("beijing_gas.yaml").tariffs:
        app.ledger.put(tariff)
    fields: dict[str, Any] = {
        "customer_type": "residential", "billing_mode": "prepaid_money", "updated_at": T0,
        "tariff_id": "BJ-GAS-RES", "opening_balance": Decimal("50.00"),
        "opening_cycle_volume": Decimal("345"), "opened_at": local("2020-06-01"),
        "alarm1": Decimal("30.00"), "alarm2": Decimal("10.00"),
        "overdraft_limit": Decimal("20.00")}
    fields.update(account)
    app.ledger.put(LedgerAccount(account_id="ACC-1", **fields))
    app.ledger.put(LedgerMeter(meter_id="GAS-1", status="active", medium="gas", updated_at=T0,
                               has_valve=True, account_id="ACC-1"))


def _enc(message: Message) -> bytes:
    return codec.encode(message, producer="test", event_time=T0)


async def _run(app: PipelineApp, name: str,
               records: list[tuple[bytes, bytes, int]]) -> None:
    app.faust.finalize()
    agent = app.faust.agents[name]
    async with agent.test_context() as ctx:
        for key, value, partition in records:
            await ctx.put(value, key=key, partition=partition)
        await asyncio.sleep(0.2)


def _out(app: PipelineApp, topic: str) -> list[Any]:
    return [codec.decode(o.value)[1] for o in app.sender.on(topic)]  # type: ignore[attr-defined]


def _reading(day: str, volume: str, **kw: Any) -> ValidatedReading:
    reading = daily("GAS-1", day, volume, **kw)
    return ValidatedReading(**{**{f: getattr(reading, f) for f in reading.__struct_fields__},
                               "validated_at": local(day) + timedelta(days=1, hours=1)})


async def test_route_forwards_billable_readings_keyed_by_account(recording_app) -> None:
    app = recording_app
    _ledger(app)
    register(app)
    billable = _enc(_reading("2020-06-01", "8"))
    flow = _enc(_reading("2020-06-01", "1", register="flow_rate"))
    orphan = _enc(_reading("2020-06-01", "1", account_id=""))
    await _run(app, "billing_route", [(b"GAS-1", billable, 0), (b"GAS-1", flow, 0),
                                      (b"GAS-1", orphan, 0)])
    forwarded = app.sender.on("billing.inbox")
    assert [(o.key, o.value) for o in forwarded] == [(b"ACC-1", billable)]


async def test_worked_example_through_the_agent(recording_app) -> None:
    app = recording_app
    _ledger(app)
    register(app)
    inputs: list[Message] = [_reading("2020-06-01", "8"), _reading("2020-06-02", "10"),
                             _reading("2020-06-03", "5"), _reading("2020-06-04", "3"),
                             TopUp(top_up_id="CIS-1", account_id="ACC-1",
                                   amount=Decimal("100.00"), ts=local("2020-06-05", 9))]
    await _run(app, "billing", [(b"ACC-1", _enc(m), 2) for m in inputs])
    charges = _out(app, "billing.charges")
    assert [c.amount for c in charges] == [Decimal(x) for x in ("21.54", "28.30", "14.15",
                                                                 "8.49")]
    balances = [b for b in _out(app, "billing.balances") if isinstance(b, BalanceChange)]
    assert [b.balance_after for b in balances] == [Decimal(x) for x in (
        "50.00", "28.46", "0.16", "-13.99", "-22.48", "77.52")]
    codes = [(a.code, a.state) for a in _out(app, "alerts") if isinstance(a, Alert)]
    assert codes[:4] == [("billing.alarm1", "raised"), ("billing.alarm2", "raised"),
                         ("billing.overdraft", "raised"), ("billing.cut_off", "raised")]
    commands = _out(app, "commands.requests")
    assert [(c.command, c.device_id, c.origin) for c in commands] == [
        ("valve_close", "GAS-1", "billing"), ("valve_arm_open", "GAS-1", "billing")]
    assert all(o.key == b"GAS-1" for o in app.sender.on("commands.requests"))
    settled = [s for s in _out(app, "billing.settlements") if isinstance(s, Settlement)]
    assert [s.period_id for s in settled] == ["2020-06-01", "2020-06-02", "2020-06-03"]
    # the state was written to the tables after the sends
    table = app.billing.tables[0]  # type: ignore[attr-defined]
    state = decode_state(table[b"ACC-1"], AccountState)
    assert state.balance == Decimal("77.52")
    assert state.supply == "on"


async def test_redelivered_inputs_change_nothing(recording_app) -> None:
    app = recording_app
    _ledger(app)
    register(app)
    reading = _enc(_reading("2020-06-01", "8"))
    top_up = _enc(TopUp(top_up_id="CIS-1", account_id="ACC-1", amount=Decimal("10"),
                        ts=local("2020-06-02")))
    await _run(app, "billing", [(b"ACC-1", reading, 0), (b"ACC-1", top_up, 0),
                                (b"ACC-1", reading, 0), (b"ACC-1", top_up, 0)])
    assert len(app.sender.on("billing.charges")) == 1
    assert len(app.sender.on("billing.balances")) == 3  # opening, charge, top-up
    state = decode_state(app.billing.tables[0][b"ACC-1"], AccountState)  # type: ignore[attr-defined]
    assert state.balance == Decimal("50.00") - Decimal("21.54") + Decimal("10")


async def test_bad_inputs_go_to_the_billing_dead_letter_topic(recording_app) -> None:
    app = recording_app
    _ledger(app)
    register(app)
    unknown = _enc(_reading("2020-06-01", "8", account_id="ACC-404"))
    negative = _enc(_reading("2020-06-02", "-3"))
    refund = _enc(TopUp(top_up_id="R", account_id="ACC-1", amount=Decimal("5"), kind="refund",
                        ts=T0))
    good = _enc(_reading("2020-06-03", "1"))
    await _run(app, "billing", [(b"ACC-404", unknown, 0), (b"ACC-1", negative, 0),
                                (b"ACC-1", refund, 0), (b"ACC-1", good, 0)])
    dead = [d for d in _out(app, "dlq.billing") if isinstance(d, DeadLetter)]
    assert [d.reason["error"] for d in dead] == ["UnknownAccountError", "BillingInputError",
                                                 "TopUpRefusedError"]
    assert dead[0].value == unknown
    assert dead[0].stage == "billing"
    assert len(_out(app, "billing.charges")) == 1


async def test_top_up_racing_with_consumption_is_applied_in_inbox_order(tmp_path) -> None:
    """Whatever order the inbox holds, each input sees the state left by the one before;
    the final balance is the same either way and the valve decisions follow the order."""
    from tests.pipeline.conftest import make_app

    def inputs(top_up_first: bool) -> list[Message]:
        cut = _reading("2020-06-01", "30")          # 50 - 78.30 < -20: a cut-off
        pay = TopUp(top_up_id="CIS-9", account_id="ACC-1", amount=Decimal("100"),
                    ts=local("2020-06-02"))
        return [pay, cut] if top_up_first else [cut, pay]

    results = {}
    for first in (True, False):
        app = make_app(tmp_path / str(first))
        _ledger(app, opening_cycle_volume=None)
        register(app)
        await _run(app, "billing", [(b"ACC-1", _enc(m), 1) for m in inputs(first)])
        state = decode_state(app.billing.tables[0][b"ACC-1"], AccountState)  # type: ignore[attr-defined]
        commands = [c.command for c in _out(app, "commands.requests")
                    if isinstance(c, CommandRequest)]
        results[first] = (state.balance, commands)
    assert results[True] == (Decimal("71.70"), [])
    assert results[False] == (Decimal("71.70"), ["valve_close", "valve_arm_open"])


async def test_settlement_clock_sends_settle_due_controls_that_settle(recording_app) -> None:
    app = recording_app
    _ledger(app, billing_mode="postpaid")
    register(app)
    await _run(app, "billing", [(b"ACC-1", _enc(_reading("2020-06-01", "8")), 0)])
    controls = app.billing.due_controls(local("2020-06-03"))  # type: ignore[attr-defined]
    assert [c.key for c in controls] == [b"ACC-1"]
    message = codec.decode(controls[0].value)[1]
    assert isinstance(message, BillingControl)
    assert message.action == "settle_due"
    app.sender.sent.clear()
    await _run(app, "billing", [(b"ACC-1", controls[0].value, 0)])
    settled = [s for s in _out(app, "billing.settlements") if isinstance(s, Settlement)]
    assert [(s.period, s.period_id) for s in settled] == [("day", "2020-06-01")]
    assert app.billing.due_controls(local("2020-06-03")) == []  # type: ignore[attr-defined]


async def test_batches_spanning_partitions_keep_each_key_in_its_partition(
        recording_app) -> None:
    """Regression: faust files table keys under the *current event's* partition; a batch
    from several partitions is handled partition by partition with the right event."""
    app = recording_app
    seen: list[tuple[int, int]] = []

    @app.batch_agent("readings.raw", Reading, name="t")
    def handle(batch: list[Incoming[Reading]]) -> BatchResult:
        event = current_event()
        assert event is not None
        seen.extend((item.partition, event.message.partition) for item in batch)
        return BatchResult()

    value = codec.encode(Reading(meter_id="M", register="volume", ts=T0, value=Decimal(1),
                                 unit="m3", received_at=T0), producer="t")
    await _run(app, "t", [(b"A", value, 0), (b"B", value, 3), (b"C", value, 0),
                          (b"D", value, 5)])
    assert len(seen) == 4
    assert all(item == current for item, current in seen)


def test_output_topics_cover_every_engine_output() -> None:
    from pipeline.billing_agent import OUTPUT_TOPICS
    assert set(OUTPUT_TOPICS) == {Charge, BalanceChange, Settlement, Alert, CommandRequest}
    assert Dimensions  # the reading builder above attaches accounts through dims


async def test_safety_close_events_lock_the_account_and_block_rearming(recording_app) -> None:
    from schemas.messages import DeviceEvent
    app = recording_app
    _ledger(app)
    register(app)
    leak = DeviceEvent(event_id="ev-7", device_id="GAS-1", kind="valve_changed",
                       ts=local("2020-06-01", 3), meter_id="GAS-1",
                       attributes={"valve": "closed", "cause": "leak"})
    status = DeviceEvent(event_id="ev-8", device_id="GAS-1", kind="status", ts=T0,
                         attributes={"valve": "open"})
    await _run(app, "billing_events", [(b"GAS-1", _enc(leak), 0), (b"GAS-1", _enc(status), 0)])
    forwarded = app.sender.on("billing.inbox")
    assert [o.key for o in forwarded] == [b"ACC-1"]
    control = codec.decode(forwarded[0].value)[1]
    assert isinstance(control, BillingControl)
    assert (control.action, control.reason, control.meter_id) == ("safety_lock", "leak", "GAS-1")
    app.sender.sent.clear()
    inputs: list[bytes] = [forwarded[0].value, _enc(_reading("2020-06-01", "30")),
                           _enc(TopUp(top_up_id="T", account_id="ACC-1",
                                      amount=Decimal("200"), ts=local("2020-06-02")))]
    await _run(app, "billing", [(b"ACC-1", value, 0) for value in inputs])
    commands = [c.command for c in _out(app, "commands.requests")]
    assert commands == ["valve_close"]  # the debt close, but no arming after the top-up
    codes = [a.code for a in _out(app, "alerts") if isinstance(a, Alert)]
    assert "billing.reconnect_blocked" in codes
