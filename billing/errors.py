"""Errors of the billing engine: bad tariffs, unpriceable consumption, refused money movements.

Each error says what is wrong, where (tariff and version, account, reading key, file line) and
what to do next; the billing agent puts the input that raised it on ``dlq.billing`` with
:meth:`~schemas.errors.UnimeterError.to_dict` as the reason, so nothing is lost.
"""

from __future__ import annotations

from schemas.errors import UnimeterError

__all__ = [
    "BillingError",
    "BillingInputError",
    "NoPriceError",
    "NoTariffInForceError",
    "TariffError",
    "TariffFileError",
    "TopUpRefusedError",
    "UnknownAccountError",
    "UnknownTariffError",
    "UsageFileError",
]


class BillingError(UnimeterError):
    """Root of the billing engine's errors."""


class TariffError(BillingError):
    """A tariff version is inconsistent (tiers not increasing, components not summing …)."""


class TariffFileError(TariffError):
    """A tariff file cannot be read; ``where`` names the file and the entry."""


class UsageFileError(BillingError):
    """A usage CSV for the offline run is malformed; ``where`` names the file and line."""


class UnknownTariffError(BillingError):
    """Consumption names a tariff that billing has never been given."""


class NoTariffInForceError(BillingError):
    """A tariff exists, but no version of it is in force at the consumption's time."""


class NoPriceError(BillingError):
    """A real-time tariff has no price for an interval and no fallback price."""


class UnknownAccountError(BillingError):
    """A reading or top-up names an account the billing ledger does not know."""


class BillingInputError(BillingError):
    """A validated reading or a top-up cannot be billed as it is (negative consumption …)."""


class TopUpRefusedError(BillingError):
    """A top-up breaks an account rule (maximum balance, wrong sign); it was not applied."""
