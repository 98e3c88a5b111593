"""The ledger view: versions, tombstones, rejects, tariffs in force, RocksDB persistence."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from pipeline.ledger import LedgerView, MemoryLedgerStore, RocksLedgerStore
from schemas import codec
from schemas.messages import LedgerAccount, LedgerMeter, LedgerTariff, LedgerVeeGroup, TariffTier

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _meter(version: int, account: str = "A1") -> LedgerMeter:
    return LedgerMeter(meter_id="GM-1", status="active", medium="gas", updated_at=T0,
                       account_id=account, customer_type="residential", qmax=Decimal("6"),
                       ledger_version=version)


def _tariff(version: int, month: int) -> LedgerTariff:
    return LedgerTariff(tariff_id="BJ-GAS", version=version, kind="step",
                        effective_from=datetime(2026, month, 1, tzinfo=UTC), updated_at=T0,
                        tiers=(TariffTier(upper=None, price=Decimal("2.61")),))


def _enc(message: object) -> bytes:
    return codec.encode(message, producer="test")  # type: ignore[arg-type]


def test_newer_version_replaces_older_and_older_is_ignored() -> None:
    view = LedgerView()
    assert view.apply("ledger.meters", b"GM-1", _enc(_meter(5, "A1")), offset=0)
    assert view.meter("GM-1").account_id == "A1"  # type: ignore[union-attr]
    assert not view.apply("ledger.meters", b"GM-1", _enc(_meter(4, "OLD")), offset=1)
    assert view.meter("GM-1").account_id == "A1"  # type: ignore[union-attr]
    assert view.apply("ledger.meters", b"GM-1", _enc(_meter(6, "A2")), offset=2)
    assert view.meter("GM-1").account_id == "A2"  # type: ignore[union-attr]
    assert view.stored_offset("ledger.meters", 0) == 2


def test_tombstone_removes_the_entity() -> None:
    view = LedgerView()
    view.apply("ledger.accounts", b"A1", _enc(LedgerAccount(
        account_id="A1", customer_type="residential", billing_mode="prepaid_money",
        updated_at=T0)))
    assert view.account("A1") is not None
    assert view.apply("ledger.accounts", b"A1", None)
    assert view.account("A1") is None
    assert view.account("nobody") is None


def test_undecodable_record_is_rejected_with_the_reason_and_changes_nothing() -> None:
    rejected = []
    view = LedgerView(on_reject=lambda *args: rejected.append(args))
    view.apply("ledger.meters", b"GM-1", _enc(_meter(1)))
    assert not view.apply("ledger.meters", b"GM-1", b"{not json", partition=2, offset=7)
    # a valid envelope of the wrong type on the topic is refused too
    assert not view.apply("ledger.meters", b"GM-1", _enc(_tariff(1, 1)), offset=8)
    assert view.meter("GM-1") is not None
    assert [(r[0], r[3], r[4]) for r in rejected] == [("ledger.meters", 2, 7),
                                                      ("ledger.meters", 0, 8)]
    assert "expected schema" in rejected[1][5].message
    assert view.rejected == 2


def test_tariff_in_force_at_a_time() -> None:
    view = LedgerView()
    view.put(_tariff(1, 1))
    view.put(_tariff(2, 7))
    assert [t.version for t in view.tariff_versions("BJ-GAS")] == [1, 2]
    assert view.tariff_at("BJ-GAS", datetime(2026, 6, 30, tzinfo=UTC)).version == 1  # type: ignore[union-attr]
    assert view.tariff_at("BJ-GAS", datetime(2026, 7, 1, tzinfo=UTC)).version == 2  # type: ignore[union-attr]
    assert view.tariff_at("BJ-GAS", datetime(2025, 1, 1, tzinfo=UTC)) is None
    view.apply("ledger.tariffs", b"BJ-GAS:2", None)
    assert view.tariff_at("BJ-GAS", datetime(2026, 7, 1, tzinfo=UTC)).version == 1  # type: ignore[union-attr]


def test_vee_group_changes_bump_the_revision() -> None:
    view = LedgerView()
    before = view.vee_groups_revision
    view.put(LedgerVeeGroup(group_id="gas-res", version=1, spec="rules: [spike]", updated_at=T0))
    assert view.vee_groups_revision == before + 1
    assert set(view.vee_groups()) == {"gas-res"}


def test_cache_is_bounded_and_reads_fall_back_to_the_store() -> None:
    store = MemoryLedgerStore()
    view = LedgerView(store, cache_size=2)
    for i in range(5):
        view.put(LedgerMeter(meter_id=f"M{i}", status="active", medium="water", updated_at=T0))
    assert len(view._cache) == 2
    assert view.meter("M0").meter_id == "M0"  # type: ignore[union-attr]


def test_rocksdb_store_survives_a_restart(tmp_path: Path) -> None:
    view = LedgerView(RocksLedgerStore(tmp_path / "ledger"))
    view.apply("ledger.meters", b"GM-1", _enc(_meter(3)), partition=1, offset=41)
    view.put(_tariff(1, 1))
    view.close()
    again = LedgerView(RocksLedgerStore(tmp_path / "ledger"))
    assert again.meter("GM-1").ledger_version == 3  # type: ignore[union-attr]
    assert again.stored_offset("ledger.meters", 1) == 41
    assert [t.version for t in again.tariff_versions("BJ-GAS")] == [1]
    # the version held in the store still protects against an older record
    assert not again.apply("ledger.meters", b"GM-1", _enc(_meter(2)))
    again.close()
