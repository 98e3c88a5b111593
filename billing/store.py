"""Stores for the engine's state: encoded tables and a write buffer over them.

The billing agent keeps :class:`~billing.engine.BillingStore` in faust tables of bytes.
:class:`EncodedMapping` turns such a bytes-to-bytes table into a mapping of state structs
(msgspec JSON, see :mod:`billing.state`), and :class:`BufferedStore` lets the agent process
a batch against the tables *without writing them*: reads go through to the tables (each
decoded once per batch), writes stay in memory until :meth:`BufferedStore.flush` — which the
agent calls only after the broker acknowledged the batch's outputs. A crash in between
replays the batch against unchanged tables and produces the same messages again, which the
downstream writers absorb by their natural keys.

A :class:`DecodedCache` lets the agent keep decoded account states between batches instead of
decoding an account's bytes again in each batch that touches it. An entry is the bytes this
worker wrote and the struct they encode; it is used only while the table still holds exactly
those bytes (a rebalance's restore or another writer shows as other bytes, decoded afresh).
The engine changes states in place, so a batch *takes* an entry out when it reads it and only
the flush — the batch's acknowledged write — puts what it wrote back: a batch that fails or is
never written leaves nothing half-changed behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

import msgspec

from billing.state import (
    AccountState,
    PeriodAccumulator,
    ReadingRecord,
    TopUpRecord,
    decode_state,
    encode_state,
)

__all__ = ["BufferedMapping", "BufferedStore", "DecodedCache", "EncodedMapping"]

S = TypeVar("S", bound=msgspec.Struct)


class DecodedCache(Generic[S]):
    """Decoded structs kept between batches, each with the bytes it was written as (see the
    module doc); at most ``limit`` keys (0: none), the least recently written leaves first.
    The billing agent keeps account states in one, the VEE agent meter states."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: key -> (the bytes this worker wrote, the struct they encode), oldest write first
        self._held: dict[str, tuple[bytes, S]] = {}
        #: structs decoded from bytes, and structs taken from the cache instead
        self.decoded = 0
        self.reused = 0

    def __len__(self) -> int:
        return len(self._held)

    def take(self, key: str, stored: bytes, decode: Callable[[bytes], S]) -> S:
        """The struct ``stored`` encodes: the one held for ``key`` if it was written as
        exactly these bytes, else ``decode(stored)``. Either way the entry leaves the cache."""
        held = self._held.pop(key, None)
        if held is not None and held[0] == stored:
            self.reused += 1
            return held[1]
        self.decoded += 1
        return decode(stored)

    def put(self, key: str, stored: bytes, value: S) -> None:
        """Remember ``value`` as written as ``stored`` (call only once the write happened)."""
        if self.limit <= 0:
            return
        held = self._held
        if held.pop(key, None) is None and len(held) >= self.limit:
            del held[next(iter(held))]  # the least recently written
        held[key] = (stored, value)

    def forget(self, key: str) -> None:
        self._held.pop(key, None)


class EncodedMapping(MutableMapping[str, S], Generic[S]):
    """``str → struct`` over a ``bytes → bytes`` mapping such as a faust table, optionally
    reusing the structs it wrote (``cache``, see :class:`DecodedCache`)."""

    def __init__(self, raw: MutableMapping[Any, Any], cls: type[S],
                 cache: DecodedCache[S] | None = None) -> None:
        self.raw = raw
        self.cls = cls
        self.cache = cache

    def _decode(self, key: str, data: bytes) -> S:
        if self.cache is None:
            return decode_state(data, self.cls)
        return self.cache.take(key, data, self._decode_bytes)

    def _decode_bytes(self, data: bytes) -> S:
        return decode_state(data, self.cls)

    def get(self, key: str, default: Any = None) -> Any:
        data = self.raw.get(key.encode())
        return default if data is None else self._decode(key, data)

    def __getitem__(self, key: str) -> S:
        data = self.raw.get(key.encode())
        if data is None:
            raise KeyError(key)
        return self._decode(key, data)

    def __setitem__(self, key: str, value: S) -> None:
        data = encode_state(value)
        self.raw[key.encode()] = data
        if self.cache is not None:
            self.cache.put(key, data, value)

    def __delitem__(self, key: str) -> None:
        if self.cache is not None:
            self.cache.forget(key)
        del self.raw[key.encode()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.raw.get(key.encode()) is not None

    def __iter__(self) -> Iterator[str]:
        for key in self.raw:
            yield key.decode() if isinstance(key, bytes) else str(key)

    def __len__(self) -> int:
        return len(self.raw)


class BufferedMapping(MutableMapping[str, S], Generic[S]):
    """Reads through to ``base`` (caching what it read), keeps writes until :meth:`flush`."""

    def __init__(self, base: MutableMapping[str, S]) -> None:
        self.base = base
        self._seen: dict[str, S | None] = {}
        self._dirty: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._seen:
            found = self._seen[key]
        else:
            found = self._seen[key] = self.base.get(key)
        return default if found is None else found

    def __getitem__(self, key: str) -> S:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found  # type: ignore[no-any-return]

    def __setitem__(self, key: str, value: S) -> None:
        self._seen[key] = value
        self._dirty.add(key)

    def __delitem__(self, key: str) -> None:
        self._seen[key] = None
        self._dirty.add(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        pending = {k for k, v in self._seen.items() if v is not None}
        yield from pending
        for key in self.base:
            if key not in self._seen:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    def flush(self) -> None:
        """Write the buffered changes to ``base`` and start afresh."""
        for key in self._dirty:
            value = self._seen[key]
            if value is None:
                if key in self.base:
                    del self.base[key]
            else:
                self.base[key] = value
        self._seen.clear()
        self._dirty.clear()

    def discard(self) -> None:
        """Forget the buffered changes (the batch failed; the base is untouched)."""
        self._seen.clear()
        self._dirty.clear()


class BufferedStore:
    """A :class:`~billing.engine.BillingStore` that buffers its writes (see the module doc)."""

    def __init__(self, accounts: MutableMapping[str, AccountState],
                 readings: MutableMapping[str, ReadingRecord],
                 top_ups: MutableMapping[str, TopUpRecord],
                 periods: MutableMapping[str, PeriodAccumulator]) -> None:
        self.accounts: BufferedMapping[AccountState] = BufferedMapping(accounts)
        self.readings: BufferedMapping[ReadingRecord] = BufferedMapping(readings)
        self.top_ups: BufferedMapping[TopUpRecord] = BufferedMapping(top_ups)
        self.periods: BufferedMapping[PeriodAccumulator] = BufferedMapping(periods)

    @classmethod
    def over_tables(cls, accounts: MutableMapping[Any, Any], readings: MutableMapping[Any, Any],
                    top_ups: MutableMapping[Any, Any], periods: MutableMapping[Any, Any], *,
                    account_cache: DecodedCache[AccountState] | None = None) -> BufferedStore:
        """Buffered over four bytes-to-bytes tables (faust tables in the agent); with
        ``account_cache``, the account states the flushes wrote are reused while the table
        still holds what they wrote (see the module doc)."""
        return cls(EncodedMapping(accounts, AccountState, account_cache),
                   EncodedMapping(readings, ReadingRecord),
                   EncodedMapping(top_ups, TopUpRecord), EncodedMapping(periods, PeriodAccumulator))

    def _parts(self) -> tuple[BufferedMapping[Any], ...]:
        return (self.accounts, self.readings, self.top_ups, self.periods)

    def flush(self) -> None:
        for part in self._parts():
            part.flush()

    def discard(self) -> None:
        for part in self._parts():
            part.discard()
