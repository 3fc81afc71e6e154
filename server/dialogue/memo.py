"""A bounded least-recently-used map for the results of pure functions on the turn's path
(policy scores per feature row, NLU parses per text)."""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_ABSENT: object = object()


class Memo(Generic[K, V]):
    """At most `size` results, the least recently used dropped first.

    A plain dict in use order: a hit is taken out and put back at the end, the first key is
    the least recently used. Until the memo is half full a hit only looks its key up (one
    hash of the key instead of two, no entry taken out and put back: the turn's keys are
    tuples of tuples, hashed anew each time): nothing is dropped before the memo is full,
    and the use order kept from half full on decides what goes first. Once over its size the
    memo drops its least recently used eighth at once: a dict finds its first key by scanning
    past every key dropped before it, so dropping one key a miss made a miss on a full memo
    of 65,536 cost 70 times one with room. Safe to share between threads: a race can drop
    an entry early or compute it twice, never return a wrong one.
    Callers store values nobody mutates (or copy them out).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        entries = self._entries
        if len(entries) * 2 < self.size:
            return entries.get(key)
        value = entries.pop(key, _ABSENT)
        if value is _ABSENT:
            return None
        entries[key] = value  # type: ignore[assignment]
        return value  # type: ignore[return-value]

    def put(self, key: K, value: V) -> None:
        entries = self._entries
        entries[key] = value
        if len(entries) > self.size:
            try:
                for old in list(itertools.islice(entries, max(self.size // 8, 1))):
                    entries.pop(old, None)  # None: another thread dropped it meanwhile
            except RuntimeError:  # changed by another thread during the scan
                pass

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
