"""The billing agent against the real broker: a `unimeter pipeline --agents billing` worker on
RocksDB, fed through the real topics, killed with SIGKILL and restarted (integration)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import codec
from schemas.messages import (
    Alert,
    BalanceChange,
    Charge,
    CommandRequest,
    LedgerAccount,
    LedgerMeter,
    Message,
    TopUp,
    ValidatedReading,
)
from schemas.settings import KafkaSettings
from tests.billing.helpers import daily, local, tariff_file

pytestmark = pytest.mark.integration

T0 = datetime(2020, 1, 1, tzinfo=UTC)
OUT_TOPICS = ("billing.charges", "billing.balances", "alerts", "commands.requests",
              "dlq.billing")


def _account(account_id: str) -> LedgerAccount:
    return LedgerAccount(account_id=account_id, customer_type="residential",
                         billing_mode="prepaid_money", updated_at=T0, tariff_id="BJ-GAS-RES",
                         opening_balance=Decimal("50.00"), opening_cycle_volume=Decimal("345"),
                         opened_at=local("2020-06-01"), alarm1=Decimal("30.00"),
                         alarm2=Decimal("10.00"), overdraft_limit=Decimal("20.00"))


def _reading(meter: str, account: str, day: str, volume: str) -> ValidatedReading:
    r = daily(meter, day, volume, account_id=account)
    return ValidatedReading(**{**{f: getattr(r, f) for f in r.__struct_fields__},
                               "validated_at": local(day) + timedelta(days=1, hours=1)})


@contextlib.contextmanager
def _worker(kafka: KafkaSettings, data_dir: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    # Static group membership (faust reads CONSUMER_GROUP_INSTANCE_ID): the restarted worker
    # takes over the killed one's member at once. Without it the restart waited for the killed
    # member's session to expire (60 s, measured 51 s in the join), then rebalanced — the
    # wait that ran this test into its time limits on a loaded machine.
    env = {**os.environ, "UNIMETER_KAFKA_BOOTSTRAP": kafka.bootstrap,
           "UNIMETER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
           "UNIMETER_KAFKA_DEFAULT_PARTITIONS": str(kafka.default_partitions),
           "UNIMETER_PIPELINE_LEDGER_WAIT_S": "60", "UNIMETER_PIPELINE_LOG_LEVEL": "info",
           "CONSUMER_GROUP_INSTANCE_ID": f"{kafka.topic_prefix}billing-worker-0"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unimeter", "pipeline", "--agents", "billing", "--store",
             "rocksdb://", "--data-dir", str(data_dir)], env=env, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Collector:
    """Everything the worker publishes on the output topics, decoded, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | None, Message]] = []

    def of(self, cls: type[Any], account: str | None = None) -> list[Any]:
        return [m for _, _, m in self.messages if isinstance(m, cls)
                and (account is None or getattr(m, "account_id", None) == account
                     or getattr(m, "object_id", None) == account
                     or (isinstance(m, CommandRequest)
                         and m.command_id.startswith(f"billing:{account}:")))]

    async def until(self, predicate: Any, seconds: float, what: str) -> None:
        for _ in range(int(seconds * 10)):
            if predicate():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; got "
                             f"{[(t, type(m).__name__) for t, _, m in self.messages]}")


