"""Hot trackers over a tracker store: load the current session once, then only new events.

A process keeps the trackers it served recently; on each load it asks the store for the
current session and folds only the events it has not seen, so a turn costs the same at
message 10 and message 10,000.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from server.trackers.events import OFF_LOOP_EVENTS, Event, off_loop_for
from server.trackers.freeing import free_off_loop, release_off_loop
from server.trackers.store import TrackerStore
from server.trackers.tracker import Tracker
from server.trackers.weight import Probation, evict_least_recent


class TrackerRepository:
    """Builds Tracker objects from a store and appends their new events back."""

    def __init__(self, store: TrackerStore, max_events: int | None = None) -> None:
        self.store = store
        # Hot trackers kept, weighed in events (a few hundred bytes and objects each: the
        # bound keeps memory and the garbage collector's full passes small), an event of a
        # KiB of JSON or more as one per KiB (see weight.py); by default the store's
        # `cache_events`.
        self.max_events = store.cache_events if max_events is None else max_events
        # sender_id -> (tracker, number of its events that came from / went to the store,
        # its weight when kept)
        self._hot: OrderedDict[str, tuple[Tracker, int, int]] = OrderedDict()
        self.weight = 0
        # Those folded from the store and not loaded again since: they go first (weight.py).
        self._probation = Probation()
        # The store's generation of a conversation it just appended to, if it tells one.
        self._generation = getattr(store, "generation", None)

    async def load(self, sender_id: str, slot_defaults: dict[str, Any]) -> Tracker | None:
        """The current session's tracker, or None for an unknown conversation."""
        dicts = await self.store.load(sender_id)
        if dicts is None:
            self.forget(sender_id)
            return None
        cached = self._hot.get(sender_id)
        # Tells a rewrite by another process keeping the count and the last event apart.
        generation = getattr(dicts, "generation", None)
        if cached is not None:
            tracker, stored, _ = cached
            count = len(dicts)
            if (
                tracker.stored_generation == generation
                and tracker.slot_defaults == slot_defaults
                and stored == len(tracker.events) + tracker.left_out
                and count >= stored
                and count - stored <= OFF_LOOP_EVENTS  # else rebuilt below, in a thread
                and (stored == 0 or _same_event(tracker.events, dicts[stored - 1]))
            ):
                if sender_id in self._probation.read_once:
                    self._probation.used(sender_id)
                if count > stored:  # rows another process appended
                    tracker.update_from_dicts(dicts[stored:])
                    tracker.stored_extra = getattr(dicts, "extra", tracker.stored_extra)
                    self._remember(sender_id, tracker, count)
                else:
                    self._hot.move_to_end(sender_id)
                return tracker
        tracker = await _fold(sender_id, dicts, slot_defaults)
        tracker.stored_extra = getattr(dicts, "extra", 0)
        tracker.stored_generation = generation
        self._remember(sender_id, tracker, len(tracker.events) + tracker.left_out, read=True)
        return tracker

    async def load_all(self, sender_id: str, slot_defaults: dict[str, Any]) -> Tracker | None:
        dicts = await self.store.load_all(sender_id)
        if dicts is None:
            return None
        tracker = await _fold(sender_id, dicts, slot_defaults)
        await free_off_loop(dicts)  # a list of this call's own (no store keeps it)
        return tracker

    async def save(self, tracker: Tracker, new_events: list[Event]) -> None:
        """Appends `new_events` (already applied to `tracker`) in one transaction."""
        if new_events:
            if len(new_events) > OFF_LOOP_EVENTS:  # a bulk append: not on the event loop
                dicts = await asyncio.to_thread(_dicts, new_events)
            else:
                dicts = _dicts(new_events)
            self.saved(tracker, await self.store.append(tracker.sender_id, dicts))
        else:
            self.saved(tracker)

    def saved(self, tracker: Tracker, extra: int | None = None) -> None:
        """Keeps `tracker` as stored up to its last event: after its new events' append
        committed (`save`, or a caller awaiting `store.append` itself, passing on what it
        returned: what the new events weigh beyond 1 each)."""
        if extra:
            tracker.stored_extra += extra
        if tracker.stored_generation is None and self._generation is not None:
            # A conversation this process began: the session its append left in the store.
            tracker.stored_generation = self._generation(tracker.sender_id)
        # Its events and the stored items it left out: the store's items it holds.
        self._remember(tracker.sender_id, tracker, len(tracker.events) + tracker.left_out)

    async def replace(self, tracker: Tracker) -> None:
        dicts = await asyncio.to_thread(_dicts, tracker.events)
        await self.store.replace(tracker.sender_id, dicts)
        self.forget(tracker.sender_id)
        await free_off_loop(dicts)

    def forget(self, sender_id: str) -> None:
        entry = self._hot.pop(sender_id, None)
        if entry is not None:
            self._probation.used(sender_id)
            self.weight -= entry[2]
            _let_go(entry)

    def _remember(self, sender_id: str, tracker: Tracker, stored: int, read: bool = False) -> None:
        """Keeps `tracker`, most recently used; `read`: just folded from the store (on
        probation until loaded again, see weight.py)."""
        entry = self._hot.get(sender_id)
        if entry is not None:
            self.weight -= entry[2]
            self._hot.move_to_end(sender_id)
        weight = stored + tracker.stored_extra
        self._hot[sender_id] = (tracker, stored, weight)
        self.weight += weight
        if read:
            self._probation.read(sender_id, weight)
        if entry is not None and entry[0] is not tracker:
            _let_go(entry)
        del entry
        if self.weight > self.max_events:  # (no call on most turns)
            self._evict()

    def _evict(self) -> None:
        """The least recently used go while the weight is over the bound. The last one left
        stays unless its heavy events alone weigh more than the bound (a long conversation's
        turns fold nothing again, a few events of a KiB in it or not); if they do, its loads
        fold it anew."""
        self.weight = evict_least_recent(
            self._hot, self.weight, self.max_events, _weight, _extra, _let_go, self._probation
        )


def _let_go(entry: tuple[Tracker, int, int]) -> None:
    """A hot tracker the cache no longer holds: a long one (and its state cache) is freed
    off the loop, unless another request still holds it."""
    if len(entry[0].events) > OFF_LOOP_EVENTS:
        release_off_loop(entry[0])


# A conversation loaded with more than OFF_LOOP_EVENTS events is folded into a Tracker in a
# thread (the first load of a long conversation after a PUT or a start: about 1-2 s for
# 100,000 events); a short one stays inline. The tracker is a new object until it is
# remembered, so no other request sees it half-built. A hot tracker that more rows than that
# were appended to elsewhere is rebuilt the same way rather than caught up on the loop, as
# other requests may be reading it.
async def _fold(
    sender_id: str, dicts: Sequence[dict[str, Any]], slot_defaults: dict[str, Any]
) -> Tracker:
    return await off_loop_for(dicts, Tracker.from_dicts, sender_id, dicts, slot_defaults)


def _dicts(events: list[Event]) -> list[dict[str, Any]]:
    return [e.as_dict() for e in events]


def _same_event(events: list[Event], d: dict[str, Any]) -> bool:
    """Whether the last of `events` is the stored item `d` (one left out is never the same:
    the tracker is then folded anew)."""
    if not events:
        return False
    event = events[-1]
    return event.type_name == d.get("event") and event.timestamp == d.get("timestamp")


def _weight(entry: tuple[Tracker, int, int]) -> int:
    return entry[2]


def _extra(entry: tuple[Tracker, int, int]) -> int:
    return entry[0].stored_extra
