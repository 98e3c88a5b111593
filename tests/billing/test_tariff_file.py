"""Tariff files: the golden files load, errors name the entry, the format round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing.errors import TariffFileError
from billing.tariff_file import load_tariff_file, parse_tariff_document, tariff_document
from tests.billing.helpers import DATA, D, local


@pytest.mark.parametrize("path", sorted(DATA.glob("*.yaml")), ids=lambda p: p.stem)
def test_golden_tariff_files_load_and_round_trip(path: Path) -> None:
    loaded = load_tariff_file(path)
    assert loaded.tariffs
    doc = tariff_document(list(loaded.tariffs), timezone=loaded.timezone.key)
    again = parse_tariff_document(doc)
    assert sorted(again.tariffs, key=lambda t: (t.tariff_id, t.version)) == sorted(
        (t for t in loaded.tariffs), key=lambda t: (t.tariff_id, t.version))


def test_versions_inherit_tariff_keys_and_dates_are_local_midnights() -> None:
    loaded = load_tariff_file(DATA / "beijing_gas.yaml")
    v2 = next(t for t in loaded.tariffs if t.tariff_id == "BJ-GAS-RES" and t.version == 2)
    assert v2.effective_from == local("2018-07-10")
    assert (v2.kind, v2.cycle, v2.medium) == ("step", "year", "gas")
    assert [t.price for t in v2.tiers] == [D("2.63"), D("2.85"), D("4.25")]


def test_accounts_in_a_tariff_file_become_ledger_accounts() -> None:
    doc = {"tariffs": [{"tariff_id": "T", "effective_from": "2026-01-01",
                        "tiers": [{"price": 3}]}],
           "accounts": [{"account_id": "A", "tariff_id": "T", "tier_override": {1: 450},
                         "opening_cycle_volume": 330.5, "billing_mode": "prepaid_money"}]}
    loaded = parse_tariff_document(doc)
    acc = loaded.accounts[0]
    assert acc.tier_override == {"1": D("450")}
    assert acc.opening_cycle_volume == D("330.5")
    assert acc.billing_mode == "prepaid_money"


@pytest.mark.parametrize(("doc", "where", "message"), [
    ({"tariffs": [{"tariff_id": "T", "effective_from": "2026-01-01",
                   "tiers": [{"upper": 10, "price": 1}]}]}, "tariff T v1", "must be open"),
    ({"tariffs": [{"tariff_id": "T", "tiers": [{"price": 1}]}]}, "tariff T v1",
     "effective_from is missing"),
    ({"tariffs": [{"tariff_id": "T", "effective_from": "2026-01-01", "tier": []}]},
     "tariff T", "unknown keys"),
    ({"tariffs": [{"tariff_id": "T", "effective_from": "2026-01-01",
                   "tiers": [{"price": "abc"}]}]}, "tariff T v1", "not a decimal"),
    ({"tariffs": [{"tariff_id": "T", "versions": [
        {"effective_from": "2026-01-01", "tiers": [{"price": 1}]},
        {"effective_from": "2026-07-01", "kind": "tou", "tou": {"periods": {"p": 1},
                                                              "schedule": []}}]}]},
     "tariff T v2", "schedule"),
    ({"tariff": []}, "tariff file", "'tariffs' list"),
])
def test_errors_name_the_entry(doc: object, where: str, message: str) -> None:
    with pytest.raises(TariffFileError, match=message) as info:
        parse_tariff_document(doc)
    assert where in (info.value.where or "")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(TariffFileError, match="cannot read"):
        load_tariff_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tariffs: [\n")
    with pytest.raises(TariffFileError, match="not valid YAML"):
        load_tariff_file(bad)
