"""The conversations a store's process read last, bounded by their events' weight (see
weight.py), least recently used out first: what lets a store read only what changed since."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, Protocol, TypeVar

from server.trackers.events import OFF_LOOP_EVENTS
from server.trackers.freeing import release_off_loop
from server.trackers.weight import Probation, evict_least_recent


class _HoldsEvents(Protocol):
    events: list[dict[str, Any]]
    extra: int  # what `events` weigh beyond 1 each


K = TypeVar("K", bound=_HoldsEvents)


class KnownSessions(Generic[K]):
    """Entries by conversation id; their `events` lists only ever grow at their end."""

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self.weight = 0
        self._entries: OrderedDict[str, K] = OrderedDict()
        # Those read whole from the store and not loaded again since: they go first.
        self._probation = Probation()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sender_id: object) -> bool:
        return sender_id in self._entries

    def get(self, sender_id: str) -> K | None:
        return self._entries.get(sender_id)

    def keep(
        self, sender_id: str, entry: K, added: int, read: bool = False, loaded: bool = False
    ) -> None:
        """`entry` is the conversation's, most recently used, weighing `added` more than
        when it was kept before (all its weight if new): `read` whole from the store (on
        probation), or `loaded` again while kept (off probation), or appended to. Others go
        while the total passes `max_events` (see weight.py). The last one left stays unless
        its heavy events alone weigh more than the bound."""
        entries = self._entries
        entries[sender_id] = entry
        entries.move_to_end(sender_id)
        self.weight += added
        if read:
            self._probation.read(sender_id, _weight(entry))
        elif loaded and sender_id in self._probation.read_once:
            self._probation.used(sender_id)
        if self.weight > self.max_events:
            self.weight = evict_least_recent(
                entries, self.weight, self.max_events, _weight, _extra, _let_go, self._probation
            )

    def forget(self, sender_id: str) -> None:
        entry = self._entries.pop(sender_id, None)
        if entry is not None:
            self._probation.used(sender_id)
            self.weight -= _weight(entry)
            _let_go(entry)


def _let_go(entry: _HoldsEvents) -> None:
    """A long session no longer kept is freed off the loop (100,000 parsed event dicts freed
    at once held it 50 ms), unless a snapshot of it is still read."""
    if len(entry.events) > OFF_LOOP_EVENTS:
        release_off_loop(entry)


def _weight(entry: _HoldsEvents) -> int:
    return len(entry.events) + entry.extra


def _extra(entry: _HoldsEvents) -> int:
    return entry.extra
