"""The ledger tables of the stream: meters, accounts, tariffs and VEE groups, as every worker
sees them, fed from the compacted ``ledger.*`` topics.

Strategy: every worker keeps the *whole* ledger — enrichment needs any meter's dimensions,
billing any account and tariff — so the view reads every partition of the four compacted
topics with its own consumer (no consumer group), from the beginning or from the offsets it
stored last time, and follows them for as long as the worker runs. This is what a faust
``GlobalTable`` promises; we do not use one because its multi-worker replication is an
open defect in faust-streaming (issue #283: some workers never see some partitions).

Entries are kept as encoded payloads in a :class:`LedgerStore` — a dict in tests, a RocksDB
database (rocksdict) in production, so a million meters do not live on the Python heap and a
restart resumes from the stored offsets instead of re-reading the topics — with a bounded
cache of decoded messages in front. A change older than what the view holds (by
``ledger_version`` / tariff ``version``) is ignored, so a re-published or re-ordered
message never rolls an entity back; a tombstone (``value=None``) removes the entity.

Undecodable records are handed to the ``on_reject`` callback (the app sends them to
``dlq.pipeline``) and skipped: bad input never stops the view.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import msgspec

from schemas import codec
from schemas.errors import MessageDecodeError
from schemas.messages import LedgerAccount, LedgerMeter, LedgerTariff, LedgerVeeGroup, Message

__all__ = [
    "LEDGER_TOPICS",
    "LedgerStore",
    "LedgerView",
    "MemoryLedgerStore",
    "RocksLedgerStore",
    "open_ledger_store",
]

_M = TypeVar("_M", bound=Message)

#: Catalog topic -> (entity kind prefix, payload type).
LEDGER_TOPICS: dict[str, tuple[bytes, type[Message]]] = {
    "ledger.meters": (b"m", LedgerMeter),
    "ledger.accounts": (b"a", LedgerAccount),
    "ledger.tariffs": (b"t", LedgerTariff),
    "ledger.vee_groups": (b"g", LedgerVeeGroup),
}

_SEP = b"\x00"
_OFFSET = b"\x01offset"

#: Called with (catalog topic, key, value, partition, offset, error) for a rejected record.
RejectCallback = Callable[[str, bytes | None, bytes, int, int, MessageDecodeError], None]


class LedgerStore(Protocol):
    """Bytes to bytes; the view owns the key layout."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...
    def close(self) -> None: ...


class MemoryLedgerStore:
    """A dict: for tests and for ``store=memory://`` workers (rebuilt from the topics)."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._data[key] = value

    def delete(self, key: bytes) -> None:
        self._data.pop(key, None)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in self._data if k.startswith(prefix)):
            yield key, self._data[key]

    def close(self) -> None:
        pass


class RocksLedgerStore:
    """A RocksDB database through rocksdict (raw bytes mode), one per worker process."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Options, Rdict

        path.mkdir(parents=True, exist_ok=True)
        self._db: Any = Rdict(str(path), options=Options(raw_mode=True))

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def put(self, key: bytes, value: bytes) -> None:
        self._db[key] = value

    def delete(self, key: bytes) -> None:
        with contextlib.suppress(KeyError):
            del self._db[key]

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items(from_key=prefix):
            if not bytes(key).startswith(prefix):
                break
            yield bytes(key), bytes(value)

    def close(self) -> None:
        self._db.close()


def open_ledger_store(store_url: str, path: Path) -> LedgerStore:
    """The store matching the worker's ``store`` setting."""
    if store_url.startswith("rocksdb"):
        return RocksLedgerStore(path)
    return MemoryLedgerStore()


