"""A bounded least-recently-used map for the results of pure functions on the turn's path
(policy scores per feature row, NLU parses per text)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_ABSENT: object = object()


class Memo(Generic[K, V]):
    """At most `size` results, the least recently used dropped first.

    A plain dict in use order: a hit is taken out and put back at the end (two C calls,
    about two thirds of an OrderedDict's `get` and `move_to_end`), the first key is the
    least recently used. Safe to share between threads: a race can drop an entry early or
    compute it twice, never return a wrong one. Callers store values nobody mutates (or copy
    them out).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        entries = self._entries
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
                entries.pop(next(iter(entries)), None)
            except (RuntimeError, StopIteration):  # changed or emptied by another thread
                pass

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
