"""`botserver export`: a tracker store's stored events published to an event broker, oldest
first, as Rasa's `rasa export` publishes them."""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from server.brokers.broker import EventBroker
from server.brokers.delivery import Outgoing
from server.brokers.ordering import chain_ids
from server.errors import (
    ExportInterrupted,
    InvalidConversationId,
    NothingToExport,
    first_line,
)
from server.trackers.events import left_out_by_rasa
from server.trackers.store import ReadsEverything, ReadsInBatches, TrackerStore

# Messages handed to the broker at a time (each made, its event parsed, only then).
PUBLISH_CHUNK = 1000
# Conversations read in one round trip from a store that reads in batches (SQL, Redis).
EXPORT_BATCH = 100


@dataclass(frozen=True, slots=True)
class Selected:
    """One event to publish, kept as JSON text until then: with every event of a store held
    as a dict, an export took 5 to 9 times the events' JSON in memory (now that JSON and
    about 240 bytes more an event: 1.6 times for user messages, up to 4 for short events)."""

    stamp: float  # the event's timestamp in the tracker store (an offset moves the body's)
    sender_id: str
    message_id: str  # the id the live broker gives the same event
    previous_id: str | None  # the conversation's event before it in this export
    text: str  # the event as published, compact JSON (ASCII: one byte a character)

    def outgoing(self, export_process_id: str | None = None) -> Outgoing:
        event = json.loads(self.text)
        return Outgoing(
            self.sender_id,
            event,
            self.message_id,
            self.previous_id,
            export_process_id=export_process_id,
        )


@dataclass
class Selection:
    """The events to publish, in timestamp order, and what the selection found."""

    conversations: list[str]  # those with events selected
    selected: list[Selected]
    # Requested conversation ids the tracker store does not hold.
    missing: list[str] = field(default_factory=list)

    @property
    def messages(self) -> list[Outgoing]:
        """The messages as the broker gets them (without the export's run id), all made at
        once: `publish_events` makes them a chunk at a time."""
        return [item.outgoing() for item in self.selected]


def _timestamp(event: dict[str, Any]) -> float:
    value = event.get("timestamp")
    return float(value) if isinstance(value, (int, float)) else 0.0


async def select_events(
    store: TrackerStore,
    conversation_ids: list[str] | None = None,
    minimum_timestamp: float | None = None,
    maximum_timestamp: float | None = None,
    offset_seconds: int = 0,
) -> Selection:
    """Every event of the chosen conversations (all sessions) with `minimum_timestamp <=
    timestamp < maximum_timestamp`, sorted by timestamp (a conversation's events keep their
    order among equal ones). Each message has the id the live broker gives the same event, so
    a consumer can drop what it already has, and names the one before it in its conversation
    among those selected (the first names none). `offset_seconds` moves the timestamps of
    the messages (Rasa's `--offset-timestamps-by-seconds`), not those the range is of."""
    missing: list[str] = []
    selected: list[Selected] = []

    def select(sender_id: str, loaded: list[dict[str, Any]]) -> None:
        events = [event for event in loaded if not left_out_by_rasa(event)]
        previous: str | None = None  # the conversation's last event selected
        published = [_moved(event, offset_seconds) for event in events]
        ids = chain_ids(sender_id, published, None)
        for event, body, (message_id, _) in zip(events, published, ids, strict=True):
            stamp = _timestamp(event)
            if minimum_timestamp is not None and stamp < minimum_timestamp:
                continue
            if maximum_timestamp is not None and stamp >= maximum_timestamp:
                continue
            # Linked to the event before it in this export: one left out is not coming, and
            # a consumer restoring the order would wait for it for ever.
            text = json.dumps(body, separators=(",", ":"))
            selected.append(Selected(stamp, sender_id, message_id, previous, text))
            previous = message_id

    if conversation_ids:
        # Read alone: listing the store's conversations reads all of them on DynamoDB.
        chosen = sorted(set(conversation_ids))
        async for sender_id, loaded in _each_stored(store, chosen):
            if loaded is None:
                missing.append(sender_id)
            else:
                select(sender_id, loaded)
    elif isinstance(store, ReadsEverything):
        found = 0
        async for sender_id, loaded in store.each_conversation():
            found += 1
            select(sender_id, loaded)
        if not found:
            raise NothingToExport("the tracker store holds no conversation: nothing to export")
    else:
        chosen = sorted(set(await store.keys()))
        if not chosen:
            raise NothingToExport("the tracker store holds no conversation: nothing to export")
        async for sender_id, loaded in _each_stored(store, chosen):
            if loaded is not None:  # (else deleted since it was listed)
                select(sender_id, loaded)
    if conversation_ids and len(missing) == len(chosen):
        raise NothingToExport(
            "none of the conversations of --conversation-ids is in the tracker store: "
            + ", ".join(missing)
        )
    if not selected:
        raise NothingToExport("no event of these conversations is within the requested time range")
    # (A conversation's events keep their order among equal timestamps.)
    selected.sort(key=lambda item: (item.stamp, item.sender_id))
    conversations = sorted({item.sender_id for item in selected})
    return Selection(conversations, selected, missing)


