"""Events of a save whose outcome is unknown (it raised, yet may have committed): published
once the tracker store shows them committed, dropped if it does not, and never overtaken by
the conversation's later events in this process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from server.errors import how_many
from server.tasks import stop
from server.trackers.events import OFF_LOOP_EVENTS, off_loop_if_long
from server.trackers.store import TrackerStore
from server.trackers.weight import KIB

if TYPE_CHECKING:
    from server.brokers.delivery import Outgoing

logger = logging.getLogger(__name__)

# The messages of (sender_id, events, previous_event, before), a bulk of them made in a thread.
Prepare = Callable[
    [str, list[dict[str, Any]], dict[str, Any] | None, Sequence[dict[str, Any]]],
    Awaitable[list["Outgoing"]],
]
# Queues prepared messages for delivery.
Enqueue = Callable[[list["Outgoing"]], None]

DEFAULT_MAX_HELD_EVENTS = 100_000


@dataclass
class _Batch:
    events: list[dict[str, Any]]
    previous_event: dict[str, Any] | None
    # False until the store has been read back (a save that raised); True for a commit.
    committed: bool
    # The stored events up to `previous_event` sharing its timestamp (`same_time_run`).
    before: Sequence[dict[str, Any]] = ()
    # What it counts toward the cap (`_weigh`), fixed as it is held.
    weight: int = 0


class InDoubtEvents:
    """Per conversation, the batches held behind one whose commit is in doubt. One background
    task reads the held conversations back from their store (retrying with back-off while it
    is unreachable) and submits, in order, what was committed."""

    def __init__(
        self,
        name: str,
        prepare: Prepare,
        enqueue: Enqueue,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        max_events: int = DEFAULT_MAX_HELD_EVENTS,
    ) -> None:
        self.name = name
        self._prepare = prepare
        self._enqueue = enqueue
        self._retry_delay = retry_delay
        self._max_retry_delay = max(max_retry_delay, retry_delay)
        self._max_events = max_events
        self._held: dict[str, list[_Batch]] = {}
        self._stores: dict[str, TrackerStore] = {}
        # Every batch held, oldest first, with its conversation: what goes first over the cap.
        # Batches published or dropped since stay until they reach the front (`_drop_oldest`)
        # or the queue is rebuilt (`_add`), emptied (`resolve`): before, their events stayed
        # in memory until then, after an outage up to some 1,000 batches past the cap.
        self._order: deque[tuple[str, _Batch]] = deque()
        self._batches = 0  # held now (those in `_order` and still in `_held`)
        self._events = 0
        self._dropped = 0
        # What the cap bounds: the events held and the stored runs kept with them (`before`:
        # a batch after a client's import of one second keeps that whole run).
        self._kept = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def holds(self, sender_id: str) -> bool:
        """True while the conversation has a batch in doubt (later ones must wait)."""
        return sender_id in self._held

    @property
    def held(self) -> int:
        """Events held (in doubt, or committed behind one in doubt)."""
        return self._events

    @property
    def dropped(self) -> int:
        """Events dropped (never published) to keep what is held within the cap, in all."""
        return self._dropped

    def add_in_doubt(
        self,
        sender_id: str,
        events: list[dict[str, Any]],
        previous_event: dict[str, Any] | None,
        store: TrackerStore,
        before: Sequence[dict[str, Any]] = (),
    ) -> None:
        # The store first: `_add` may drop this very conversation (the oldest), store and all.
        self._stores[sender_id] = store
        self._add(sender_id, _Batch(events, previous_event, committed=False, before=before))
        logger.warning(
            "%s: the save of conversation %s failed; its %s until the tracker "
            "store shows whether the save was committed",
            self.name,
            sender_id,
            "event waits" if len(events) == 1 else f"{len(events)} events wait",
        )
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"{self.name} in-doubt events")

    def add_committed(
        self,
        sender_id: str,
        events: list[dict[str, Any]],
        previous_event: dict[str, Any] | None,
        before: Sequence[dict[str, Any]] = (),
    ) -> None:
        """A later commit of a held conversation: it waits, and the store is read now (it
        has just answered)."""
        self._add(sender_id, _Batch(events, previous_event, committed=True, before=before))
        self._wakeup.set()

    def _add(self, sender_id: str, batch: _Batch) -> None:
        batch.weight = _weigh(batch)
        self._held.setdefault(sender_id, []).append(batch)
        self._order.append((sender_id, batch))
        self._batches += 1
        self._events += len(batch.events)
        self._kept += _size(batch)
        if len(self._order) > 2 * self._batches + 1024:  # mostly batches gone since
            live = {id(b) for batches in self._held.values() for b in batches}
            self._order = deque(entry for entry in self._order if id(entry[1]) in live)
        # The batches held longest go first, whichever conversation holds them; a
        # conversation loses only its oldest (those read back first), so what it keeps stays
        # in order. The newest batch stays, however long a run it keeps (one save's worth,
        # which the store read for it anyway). Before, the whole conversation held longest
        # went, its newest saves too; and one conversation's failed retries after a client's
        # import of one second, each keeping that run, grew without bound.
        while self._kept > self._max_events and self._drop_oldest(keep=batch):
            pass

    def _drop_oldest(self, keep: _Batch) -> bool:
        """Drops the batch held longest, unless it is `keep`; False when nothing was."""
        while self._order:
            sender_id, oldest = self._order[0]
            batches = self._held.get(sender_id)
            if not batches or batches[0] is not oldest:
                self._order.popleft()  # published, or dropped, since
                continue
            if oldest is keep:
                return False
            self._order.popleft()
            if len(batches) == 1:
                self._drop(sender_id)
            else:
                # A new list: a read-back under way sees the conversation changed, and re-reads.
                self._held[sender_id] = batches[1:]
                self._batches -= 1
                self._events -= len(oldest.events)
                self._kept -= _size(oldest)
            self._dropped += len(oldest.events)
            logger.error(
                "%s: %s of conversation %s dropped from the in-doubt events (over %d "
                "held): not published (%d dropped in all)",
                self.name,
                how_many(len(oldest.events), "event"),
                sender_id,
                self._max_events,
                self._dropped,
            )
            return True
        return False

    def _drop(self, sender_id: str) -> None:
        batches = self._held.pop(sender_id, [])
        self._stores.pop(sender_id, None)
        self._batches -= len(batches)
        self._events -= sum(len(b.events) for b in batches)
        self._kept -= sum(_size(b) for b in batches)

    async def _run(self) -> None:
        failures = 0
        while self._held:
            self._wakeup.clear()
            error: Exception | None = None
            for sender_id in list(self._held):
                try:
                    await self.resolve(sender_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store is still away: try again later
                    error = exc
            if not self._held:
                return
            if error is None:
                failures, delay = 0, 0.0  # batches arrived during the read: go on
            else:
                failures += 1
                delay = min(self._retry_delay * 2 ** min(failures - 1, 16), self._max_retry_delay)
                logger.warning(
                    "%s: %s of %s to be read back (attempt %d), retrying in %.1f s: %s",
                    self.name,
                    how_many(self._events, "event"),
                    how_many(len(self._held), "conversation")
                    + (" waits" if self._events == 1 else " wait"),
                    failures,
                    delay,
                    error,
                )
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except TimeoutError:
                pass

    async def resolve(self, sender_id: str) -> None:
        """Reads the conversation back and submits its held batches in order: in-doubt ones
        only if they were committed. Raises (holding everything) if the store fails."""
        batches = self._held.get(sender_id)
        if not batches:
            return
        store = self._stores[sender_id]
        checked = len(batches)  # batches added during the read wait for the next round
        in_doubt = [b for b in batches[:checked] if not b.committed]
        if in_doubt:
            found = await _committed(store, sender_id, in_doubt)
            if self._held.get(sender_id) is not batches:
                return  # dropped meanwhile (too many held)
            for batch, committed in zip(in_doubt, found, strict=True):
                batch.committed = committed
                logger.warning(
                    "%s: the failed save of conversation %s %s: its %s %s %s",
                    self.name,
                    sender_id,
                    "had committed" if committed else "was not committed",
                    how_many(len(batch.events), "event"),
                    "is" if len(batch.events) == 1 else "are",
                    "published" if committed else "dropped",
                )
                if not committed:  # never stored: never published
                    self._events -= len(batch.events)
                    self._kept -= _size(batch)
                    batch.events, batch.before, batch.weight = [], (), 0
        done = 0
        for index, batch in enumerate(batches):
            if index >= checked and not batch.committed:
                break
            done += 1
        # Made first (a bulk, or a batch after a client's long run, in a thread), then queued
        # at once: batches added meanwhile wait for the next round, behind these.
        prepared = [
            await self._prepare(sender_id, b.events, b.previous_event, b.before)
            for b in batches[:done]
            if b.events
        ]
        if self._held.get(sender_id) is not batches:
            return  # dropped meanwhile (too many held)
        for items in prepared:
            self._enqueue(items)
        published = batches[:done]
        self._batches -= done
        self._events -= sum(len(b.events) for b in published)
        self._kept -= sum(_size(b) for b in published)
        del batches[:done]
        for batch in published:  # `_order` lists it until it reaches the front: not its events
            batch.events, batch.previous_event, batch.before, batch.weight = [], None, (), 0
        if not batches:
            del self._held[sender_id]
            del self._stores[sender_id]

    async def settle(self, timeout: float) -> None:
        """One last round of reads (before closing), for up to `timeout` seconds."""
        if self._task is not None:
            await stop(self._task)
            self._task = None
        if not self._held:
            return
        try:
            async with asyncio.timeout(timeout):
                for sender_id in list(self._held):
                    await self.resolve(sender_id)
        except Exception as exc:
            logger.debug("%s: last read-back failed: %s", self.name, exc)
        if self._held:
            logger.error(
                "%s: closing with %s of %s not read back (not published)",
                self.name,
                how_many(self._events, "event"),
                how_many(len(self._held), "conversation"),
            )


def _size(batch: _Batch) -> int:
    """What a held batch counts toward the cap (see `_weigh`)."""
    return batch.weight


def _weigh(batch: _Batch) -> int:
    """Its events and the stored run it keeps, an event of 1 KiB of JSON or more as 1 more
    per KiB (as the hot caches weigh them: see weight.py). Written out only on this path (a
    save that failed, or a later one held behind it); the events of a bulk save, and a long
    stored run, count 1 each (writing them out would hold the event loop)."""
    weight = len(batch.events) + len(batch.before)
    if len(batch.events) <= OFF_LOOP_EVENTS:
        weight += sum([len(_json(event)) // KIB for event in batch.events])
    return weight


def _json(event: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson refuses (integers over 64 bits)
        return json.dumps(event, default=str).encode()


async def _committed(store: TrackerStore, sender_id: str, batches: list[_Batch]) -> list[bool]:
    """Whether each batch is in the store: the current session first, else every session."""
    # With the stored events up to the one before it: a client's repeat of a stored event
    # is found only if it was stored after them, not for its twin stored earlier.
    runs = [[*b.before, *b.events] for b in batches]
    events: Sequence[dict[str, Any]] = await store.load(sender_id) or []
    found = await _all_contained(events, runs)
    if not all(found):
        events = await store.load_all(sender_id) or []
        found = await _all_contained(events, runs)
    return found


async def _all_contained(
    stored: Sequence[dict[str, Any]], runs: list[list[dict[str, Any]]]
) -> list[bool]:
    """`_contains` of each run; in a thread for a long conversation, not on the event loop."""
    return await off_loop_if_long(_each_contained, stored, runs)


def _each_contained(
    stored: Sequence[dict[str, Any]], runs: list[list[dict[str, Any]]]
) -> list[bool]:
    return [_contains(stored, run) for run in runs]


def _contains(stored: Sequence[dict[str, Any]], batch: list[dict[str, Any]]) -> bool:
    """True if `batch` is a run of `stored` (same event types and timestamps, in order: an
    append commits all of its rows or none)."""
    keys = [(e.get("event"), e.get("timestamp")) for e in batch]
    if not keys:
        return True
    for start in range(len(stored) - len(keys), -1, -1):
        if all(
            (stored[start + j].get("event"), stored[start + j].get("timestamp")) == key
            for j, key in enumerate(keys)
        ):
            return True
    return False
