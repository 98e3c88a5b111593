"""The billing agent's decoded account states kept between batches
(``pipeline.billing_state_cache``): the same outputs and tables as decoding every batch, a
table changed underneath is decoded again, and a batch never written leaks nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from billing.state import AccountState, decode_state
from pipeline.app import Incoming
from pipeline.billing_agent import BillingWiring
from schemas import codec
from schemas.messages import LedgerAccount, LedgerMeter, Message, TopUp, ValidatedReading
from tests.billing.helpers import daily, local, tariff_file
from tests.pipeline.conftest import make_app

Tables = tuple[dict[bytes, bytes], ...]
ACCOUNTS = ("ACC-1", "ACC-2")


def _wiring(tmp_path: Path, tables: Tables, cache: int = 10_000) -> BillingWiring:
    app = make_app(tmp_path, billing_state_cache=cache)
    for tariff in tariff_file("beijing_gas.yaml").tariffs:
        app.ledger.put(tariff)
    for n, account_id in enumerate(ACCOUNTS, 1):
        app.ledger.put(LedgerAccount(
            account_id=account_id, customer_type="residential", billing_mode="prepaid_money",
            updated_at=local("2020-05-01"), tariff_id="BJ-GAS-RES",
            opening_balance=Decimal("60.00"), opening_cycle_volume=Decimal("340"),
            opened_at=local("2020-06-01"), alarm1=Decimal("30.00"), alarm2=Decimal("10.00"),
            overdraft_limit=Decimal("20.00")))
        app.ledger.put(LedgerMeter(meter_id=f"GAS-{n}", status="active", medium="gas",
                                   updated_at=local("2020-05-01"), has_valve=True,
                                   account_id=account_id))
    wiring = BillingWiring(app)
    wiring.tables = tables
    return wiring


def _tables() -> Tables:
    return {}, {}, {}, {}


def _copy(tables: Tables) -> Tables:
    return tuple(dict(t) for t in tables)


def _day(day: str, *extra: Message) -> list[Incoming[Any]]:
    """Each account's daily read for ``day`` (and ``extra`` inputs), as the inbox gives them."""
    messages: list[Message] = []
    for n, account_id in enumerate(ACCOUNTS, 1):
        reading = daily(f"GAS-{n}", day, f"{n + 3}.5", account_id=account_id)
        messages.append(ValidatedReading(**{
            **{f: getattr(reading, f) for f in reading.__struct_fields__},
            "validated_at": local(day) + timedelta(days=1, hours=1)}))
    messages.extend(extra)
    batch: list[Incoming[Any]] = []
    for offset, message in enumerate(messages):
        raw = codec.encode(message, producer="test")
        batch.append(Incoming(codec.decode(raw)[1], message.key(), "billing.inbox", 0, offset,
                              raw))
    return batch


def _bill(wiring: BillingWiring, batch: list[Incoming[Any]], *,
          write: bool = True) -> list[tuple[str, bytes | None, bytes]]:
    result = wiring.bill(batch)
    if write and result.after_send is not None:
        result.after_send()
    return [(o.topic, o.key, o.value) for o in result.outputs]


def _balance(tables: Tables, account_id: str) -> Decimal:
    return decode_state(tables[0][account_id.encode()], AccountState).balance


def test_reused_states_give_the_outputs_and_tables_that_decoding_gives(tmp_path: Path) -> None:
    cached, decoding = _tables(), _tables()
    with_cache = _wiring(tmp_path / "a", cached)
    without = _wiring(tmp_path / "b", decoding, cache=0)
    days = [f"2020-06-{d:02d}" for d in range(1, 9)]
    top_up = TopUp(top_up_id="CIS-7", account_id="ACC-2", amount=Decimal("25.00"),
                   ts=local("2020-06-04", 9))
    for day in days:
        batch = _day(day, top_up) if day == "2020-06-04" else _day(day)
        assert _bill(with_cache, batch) == _bill(without, batch)
        assert cached == decoding
    assert with_cache.account_cache.reused == len(ACCOUNTS) * (len(days) - 1)
    assert with_cache.account_cache.decoded == 0  # new accounts; afterwards what it wrote
    assert without.account_cache.reused == 0
    assert without.account_cache.decoded == len(ACCOUNTS) * (len(days) - 1)
    # re-delivered readings (duplicates) still come out the same
    assert _bill(with_cache, _day("2020-06-03")) == _bill(without, _day("2020-06-03"))


def test_an_account_changed_underneath_is_decoded_again(tmp_path: Path) -> None:
    """A rebalance's restore or another writer leaves other bytes in the table: the worker
    must bill from them, not from the state it remembers."""
    tables = _tables()
    wiring = _wiring(tmp_path / "a", tables)
    for day in ("2020-06-01", "2020-06-02"):
        _bill(wiring, _day(day))
    other = _wiring(tmp_path / "b", tables)  # another worker, the same partition's tables
    top_up = TopUp(top_up_id="CIS-9", account_id="ACC-1", amount=Decimal("40.00"),
                   ts=local("2020-06-03", 8))
    _bill(other, _day("2020-06-03", top_up))
    reference = _wiring(tmp_path / "c", _copy(tables), cache=0)
    decoded = wiring.account_cache.decoded
    assert _bill(wiring, _day("2020-06-04")) == _bill(reference, _day("2020-06-04"))
    assert wiring.account_cache.decoded == decoded + len(ACCOUNTS)
    assert _balance(tables, "ACC-1") == _balance(reference.tables, "ACC-1")


def test_a_batch_never_written_leaves_no_changed_state_behind(tmp_path: Path) -> None:
    """The engine changes account states in place: a batch whose outputs were never
    acknowledged (so never flushed) must not leak its changes into the next batch."""
    tables, reference_tables = _tables(), _tables()
    wiring = _wiring(tmp_path / "a", tables)
    reference = _wiring(tmp_path / "b", reference_tables, cache=0)
    for day in ("2020-06-01", "2020-06-02"):
        assert _bill(wiring, _day(day)) == _bill(reference, _day(day))
    before = _copy(tables)
    _bill(wiring, _day("2020-06-03"), write=False)  # handled, never acknowledged
    assert tables == before
    # faust delivers the batch again: the same outputs, the same tables as a single pass
    assert _bill(wiring, _day("2020-06-03")) == _bill(reference, _day("2020-06-03"))
    assert _bill(wiring, _day("2020-06-04")) == _bill(reference, _day("2020-06-04"))
    assert tables == reference_tables
