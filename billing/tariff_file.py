"""Tariff files: a utility's tariffs (and test accounts) in YAML, read into ledger messages.

The format is documented in ``docs/tariff-file.md``; in short::

    timezone: Asia/Shanghai            # dates without a time are local midnights here
    tariffs:
      - tariff_id: BJ-GAS-RES
        medium: gas                    # gas | water | heat | electricity
        unit: m3
        currency: CNY
        kind: step                     # step | flat | tou | realtime
        cycle: year                    # year | month
        cycle_start: "01-01"           # MM-DD (day 1–28)
        versions:
          - version: 1
            effective_from: 2018-01-01
            tiers:
              - {upper: 350, price: "2.28"}
              - {upper: 500, price: "2.48"}
              - {price: "3.88"}        # the last tier is open
          - version: 2
            effective_from: 2018-07-10
            tiers: [...]
    accounts:                          # optional: accounts for `unimeter bill`
      - {account_id: A-1, tariff_id: BJ-GAS-RES, tier_override: {1: 450},
         opening_cycle_volume: 330}

Every key of a tariff (``kind``, ``cycle``, ``tiers``, ``tou`` …) may be given once for all
versions and overridden per version; a tariff without ``versions`` is one version (1).
Each version becomes one :class:`~schemas.messages.LedgerTariff` — the same message the
ledger sync publishes on ``ledger.tariffs`` — and is compiled here, so a wrong file fails
when it is read, naming the entry, never later while billing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from billing.errors import TariffError, TariffFileError
from billing.money import to_decimal
from billing.tariffs import TariffBook
from schemas.messages import LedgerAccount, LedgerTariff, TariffTier

__all__ = ["TariffFile", "load_tariff_file", "parse_tariff_document", "tariff_document"]

_TARIFF_KEYS = {"tariff_id", "name", "description", "medium", "unit", "currency", "kind",
                "cycle", "cycle_start", "cycle_start_month", "cycle_start_day", "tiers", "tou",
                "versions", "effective_from", "effective_to", "version"}
_ACCOUNT_DEFAULTS = {"customer_type": "residential", "billing_mode": "postpaid"}


@dataclass(frozen=True)
class TariffFile:
    """What a tariff file holds: tariff versions, optional accounts, and its time zone."""

    tariffs: tuple[LedgerTariff, ...]
    accounts: tuple[LedgerAccount, ...]
    timezone: ZoneInfo

    def book(self) -> TariffBook:
        return TariffBook(self.timezone, self.tariffs)


def load_tariff_file(path: str | Path, default_timezone: str = "Asia/Shanghai") -> TariffFile:
    """Read and check a tariff file; :class:`TariffFileError` names the file and entry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TariffFileError(f"cannot read the tariff file: {exc.strerror}", where=str(path),
                              hint="check the path") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TariffFileError(f"not valid YAML: {exc}", where=str(path),
                              hint="fix the YAML syntax") from None
    return parse_tariff_document(doc, where=str(path), default_timezone=default_timezone)


