"""Builders shared by the billing tests: golden tariff files, accounts, readings, top-ups."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from billing.engine import BillingEngine, MemoryStore
from billing.tariff_file import TariffFile, load_tariff_file
from billing.tariffs import TariffBook
from schemas.messages import (
    Dimensions,
    IntervalConsumption,
    LedgerAccount,
    TopUp,
    ValidatedReading,
)

DATA = Path(__file__).parents[1] / "data" / "billing"
TZ = ZoneInfo("Asia/Shanghai")
D = Decimal


def tariff_file(name: str) -> TariffFile:
    return load_tariff_file(DATA / name)


def book(*names: str) -> TariffBook:
    out = TariffBook(TZ)
    for name in names:
        for message in tariff_file(name).tariffs:
            out.add(message)
    return out


def local(day: date | str, hour: int = 0, minute: int = 0) -> datetime:
    """A local (Asia/Shanghai) wall-clock time as a UTC instant."""
    if isinstance(day, str):
        day = date.fromisoformat(day)
    return datetime.combine(day, time(hour, minute), tzinfo=TZ).astimezone(UTC)


def account(account_id: str = "ACC-1", **kw: Any) -> LedgerAccount:
    data: dict[str, Any] = {"customer_type": "residential", "billing_mode": "prepaid_money",
                            "tariff_id": "BJ-GAS-RES",
                            "updated_at": datetime(2020, 1, 1, tzinfo=UTC)}
    data.update(kw)
    return LedgerAccount(account_id=account_id, **data)


def engine(accounts: list[LedgerAccount], *tariff_files: str,
           **kw: Any) -> BillingEngine:
    return BillingEngine(tariffs=book(*(tariff_files or ("beijing_gas.yaml",))),
                         accounts={a.account_id: a for a in accounts}, store=MemoryStore(),
                         **kw)


def daily(meter: str, day: str, volume: str | Decimal, *, account_id: str = "ACC-1",
          version: int = 1, quality: str = "actual", tariff_id: str | None = None,
          flags: tuple[str, ...] = (), register: str = "volume") -> ValidatedReading:
    """A daily register read at local midnight ending ``day``, consumption over that day."""
    start = local(day)
    end = start + timedelta(days=1)
    return ValidatedReading(
        meter_id=meter, register=register, ts=end, value=None, unit="m3", version=version,
        quality=quality,  # type: ignore[arg-type]
        flags=flags, consumption=D(volume), interval_start=start,
        dims=Dimensions(account_id=account_id, tariff_id=tariff_id))


def span(meter: str, start: datetime, end: datetime, volume: str, *, account_id: str = "ACC-1",
         version: int = 1, quality: str = "actual") -> ValidatedReading:
    """A register-read period with no intervals."""
    return ValidatedReading(
        meter_id=meter, register="volume", ts=end, value=None, unit="m3", version=version,
        quality=quality,  # type: ignore[arg-type]
        consumption=D(volume), interval_start=start, dims=Dimensions(account_id=account_id))


def hourly(meter: str, start: datetime, volumes: list[str], *, account_id: str = "ACC-1",
           version: int = 1, estimated: tuple[int, ...] = (), quality: str = "actual",
           unit: str = "m3", register: str = "volume") -> ValidatedReading:
    """A reading with hourly intervals from ``start``; indexes in ``estimated`` estimated."""
    intervals = tuple(
        IntervalConsumption(start=start + timedelta(hours=i),
                            end=start + timedelta(hours=i + 1), volume=D(v),
                            estimated=i in estimated)
        for i, v in enumerate(volumes))
    end = start + timedelta(hours=len(volumes))
    return ValidatedReading(
        meter_id=meter, register=register, ts=end, value=None, unit=unit, version=version,
        quality=quality,  # type: ignore[arg-type]
        consumption=sum((D(v) for v in volumes), D(0)), interval_start=start,
        intervals=intervals, dims=Dimensions(account_id=account_id))


def top_up(top_up_id: str, amount: str, *, account_id: str = "ACC-1", kind: str = "top_up",
           volume: str | None = None, ts: datetime | None = None) -> TopUp:
    return TopUp(top_up_id=top_up_id, account_id=account_id, amount=D(amount),
                 ts=ts or datetime(2020, 6, 1, tzinfo=UTC),
                 kind=kind,  # type: ignore[arg-type]
                 volume=None if volume is None else D(volume))
