"""A read-only snapshot of part of a list that only ever grows at its end, taken in O(1).

Stores hand out the current session this way instead of copying it: copying 25,000 event
dicts costs about 0.3 ms (every dict is touched), which made a turn grow with the session.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar, overload

T = TypeVar("T")


class Snapshot(Sequence[T]):
    """`items[start:stop]` as it is now, without copying. The owner may append to `items`
    later but must never change, insert or remove what is already there."""

    __slots__ = ("_items", "_start", "_stop", "extra", "generation")

    def __init__(
        self,
        items: list[T],
        start: int = 0,
        stop: int | None = None,
        extra: int = 0,
        generation: int | str | None = None,
    ) -> None:
        self._items = items
        self._start = start
        self._stop = len(items) if stop is None else stop
        # What the items weigh beyond 1 each, where the store weighs them (see weight.py).
        self.extra = extra
        # What tells this store's session of the conversation from a rewrite of it by
        # another process with as many events, the last one the same (None: not told).
        self.generation = generation

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if type(index) is int:  # a load's look at one event: no isinstance, no len() call
            size = self._stop - self._start
            if index < 0:
                index += size
            if 0 <= index < size:
                return self._items[self._start + index]
            raise IndexError("snapshot index out of range")
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return _stepped(self._items, self._start, range(start, stop, step))
            return self._items[self._start + start : self._start + max(start, stop)]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("snapshot index out of range")
        return self._items[self._start + index]

    def __iter__(self) -> Iterator[T]:
        return itertools.islice(self._items, self._start, self._stop)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Snapshot({list(self)!r})"


def _stepped(items: list[T], offset: int, indices: range) -> list[T]:
    """A stepped slice of a snapshot (a function of its own: a comprehension in
    `Snapshot.__getitem__` would make it create a cell at every call, a load's look at one
    event too)."""
    return [items[offset + i] for i in indices]