async def _each_stored(
    store: TrackerStore, sender_ids: list[str]
) -> AsyncIterator[tuple[str, list[dict[str, Any]] | None]]:
    """Each conversation of `sender_ids`, in that order, with its stored events (None: the
    store holds none); EXPORT_BATCH in one round trip where the store reads in batches."""
    if not isinstance(store, ReadsInBatches):
        for sender_id in sender_ids:
            yield sender_id, await _stored(store, sender_id)
        return
    for start in range(0, len(sender_ids), EXPORT_BATCH):
        batch = sender_ids[start : start + EXPORT_BATCH]
        loaded = await store.load_all_of([i for i in batch if _storable(i)])
        for sender_id in batch:
            yield sender_id, loaded.pop(sender_id, None)


def _storable(sender_id: str) -> bool:
    """False for an id with lone surrogates (bytes the locale could not decode, given on
    the command line): no store can hold one, and SQLite, Redis and PostgreSQL raise on it."""
    try:
        sender_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _stored(store: TrackerStore, sender_id: str) -> list[dict[str, Any]] | None:
    """The conversation's stored events; None when the store holds none (or could not
    hold one of this id)."""
    if not _storable(sender_id):
        return None
    try:
        return await store.load_all(sender_id) or None
    except InvalidConversationId:
        return None


def _moved(event: dict[str, Any], offset_seconds: int) -> dict[str, Any]:
    """The event as published with an offset: its timestamp moved, when it has one."""
    stamp = event.get("timestamp")
    if not offset_seconds or not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
        return event
    return {**event, "timestamp": stamp + offset_seconds}


async def publish_events(broker: EventBroker, selection: Selection) -> int:
    """Publishes the selected events in order, PUBLISH_CHUNK at a time; how many. A broker
    failure stops at once with ExportInterrupted, naming the tracker store's timestamp
    (before an offset) of the first event not published."""
    run = uuid.uuid4().hex  # as Rasa's: one per run, on each RabbitMQ message
    selected, published = selection.selected, 0
    while published < len(selected):
        chunk = selected[published : published + PUBLISH_CHUNK]
        pending = deque(item.outgoing(run) for item in chunk)
        try:
            await broker.deliver(pending)
        except Exception as exc:
            if not pending:
                raise
            published += len(chunk) - len(pending)
            total = len(selected)
            done = f"after {published} of {total} events" if published else "nothing published"
            raise ExportInterrupted(
                # (An error without text, a timeout's, ended the line with a bare colon.)
                f"the event broker failed ({done}): "
                + first_line(exc, limit=None, default=f"{type(exc).__name__} (no answer)"),
                published,
                selected[published].stamp,
            ) from exc
        published += len(chunk)
    return published
