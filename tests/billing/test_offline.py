"""The offline run: usage files priced by the engine, and their errors."""

from __future__ import annotations

import pytest

from billing.errors import UsageFileError
from billing.offline import bill_usage, parse_usage
from tests.billing.helpers import DATA, TZ, D, local, tariff_file


def _run(lines: list[str], name: str = "beijing_gas.yaml", **kw: object):  # type: ignore[no-untyped-def]
    return bill_usage(tariff_file(name), parse_usage(lines, TZ), **kw)  # type: ignore[arg-type]


def test_worked_examples_file_matches_every_expected_amount() -> None:
    with open(DATA / "usage_worked_examples.csv", encoding="utf-8") as fh:
        run = bill_usage(tariff_file("beijing_gas.yaml"), parse_usage(fh, TZ),
                         default_tariff_id="BJ-GAS-RES")
    assert [r.matches for r in run.results] == [True] * 4
    assert run.totals["DAILY"].amount == D("74.70")
    assert run.totals["PRORATE"].amount == D("73.65")


def test_rows_are_priced_in_time_order_so_tiers_accumulate() -> None:
    run = _run(["account_id,ts,volume", "A,2020-03-01,200", "A,2020-02-01,200"],
               default_tariff_id="BJ-GAS-RES")
    assert [r.row.line for r in run.results] == [3, 2]
    assert run.results[1].charge.amount == D("150") * D("2.61") + D("50") * D("2.83")


def test_cycle_volume_option_starts_an_account_mid_cycle() -> None:
    run = _run(["account_id,ts,volume", "A,2020-05-31,60"], default_tariff_id="BJ-GAS-RES",
               opening_cycle_volumes={"A": D("330")})
    assert run.results[0].charge.amount == D("165.40")


def test_a_differing_expected_amount_is_reported() -> None:
    run = _run(["account_id,ts,volume,expected_amount", "A,2020-05-31,5,13.04"],
               default_tariff_id="BJ-GAS-RES")
    assert [r.row.line for r in run.mismatches] == [2]


def test_local_times_without_offset_use_the_file_zone() -> None:
    rows = parse_usage(["account_id,ts,volume", "A,2020-05-31 08:00,1"], TZ)
    assert rows[0].ts == local("2020-05-31", 8)


@pytest.mark.parametrize(("lines", "where", "message"), [
    (["account,ts,volume"], "usage:1", "missing column"),
    (["account_id,ts,volume,colour"], "usage:1", "unknown column"),
    (["account_id,ts,volume", "A,yesterday,1"], "usage:2", "not an ISO 8601"),
    (["account_id,ts,volume", "A,2020-01-01,1", "A,2020-01-02,x"], "usage:3", "not a decimal"),
    (["account_id,ts,volume,start", "A,2020-01-01,1,2020-02-01"], "usage:2", "after ts"),
])
def test_usage_errors_name_the_line(lines: list[str], where: str, message: str) -> None:
    with pytest.raises(UsageFileError, match=message) as info:
        parse_usage(lines, TZ)
    assert info.value.where == where


def test_duplicate_rows_and_missing_tariff_are_refused() -> None:
    with pytest.raises(UsageFileError, match="second row for meter A"):
        _run(["account_id,ts,volume", "A,2020-01-01,1", "A,2020-01-01,2"],
             default_tariff_id="BJ-GAS-RES")
    with pytest.raises(UsageFileError, match="no tariff for account A"):
        _run(["account_id,ts,volume", "A,2020-01-01,1"])


def test_engine_errors_carry_the_usage_line() -> None:
    with pytest.raises(Exception, match="line 2") as info:
        _run(["account_id,ts,volume", "A,2010-01-01,1"], default_tariff_id="BJ-GAS-RES")
    assert "no version of tariff" in str(info.value)