@contextlib.asynccontextmanager
async def _collect(kafka: KafkaSettings) -> AsyncIterator[_Collector]:
    collector = _Collector()
    consumer = AIOKafkaConsumer(*(kafka.topic(t) for t in OUT_TOPICS),
                                bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()

    async def pump() -> None:
        async for record in consumer:
            _, message = codec.decode(record.value)
            collector.messages.append((record.topic, record.key, message))

    task = asyncio.create_task(pump())
    try:
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


async def test_worked_example_duplicates_race_and_restart_through_the_broker(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    acc, meter = f"ACC-{tag}", f"ACC-{tag}-GAS"
    racer, racer_meter = f"ACC-{tag}-R", f"ACC-{tag}-R-GAS"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap, acks="all")
    await producer.start()

    async def send(topic: str, message: Message) -> None:
        await producer.send_and_wait(kafka_settings.topic(topic),
                                     codec.encode(message, producer="test"), key=message.key())

    log = tmp_path / "worker.log"
    try:
        for tariff in tariff_file("beijing_gas.yaml").tariffs:
            await send("ledger.tariffs", tariff)
        for account_id, meter_id in ((acc, meter), (racer, racer_meter)):
            await send("ledger.accounts", _account(account_id))
            await send("ledger.meters", LedgerMeter(meter_id=meter_id, status="active",
                                                    medium="gas", updated_at=T0,
                                                    has_valve=True, account_id=account_id))
        async with _collect(kafka_settings) as out:
            with _worker(kafka_settings, tmp_path / "state", log) as proc:
                # the worked example: four daily reads, then a top-up
                for day, volume in (("2020-06-01", "8"), ("2020-06-02", "10"),
                                    ("2020-06-03", "5"), ("2020-06-04", "3")):
                    await send("readings.validated", _reading(meter, acc, day, volume))
                await out.until(lambda: len(out.of(Charge, acc)) >= 4, 180,
                                "the four charges")
                await send("billing.topups", TopUp(top_up_id=f"T-{tag}", account_id=acc,
                                                   amount=Decimal("100.00"),
                                                   ts=local("2020-06-05", 9)))
                # a re-delivered reading, and a top-up racing with a cut-off reading
                await send("readings.validated", _reading(meter, acc, "2020-06-02", "10"))
                await asyncio.gather(
                    send("readings.validated", _reading(racer_meter, racer, "2020-06-01", "30")),
                    send("billing.topups", TopUp(top_up_id=f"T-{tag}-R", account_id=racer,
                                                 amount=Decimal("100"),
                                                 ts=local("2020-06-02"))))
                await out.until(lambda: len(out.of(BalanceChange, racer)) >= 3
                                and any(c.command == "valve_arm_open"
                                        for c in out.of(CommandRequest, acc)), 120,
                                "top-up, duplicate and race outcomes")
                assert proc.poll() is None, log.read_text()
                proc.send_signal(signal.SIGKILL)  # a crash: no clean shutdown, no final commit
                proc.wait()

            charges = out.of(Charge, acc)
            assert [c.amount for c in charges] == [Decimal(x) for x in (
                "21.54", "28.30", "14.15", "8.49")]          # the re-delivery charged nothing
            entries = out.of(BalanceChange, acc)
            by_id = {b.entry_id: b for b in entries}
            assert len(entries) == len(by_id) == 6           # opening, 4 charges, top-up
            assert by_id[f"{acc}:top_up:T-{tag}"].balance_after == Decimal("77.52")
            assert [(c.command, c.device_id) for c in out.of(CommandRequest, acc)] == [
                ("valve_close", meter), ("valve_arm_open", meter)]
            codes = {a.code for a in out.of(Alert, acc)}
            assert {"billing.alarm1", "billing.alarm2", "billing.overdraft",
                    "billing.cut_off", "billing.reconnect"} <= codes
            # the race: whichever came first, both applied once, in one order
            racer_final = out.of(BalanceChange, racer)[-1].balance_after
            # 30 m³ from 345 in the cycle: 5 × 2.61 + 25 × 2.83 = 83.80
            assert racer_final == Decimal("50.00") - Decimal("83.80") + Decimal("100")
            racer_commands = [c.command for c in out.of(CommandRequest, racer)]
            assert racer_commands in ([], ["valve_close", "valve_arm_open"])

            # restart after the crash: the state comes back from RocksDB and the changelog,
            # and input whose offsets were not committed is replayed without charging again
            with _worker(kafka_settings, tmp_path / "state", log) as proc:
                await send("readings.validated", _reading(meter, acc, "2020-06-01", "8"))
                await send("readings.validated", _reading(meter, acc, "2020-06-05", "2"))
                await out.until(lambda: any(c.reading_ts == local("2020-06-06")
                                            for c in out.of(Charge, acc)), 240,
                                "the charge after the restart")
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            charges = out.of(Charge, acc)
            assert len({c.charge_id for c in charges}) == 5  # the replayed day 1: no charge
            new = [c for c in charges if c.reading_ts == local("2020-06-06")]
            assert [c.amount for c in new] == [Decimal("5.66")]     # 2 m³ in tier 2
            distinct = {b.entry_id: b for b in out.of(BalanceChange, acc)}
            assert len(distinct) == 7
            assert distinct[f"{acc}:consumption:{new[0].charge_id}"].balance_after == \
                Decimal("71.86")
            # (other tests of the session publish top-ups of their own accounts, which this
            # worker dead-letters as unknown; none of ours may be among them)
            assert not [m for t, key, m in out.messages if t.endswith("dlq.billing")
                        and key is not None and tag.encode() in key]
    finally:
        await producer.stop()
