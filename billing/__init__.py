"""billing — the pure billing engine: tariffs, pricing, prepayment, settlement.

Start with :class:`~billing.engine.BillingEngine` (readings and top-ups in, messages out),
:class:`~billing.tariffs.TariffBook` (effective-dated tariff versions) and
:func:`~billing.tariff_file.load_tariff_file` (tariffs in YAML). No I/O happens here: the
faust agent in ``pipeline/billing_agent.py`` and the ``unimeter bill`` command drive it.
"""

from billing.engine import BillingEngine, BillingStore, MemoryStore, reading_key
from billing.errors import BillingError, TariffError
from billing.pricing import Piece, Pricer
from billing.settings import BillingSettings
from billing.state import AccountState, Outcome
from billing.tariff_file import TariffFile, load_tariff_file, parse_tariff_document
from billing.tariffs import TariffBook, TariffVersion

__all__ = [
    "AccountState",
    "BillingEngine",
    "BillingError",
    "BillingSettings",
    "BillingStore",
    "MemoryStore",
    "Outcome",
    "Piece",
    "Pricer",
    "TariffBook",
    "TariffError",
    "TariffFile",
    "TariffVersion",
    "load_tariff_file",
    "parse_tariff_document",
    "reading_key",
]