def parse_tariff_document(doc: Any, *, where: str = "tariff file",
                          default_timezone: str = "Asia/Shanghai") -> TariffFile:
    """Turn a parsed tariff document (a mapping) into ledger messages, checking each."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("tariffs"), list):
        raise TariffFileError("a tariff file is a mapping with a 'tariffs' list", where=where,
                              hint="see docs/tariff-file.md for the format")
    tz_name = str(doc.get("timezone") or default_timezone)
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TariffFileError(f"unknown time zone {tz_name!r}", where=f"{where}: timezone",
                              hint="use an IANA name such as Asia/Shanghai") from None
    book = TariffBook(tz)
    tariffs: list[LedgerTariff] = []
    for index, entry in enumerate(doc["tariffs"]):
        at = f"{where}: tariffs[{index}]"
        if not isinstance(entry, Mapping) or not entry.get("tariff_id"):
            raise TariffFileError("a tariff needs a tariff_id", where=at,
                                  hint="add 'tariff_id: ...'")
        at = f"{where}: tariff {entry['tariff_id']}"
        unknown = set(entry) - _TARIFF_KEYS
        if unknown:
            raise TariffFileError(f"unknown keys {sorted(unknown)}", where=at,
                                  hint=f"allowed: {', '.join(sorted(_TARIFF_KEYS))}")
        versions = entry.get("versions")
        if versions is None:
            versions = [{}]
        if not isinstance(versions, list) or not versions:
            raise TariffFileError("'versions' must be a non-empty list", where=at,
                                  hint="list the effective-dated versions")
        for position, override in enumerate(versions):
            if not isinstance(override, Mapping):
                raise TariffFileError("a version is a mapping", where=f"{at} versions"
                                      f"[{position}]", hint="see docs/tariff-file.md")
            merged = {k: v for k, v in entry.items() if k != "versions"} | dict(override)
            merged.setdefault("version", position + 1)
            vat = f"{at} v{merged['version']}"
            message = _tariff_message(merged, tz, vat)
            try:
                book.add(message)
            except TariffError as exc:
                raise TariffFileError(exc.message, where=vat, hint=exc.hint) from None
            tariffs.append(message)
    accounts = tuple(_account_message(a, tz, f"{where}: accounts[{i}]")
                     for i, a in enumerate(doc.get("accounts") or ()))
    return TariffFile(tuple(tariffs), accounts, tz)


def _when(value: Any, tz: ZoneInfo, where: str, key: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=tz)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise TariffFileError(f"{key} {value!r} is not a date or date-time", where=where,
                                  hint="write 2018-07-10 or 2018-07-10T00:00:00+08:00") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    raise TariffFileError(f"{key} is missing or not a date", where=where,
                          hint=f"write '{key}: 2018-07-10'")


def _tariff_message(spec: Mapping[str, Any], tz: ZoneInfo, where: str) -> LedgerTariff:
    month, day = spec.get("cycle_start_month", 1), spec.get("cycle_start_day", 1)
    if "cycle_start" in spec:
        try:
            month, day = (int(x) for x in str(spec["cycle_start"]).split("-"))
        except ValueError:
            raise TariffFileError(f"cycle_start {spec['cycle_start']!r} is not MM-DD",
                                  where=where, hint="write cycle_start: \"01-01\"") from None
    tiers = []
    for index, tier in enumerate(spec.get("tiers") or ()):
        if not isinstance(tier, Mapping) or "price" not in tier:
            raise TariffFileError(f"tier {index + 1} needs a price", where=where,
                                  hint="write {upper: 350, price: \"2.61\"}")
        try:
            upper = tier.get("upper")
            tiers.append(TariffTier(
                upper=None if upper is None else to_decimal(upper),
                price=to_decimal(tier["price"]),
                components={str(k): to_decimal(v)
                            for k, v in (tier.get("components") or {}).items()}))
        except ValueError as exc:
            raise TariffFileError(f"tier {index + 1}: {exc}", where=where,
                                  hint="prices and volumes are decimal numbers") from None
    effective_from = _when(spec.get("effective_from"), tz, where, "effective_from")
    raw_to = spec.get("effective_to")
    try:
        return LedgerTariff(
            tariff_id=str(spec["tariff_id"]), version=int(spec["version"]),
            kind=spec.get("kind", "step"), effective_from=effective_from.astimezone(UTC),
            updated_at=effective_from.astimezone(UTC),
            medium=str(spec.get("medium", "gas")), currency=str(spec.get("currency", "CNY")),
            unit=str(spec.get("unit", "m3")), cycle=spec.get("cycle", "year"),
            cycle_start_month=int(month), cycle_start_day=int(day), tiers=tuple(tiers),
            tou=_plain(spec.get("tou") or {}),
            effective_to=None if raw_to is None
            else _when(raw_to, tz, where, "effective_to").astimezone(UTC))
    except (TypeError, ValueError) as exc:
        raise TariffFileError(str(exc), where=where, hint="see docs/tariff-file.md") from None


def _plain(value: Any) -> Any:
    """YAML values as JSON-ready values (dates → ISO strings, floats → decimal strings), so
    the ``tou`` mapping travels in a LedgerTariff unchanged."""
    if isinstance(value, Mapping):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return str(to_decimal(value))
    if isinstance(value, Decimal):
        return str(value)
    return value


def _account_message(spec: Any, tz: ZoneInfo, where: str) -> LedgerAccount:
    if not isinstance(spec, Mapping) or not spec.get("account_id"):
        raise TariffFileError("an account needs an account_id", where=where,
                              hint="add 'account_id: ...'")
    data: dict[str, Any] = {**_ACCOUNT_DEFAULTS, **_plain(dict(spec))}
    data.setdefault("updated_at", "2000-01-01T00:00:00Z")
    if "opened_at" in spec:
        data["opened_at"] = _when(spec["opened_at"], tz, where, "opened_at").isoformat()
    if "tier_override" in data:
        data["tier_override"] = {str(k): str(v) for k, v in data["tier_override"].items()}
    for key in ("alarm1", "alarm2", "overdraft_limit", "max_balance", "reconnect_limit",
                "opening_balance", "opening_cycle_volume"):
        if isinstance(data.get(key), int | float):
            data[key] = str(data[key])
    try:
        return msgspec.convert(data, LedgerAccount)
    except msgspec.ValidationError as exc:
        raise TariffFileError(f"invalid account: {exc}", where=f"{where} "
                              f"({spec['account_id']})", hint="see docs/tariff-file.md") from None


def tariff_document(tariffs: list[LedgerTariff], timezone: str = "Asia/Shanghai") -> dict[str, Any]:
    """The tariff-file document of some ledger tariffs (one entry per tariff, its versions
    listed) — the inverse of :func:`parse_tariff_document`, for exporting the ledger."""
    tz = ZoneInfo(timezone)
    by_id: dict[str, list[LedgerTariff]] = {}
    for message in sorted(tariffs, key=lambda t: (t.tariff_id, t.version)):
        by_id.setdefault(message.tariff_id, []).append(message)
    out = []
    for tariff_id, versions in by_id.items():
        out.append({"tariff_id": tariff_id, "versions": [_version_doc(v, tz) for v in versions]})
    return {"timezone": timezone, "tariffs": out}


def _version_doc(message: LedgerTariff, tz: ZoneInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": message.version, "kind": message.kind, "medium": message.medium,
        "unit": message.unit, "currency": message.currency, "cycle": message.cycle,
        "cycle_start": f"{message.cycle_start_month:02d}-{message.cycle_start_day:02d}",
        "effective_from": message.effective_from.astimezone(tz).isoformat(),
        "tiers": [{"upper": None if t.upper is None else str(t.upper), "price": str(t.price),
                   **({"components": {k: str(v) for k, v in t.components.items()}}
                      if t.components else {})} for t in message.tiers],
    }
    if message.effective_to is not None:
        doc["effective_to"] = message.effective_to.astimezone(tz).isoformat()
    if message.tou:
        doc["tou"] = message.tou
    return doc