@cache
def _payload_decoder(cls: type[Message]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(cls)


def _version_of(message: Message) -> int:
    if isinstance(message, LedgerMeter | LedgerAccount):
        return message.ledger_version
    if isinstance(message, LedgerVeeGroup | LedgerTariff):
        return message.version
    return 0  # pragma: no cover - every ledger type is listed above


class LedgerView:
    """Read access to the ledger as the stream last saw it, plus :meth:`apply` to feed it."""

    def __init__(self, store: LedgerStore | None = None, *, cache_size: int = 100_000,
                 on_reject: RejectCallback | None = None) -> None:
        self.store: LedgerStore = store or MemoryLedgerStore()
        self.cache_size = cache_size
        self.on_reject = on_reject
        self._cache: OrderedDict[bytes, Message] = OrderedDict()
        self._versions: dict[bytes, int] = {}
        #: tariff id -> its stored "id:version" keys (small; rebuilt from the store at start).
        self._tariff_index: dict[str, set[str]] = {}
        #: Bumped whenever a VEE group changes, so users of compiled rule groups can reload.
        self.vee_groups_revision = 0
        self.applied = 0
        self.rejected = 0
        self._rebuild_indexes()

    # ------------------------------------------------------------------ reads

    def meter(self, meter_id: str) -> LedgerMeter | None:
        return self._get(b"m", meter_id, LedgerMeter)

    def account(self, account_id: str) -> LedgerAccount | None:
        return self._get(b"a", account_id, LedgerAccount)

    def vee_group(self, group_id: str) -> LedgerVeeGroup | None:
        return self._get(b"g", group_id, LedgerVeeGroup)

    def vee_groups(self) -> dict[str, LedgerVeeGroup]:
        out: dict[str, LedgerVeeGroup] = {}
        for key, value in self.store.scan(b"g" + _SEP):
            message = self._decode_stored(key, value, LedgerVeeGroup)
            out[message.group_id] = message
        return out

    def tariff_versions(self, tariff_id: str) -> list[LedgerTariff]:
        """Every stored version of a tariff, oldest effective date first."""
        versions = []
        for key in sorted(self._tariff_index.get(tariff_id, ())):
            tariff = self._get(b"t", key, LedgerTariff)
            if tariff is not None:
                versions.append(tariff)
        return sorted(versions, key=lambda t: (t.effective_from, t.version))

    def tariff_at(self, tariff_id: str, at: datetime) -> LedgerTariff | None:
        """The version of ``tariff_id`` in force at ``at`` (latest effective_from ≤ at)."""
        current = None
        for tariff in self.tariff_versions(tariff_id):
            if tariff.effective_from <= at and (tariff.effective_to is None
                                                or at < tariff.effective_to):
                current = tariff
        return current

    # ------------------------------------------------------------------ writes

    def apply(self, topic: str, key: bytes | None, value: bytes | None, *,
              partition: int = 0, offset: int = -1) -> bool:
        """Apply one record of a ledger topic (catalog name, no prefix); True if it changed
        the view. Records that cannot be decoded go to ``on_reject`` and change nothing."""
        kind, cls = LEDGER_TOPICS[topic]
        changed = False
        if value is None:
            if key:
                changed = self._remove(kind, key.decode("utf-8", "replace"))
        else:
            try:
                _, message = codec.decode(value, cls)
            except MessageDecodeError as exc:
                self.rejected += 1
                if self.on_reject is not None:
                    self.on_reject(topic, key, value, partition, offset, exc)
            else:
                changed = self._put(kind, message)
        if offset >= 0:
            self.store.put(self._offset_key(topic, partition), str(offset).encode())
        return changed

    def put(self, message: Message) -> bool:
        """Apply a decoded ledger message directly (tests, bulk loads)."""
        for kind, cls in LEDGER_TOPICS.values():
            if isinstance(message, cls):
                return self._put(kind, message)
        raise TypeError(f"{type(message).__name__} is not a ledger message")

    def stored_offset(self, topic: str, partition: int) -> int | None:
        """The last applied offset of a partition (to resume after a restart)."""
        value = self.store.get(self._offset_key(topic, partition))
        return int(value) if value is not None else None

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _offset_key(topic: str, partition: int) -> bytes:
        return _OFFSET + _SEP + topic.encode() + _SEP + str(partition).encode()

    @staticmethod
    def _entity_key(message: Message) -> str:
        if isinstance(message, LedgerTariff):
            return f"{message.tariff_id}:{message.version}"
        return message.key().decode()

    def _put(self, kind: bytes, message: Message) -> bool:
        entity = self._entity_key(message)
        key = kind + _SEP + entity.encode()
        version = _version_of(message)
        held = self._versions.get(key)
        if held is None:
            stored = self.store.get(key)
            if stored is not None:
                held = _version_of(self._decode_stored(key, stored, type(message)))
        if held is not None and version < held:
            return False
        self.store.put(key, codec.encode_payload(message))
        self._versions[key] = version
        self._remember(key, message)
        if isinstance(message, LedgerTariff):
            self._tariff_index.setdefault(message.tariff_id, set()).add(entity)
        if kind == b"g":
            self.vee_groups_revision += 1
        self.applied += 1
        return True

    def _remove(self, kind: bytes, entity: str) -> bool:
        key = kind + _SEP + entity.encode()
        existed = self.store.get(key) is not None
        self.store.delete(key)
        self._cache.pop(key, None)
        self._versions.pop(key, None)
        if kind == b"t":
            tariff_id = entity.rsplit(":", 1)[0]
            self._tariff_index.get(tariff_id, set()).discard(entity)
        if kind == b"g":
            self.vee_groups_revision += 1
        return existed

    def _get(self, kind: bytes, entity: str, cls: type[_M]) -> _M | None:
        key = kind + _SEP + entity.encode()
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cast(_M, cached)
        stored = self.store.get(key)
        if stored is None:
            return None
        message = self._decode_stored(key, stored, cls)
        self._remember(key, message)
        return message

    @staticmethod
    def _decode_stored(key: bytes, stored: bytes, cls: type[_M]) -> _M:
        return cast(_M, _payload_decoder(cls).decode(stored))

    def _remember(self, key: bytes, message: Message) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = message
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _rebuild_indexes(self) -> None:
        for key, _ in self.store.scan(b"t" + _SEP):
            entity = key[2:].decode()
            self._tariff_index.setdefault(entity.rsplit(":", 1)[0], set()).add(entity)
