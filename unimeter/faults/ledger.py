"""The ledger a fault run bills with: one postpaid account per simulated meter, a step tariff
per medium, written to the ``ledger.*`` topics for the pipeline and to a file for the oracle.

The tiers are small on purpose (a few m³ per month) so that a run of a few simulated days
crosses tier boundaries and the order in which consumption is priced matters — exactly what a
re-delivered or reordered reading could get wrong.

File format (``ledger.jsonl``): one envelope per line, as :func:`schemas.codec.encode` writes
it (``ledger.meter``, ``ledger.account``, ``ledger.tariff`` messages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from schemas import codec
from schemas.messages import LedgerAccount, LedgerMeter, LedgerTariff, Message, TariffTier

__all__ = ["FaultLedger", "build_ledger", "read_ledger"]

_TIERS: dict[str, tuple[tuple[str | None, str], ...]] = {
    "gas": (("5", "2.61"), ("12", "2.83"), (None, "4.23")),
    "water": (("3", "5.00"), ("6", "7.00"), (None, "9.00")),
    "heat": ((None, "0.35"),),
    "electricity": (("200", "0.4883"), ("400", "0.5383"), (None, "0.7883")),
}


@dataclass
class FaultLedger:
    meters: list[LedgerMeter] = field(default_factory=list)
    accounts: dict[str, LedgerAccount] = field(default_factory=dict)
    tariffs: list[LedgerTariff] = field(default_factory=list)

    @property
    def meter_accounts(self) -> dict[str, str]:
        return {m.meter_id: m.account_id for m in self.meters if m.account_id}

    def messages(self) -> list[Message]:
        return [*self.tariffs, *self.accounts.values(), *self.meters]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            for message in self.messages():
                fh.write(codec.encode(message, producer="faults") + b"\n")


def tariff_id_of(medium: str) -> str:
    return f"FAULTS-{medium.upper()}"


def build_ledger(meters: list[LedgerMeter], *, effective_from: datetime) -> FaultLedger:
    """Accounts and tariffs for ``meters`` (the fleet's ledger entries), billing from
    ``effective_from`` (the run's simulated start)."""
    ledger = FaultLedger()
    for medium in sorted({m.medium for m in meters}):
        tiers = tuple(TariffTier(upper=Decimal(u) if u else None, price=Decimal(p))
                      for u, p in _TIERS[medium])
        ledger.tariffs.append(LedgerTariff(
            tariff_id=tariff_id_of(medium), version=1, kind="step", medium=medium,
            unit="kWh" if medium == "electricity" else "m3", cycle="month",
            effective_from=effective_from, updated_at=effective_from, tiers=tiers))
    for meter in meters:
        account_id = f"ACC-{meter.meter_id}"
        ledger.accounts[account_id] = LedgerAccount(
            account_id=account_id, customer_type=meter.customer_type or "residential",
            billing_mode="postpaid", updated_at=effective_from,
            tariff_id=tariff_id_of(meter.medium), opened_at=effective_from)
        ledger.meters.append(LedgerMeter(**{
            **{f: getattr(meter, f) for f in meter.__struct_fields__},
            "account_id": account_id, "tariff_id": tariff_id_of(meter.medium)}))
    return ledger


def read_ledger(path: Path) -> FaultLedger:
    ledger = FaultLedger()
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            _, message = codec.decode(line.rstrip(b"\n"))
            if isinstance(message, LedgerMeter):
                ledger.meters.append(message)
            elif isinstance(message, LedgerAccount):
                ledger.accounts[message.account_id] = message
            elif isinstance(message, LedgerTariff):
                ledger.tariffs.append(message)
    return ledger
