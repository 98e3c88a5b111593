"""Stores: encoded tables and the write buffer the agent flushes after its sends."""

from __future__ import annotations

from datetime import UTC, datetime

from billing.engine import BillingEngine
from billing.state import AccountState, decode_state, encode_state
from billing.store import BufferedStore, DecodedCache, EncodedMapping
from tests.billing.helpers import D, account, book, daily

NOW = datetime(2020, 6, 10, tzinfo=UTC)


def _tables() -> tuple[dict[bytes, bytes], ...]:
    return {}, {}, {}, {}


def test_encoded_mapping_stores_bytes_and_returns_structs() -> None:
    raw: dict[bytes, bytes] = {}
    table = EncodedMapping(raw, AccountState)
    table["A"] = AccountState(account_id="A", balance=D("1.50"))
    assert raw[b"A"].startswith(b"{")
    assert table["A"].balance == D("1.50")
    assert "A" in table
    assert "B" not in table
    assert table.get("B") is None
    assert list(table) == ["A"]


def test_buffered_store_writes_nothing_until_flushed() -> None:
    tables = _tables()
    store = BufferedStore.over_tables(*tables)
    engine = BillingEngine(tariffs=book("beijing_gas.yaml"),
                           accounts={"ACC-1": account(opening_balance=D("50"))}, store=store)
    first = engine.bill_reading(daily("M", "2020-06-01", "8"), NOW)
    second = engine.bill_reading(daily("M", "2020-06-02", "10"), NOW)  # sees the first's state
    assert second.balances[-1].balance_after == D("50") - D("20.88") - D("26.10")
    assert all(not t for t in tables)
    store.flush()
    assert tables[0]
    assert tables[1]
    # a fresh buffer over the same tables continues from the flushed state, and a
    # re-delivery is recognised from the tables
    again = BillingEngine(tariffs=engine.tariffs, accounts=engine.accounts,
                          store=BufferedStore.over_tables(*tables))
    assert first.charges
    assert again.bill_reading(daily("M", "2020-06-01", "8"), NOW).status == "duplicate"


def test_discarded_batch_leaves_the_tables_as_they_were() -> None:
    tables = _tables()
    store = BufferedStore.over_tables(*tables)
    engine = BillingEngine(tariffs=book("beijing_gas.yaml"), accounts={"ACC-1": account()},
                           store=store)
    engine.bill_reading(daily("M", "2020-06-01", "8"), NOW)
    store.discard()
    store.flush()
    assert all(not t for t in tables)


def _decode(data: bytes) -> AccountState:
    return decode_state(data, AccountState)


def test_decoded_cache_hands_out_what_was_written_once_and_evicts_the_oldest_write() -> None:
    cache: DecodedCache[AccountState] = DecodedCache(2)
    states = {k: AccountState(account_id=k, balance=D("1.50")) for k in "ABC"}
    stored = {k: encode_state(v) for k, v in states.items()}
    cache.put("A", stored["A"], states["A"])
    cache.put("B", stored["B"], states["B"])
    cache.put("A", stored["A"], states["A"])  # written again: now the latest write
    cache.put("C", stored["C"], states["C"])  # full: B, the least recently written, leaves
    assert cache.take("B", stored["B"], _decode) is not states["B"]
    assert cache.take("A", stored["A"], _decode) is states["A"]
    assert cache.take("A", stored["A"], _decode) is not states["A"]  # taken out
    other = encode_state(AccountState(account_id="C", balance=D("9")))
    assert cache.take("C", other, _decode).balance == D("9")  # other bytes: decoded
    assert (cache.reused, cache.decoded, len(cache)) == (1, 3, 0)
    off: DecodedCache[AccountState] = DecodedCache(0)
    off.put("A", stored["A"], states["A"])
    assert len(off) == 0


def test_encoded_mapping_with_a_cache_reuses_only_what_it_wrote() -> None:
    raw: dict[bytes, bytes] = {}
    cache: DecodedCache[AccountState] = DecodedCache(10)
    table = EncodedMapping(raw, AccountState, cache)
    state = AccountState(account_id="A", balance=D("1.50"))
    table["A"] = state
    assert table["A"] is state
    assert table["A"] is not state  # the first read took it out; nothing put it back
    table["A"] = state
    raw[b"A"] = encode_state(AccountState(account_id="A", balance=D("2")))  # changed under it
    assert table["A"].balance == D("2")
    table["A"] = state
    del table["A"]
    assert len(cache) == 0
