"""Stores for the engine's state: encoded tables and a write buffer over them.

The billing agent keeps :class:`~billing.engine.BillingStore` in faust tables of bytes.
:class:`EncodedMapping` turns such a bytes-to-bytes table into a mapping of state structs
(msgspec JSON, see :mod:`billing.state`), and :class:`BufferedStore` lets the agent process
a batch against the tables *without writing them*: reads go through to the tables (each
decoded once per batch), writes stay in memory until :meth:`BufferedStore.flush` — which the
agent calls only after the broker acknowledged the batch's outputs. A crash in between
replays the batch against unchanged tables and produces the same messages again, which the
downstream writers absorb by their natural keys.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
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

__all__ = ["BufferedMapping", "BufferedStore", "EncodedMapping"]

S = TypeVar("S", bound=msgspec.Struct)


class EncodedMapping(MutableMapping[str, S], Generic[S]):
    """``str → struct`` over a ``bytes → bytes`` mapping such as a faust table."""

    def __init__(self, raw: MutableMapping[Any, Any], cls: type[S]) -> None:
        self.raw = raw
        self.cls = cls

    def get(self, key: str, default: Any = None) -> Any:
        data = self.raw.get(key.encode())
        return default if data is None else decode_state(data, self.cls)

    def __getitem__(self, key: str) -> S:
        data = self.raw.get(key.encode())
        if data is None:
            raise KeyError(key)
        return decode_state(data, self.cls)

    def __setitem__(self, key: str, value: S) -> None:
        self.raw[key.encode()] = encode_state(value)

    def __delitem__(self, key: str) -> None:
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
                    top_ups: MutableMapping[Any, Any],
                    periods: MutableMapping[Any, Any]) -> BufferedStore:
        """Buffered over four bytes-to-bytes tables (faust tables in the agent)."""
        return cls(EncodedMapping(accounts, AccountState), EncodedMapping(readings, ReadingRecord),
                   EncodedMapping(top_ups, TopUpRecord), EncodedMapping(periods, PeriodAccumulator))

    def _parts(self) -> tuple[BufferedMapping[Any], ...]:
        return (self.accounts, self.readings, self.top_ups, self.periods)

    def flush(self) -> None:
        for part in self._parts():
            part.flush()

    def discard(self) -> None:
        for part in self._parts():
            part.discard()
