"""`botserver export`: a tracker store's stored events published to an event broker,
conversation after conversation, each one's oldest first, as Rasa's `rasa export` does."""

from __future__ import annotations

import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from server.brokers.broker import EventBroker
from server.brokers.delivery import Outgoing
from server.brokers.ordering import chain_ids
from server.errors import (
    BotServerError,
    CorruptConversation,
    ExportInterrupted,
    InvalidConversationId,
    NothingToExport,
    first_line,
    how_many,
)
from server.json_values import nests_deeper_in_text
from server.tasks import stop_if_cancelled
from server.trackers.events import left_out_by_rasa
from server.trackers.store import (
    STORED_EVENT_DEPTH,
    ReadsEverything,
    ReadsInBatches,
    TrackerStore,
)

logger = logging.getLogger(__name__)

# Messages handed to the broker at a time (each made, its event parsed, only then), and
# about the most of their JSON (fewer where 1,000 of them hold more: long user messages).
PUBLISH_CHUNK = 1000
PUBLISH_CHUNK_BYTES = 8_000_000
# Conversations read in one round trip from a store that reads in batches (SQL, Redis),
# and about the most of their stored JSON held at a time (more round trips where 100 hold
# more; a conversation larger than it is still read whole).
EXPORT_BATCH = 100
EXPORT_BATCH_BYTES = 8_000_000


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
    # How many events of its conversation with its timestamp go out before it (0: none).
    rank: int = 0

    def resume_here(self) -> ResumePoint:
        """The point an export goes on from to publish this event and those after it."""
        return ResumePoint(self.sender_id, self.stamp, self.rank)

    def resume_after(self) -> ResumePoint:
        """The point an export goes on from to publish what comes after this event."""
        return ResumePoint(self.sender_id, self.stamp, self.rank + 1)

    def outgoing(self, export_process_id: str | None = None) -> Outgoing:
        event = json.loads(self.text)
        return Outgoing(
            self.sender_id,
            event,
            self.message_id,
            self.previous_id,
            export_process_id=export_process_id,
        )


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where an interrupted export goes on: conversations before `sender_id` in the export's
    order are done, and so are its events before `timestamp` (as stored, before an offset)
    and the first `skip` of those at `timestamp` (in the order they go out in)."""

    sender_id: str
    timestamp: float
    skip: int = 0


@dataclass
class Progress:
    """How far `publish_events` got, kept up to date as it goes (for the line an export
    stopped by hand ends with): events the broker took, and where to go on."""

    published: int = 0
    resume: ResumePoint | None = None  # the first event not published (None: none yet)


@dataclass
class Found:
    """What an export found, filled in as it goes."""

    conversations: int = 0  # those with events selected
    # Requested conversation ids the tracker store does not hold.
    missing: list[str] = field(default_factory=list)
    # Conversations skipped as unreadable (`skip_unreadable`), in the order met.
    unreadable: list[str] = field(default_factory=list)


@dataclass
class Selection:
    """The events to publish, in the order they go out, and what the selection found."""

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
    resume: ResumePoint | None = None,
) -> Selection:
    """`selected_events` all at once (tests, and a look at what an export would send)."""
    found = Found()
    chosen = selected_events(
        store, conversation_ids, minimum_timestamp, maximum_timestamp, offset_seconds, resume, found
    )
    selected = [item async for item in chosen]
    conversations = sorted({item.sender_id for item in selected})
    return Selection(conversations, selected, found.missing)


async def selected_events(
    store: TrackerStore,
    conversation_ids: list[str] | None = None,
    minimum_timestamp: float | None = None,
    maximum_timestamp: float | None = None,
    offset_seconds: int = 0,
    resume: ResumePoint | None = None,
    found: Found | None = None,
    skip_unreadable: bool = False,
) -> AsyncIterator[Selected]:
    """Every event of the chosen conversations (all sessions) with `minimum_timestamp <= timestamp
    < maximum_timestamp`, conversation after conversation as Rasa's `rasa export` publishes them
    (here by id, Rasa's in a set's order; DynamoDB: in the table's scan order), each one's by
    timestamp (its events keep their stored order among equal ones): one conversation is held at
    a time, not the store. Each message has the id the live broker gives the same event, so a
    consumer can drop what it already has, and names the one before it in its conversation among
    those selected (the first names none). `offset_seconds` moves the timestamps of the messages
    (Rasa's `--offset-timestamps-by-seconds`), not those the range is of. `resume`: only what an
    interrupted export did not publish (each event has its `rank` among those of its
    conversation and time, which a resume point counts). `found` is filled in. A conversation
    the store cannot read (CorruptConversation) stops the selection, or with `skip_unreadable`
    is logged, named in `found.unreadable` and passed over."""
    found = found if found is not None else Found()
    unreadable: Callable[[str, CorruptConversation], None] | None = None
    if skip_unreadable:

        def unreadable(sender_id: str, exc: CorruptConversation) -> None:
            found.unreadable.append(sender_id)
            logger.warning("Skipped (it cannot be read): %s", first_line(exc, limit=None))

    chosen: list[str] = []
    selected_any = False
    scanned = False  # in the store's own order (DynamoDB's scan), not by id

    def select(sender_id: str, loaded: list[dict[str, Any]]) -> list[Selected]:
        events: list[dict[str, Any]] = []
        published: list[dict[str, Any]] = []
        texts: list[str] = []
        for stored_index, event in enumerate(loaded):
            if left_out_by_rasa(event):
                continue
            moved = _moved(event, offset_seconds)
            text = _sendable(moved)
            if text is None:  # (before: a traceback, and nothing more exported)
                logger.warning(
                    "Conversation '%s': event %d is nested too deeply to send (more than %d "
                    "levels); skipped",
                    sender_id,
                    stored_index,
                    STORED_EVENT_DEPTH,
                )
                continue
            events.append(event)
            published.append(moved)
            texts.append(text)
        ids = chain_ids(sender_id, published, None)
        low, skip, skip_at = minimum_timestamp, 0, None
        if resume is not None and sender_id == resume.sender_id:
            low = resume.timestamp if low is None else max(low, resume.timestamp)
            skip, skip_at = resume.skip, resume.timestamp
        in_range = [
            (stamp, index)
            for index, stamp in enumerate(_timestamp(event) for event in events)
            if (low is None or stamp >= low)
            and (maximum_timestamp is None or stamp < maximum_timestamp)
        ]
        in_range.sort(key=lambda pair: pair[0])  # (stable: stored order among equal ones)
        going: list[tuple[int, int]] = []  # (index, rank) in the order they go out
        rank, before = 0, None
        for stamp, index in in_range:
            rank = rank + 1 if stamp == before else 0
            before = stamp
            # (Those of the resumed timestamp an interrupted export published already.)
            if not (skip and stamp == skip_at and rank < skip):
                going.append((index, rank))
        # Each linked to the event before it in this export, in stored order: one left out is
        # not coming, and a consumer restoring the order would wait for it for ever.
        previous: dict[int, str | None] = {}
        last: str | None = None
        for index in sorted(index for index, _ in going):
            previous[index], last = last, ids[index][0]
        return [
            Selected(
                _timestamp(events[index]),
                sender_id,
                ids[index][0],
                previous[index],
                texts[index],
                rank,
            )
            for index, rank in going
        ]

    conversations: AsyncIterator[tuple[str, list[dict[str, Any]] | None]]
    if conversation_ids:
        # Read alone: listing the store's conversations reads all of them on DynamoDB.
        chosen = sorted(set(conversation_ids))
        conversations = _each_stored(store, _from_resume(chosen, resume), unreadable)
    elif isinstance(store, ReadsEverything):
        conversations = _after_resume(store, resume, unreadable)
        scanned = True
    else:
        chosen = sorted(set(await store.keys()))
        if not chosen:
            raise NothingToExport("the tracker store holds no conversation: nothing to export")
        conversations = _each_stored(store, _from_resume(chosen, resume), unreadable)
    seen = False
    async for sender_id, loaded in conversations:
        seen = True
        if loaded is None:
            skipped = bool(found.unreadable) and found.unreadable[-1] == sender_id
            if conversation_ids and not skipped:
                found.missing.append(sender_id)
            continue  # (else deleted since it was listed)
        items = select(sender_id, loaded)
        del loaded
        if items:
            found.conversations += 1
            selected_any = True
        for item in items:
            yield item
    if not selected_any and found.unreadable:
        raise NothingToExport(
            f"nothing to publish: {how_many(len(found.unreadable), 'conversation')} could not "
            "be read (" + ", ".join(found.unreadable) + "), and no other has events to export"
        )
    if not seen and not conversation_ids and resume is None:
        raise NothingToExport("the tracker store holds no conversation: nothing to export")
    if conversation_ids and chosen and len(found.missing) == len(chosen):
        raise NothingToExport(
            "none of the conversations of --conversation-ids is in the tracker store: "
            + ", ".join(found.missing)
        )
    if resume is not None and not seen and scanned:
        raise NothingToExport(
            f"--resume-from: conversation '{resume.sender_id}' is no longer in the tracker "
            "store, and without it the conversations after it in the table's scan order "
            "cannot be told from those before: export again without --resume-from (a "
            "consumer drops what it already has by message id)"
        )
    if not selected_any and resume is not None and not seen:
        raise NothingToExport(
            f"--resume-from: conversation '{resume.sender_id}' and those after it are no "
            "longer in the tracker store: nothing left to publish"
        )
    if not selected_any:
        raise NothingToExport("no event of these conversations is within the requested time range")


def _from_resume(sender_ids: list[str], resume: ResumePoint | None) -> list[str]:
    """The ids (sorted) an export resumed at `resume` has yet to go through."""
    return sender_ids if resume is None else [i for i in sender_ids if i >= resume.sender_id]


async def _after_resume(
    store: ReadsEverything,
    resume: ResumePoint | None,
    unreadable: Callable[[str, CorruptConversation], None] | None,
) -> AsyncIterator[tuple[str, list[dict[str, Any]] | None]]:
    """A store's own order (DynamoDB's scan): from `resume`'s conversation on. One that
    cannot be read before it is passed over: the export resumed went through it already
    (before, it stopped this one, or was named as skipped again)."""
    going = resume is None

    def passed_over(sender_id: str, exc: CorruptConversation) -> None:
        nonlocal going
        going = going or (resume is not None and sender_id == resume.sender_id)
        if not going:
            return
        if unreadable is None:
            raise exc
        unreadable(sender_id, exc)

    async for sender_id, events in store.each_conversation(passed_over):
        going = going or (resume is not None and sender_id == resume.sender_id)
        if going:
            yield sender_id, events


async def _each_stored(
    store: TrackerStore,
    sender_ids: list[str],
    unreadable: Callable[[str, CorruptConversation], None] | None = None,
) -> AsyncIterator[tuple[str, list[dict[str, Any]] | None]]:
    """Each conversation of `sender_ids`, in that order, with its stored events (None: the
    store holds none); EXPORT_BATCH in one round trip where the store reads in batches. One
    the store cannot read goes to `unreadable` where given (None in its place), the rest of
    its batch then read one at a time; else its CorruptConversation ends the export."""
    if not isinstance(store, ReadsInBatches):
        for sender_id in sender_ids:
            yield sender_id, await _readable(store, sender_id, unreadable)
        return
    for start in range(0, len(sender_ids), EXPORT_BATCH):
        batch = sender_ids[start : start + EXPORT_BATCH]
        done = 0  # of the batch, handed on
        loaded = store.load_all_of([i for i in batch if _storable(i)], EXPORT_BATCH_BYTES)
        try:
            ahead = await anext(loaded, None)
            for sender_id in batch:
                if ahead is not None and ahead[0] == sender_id:
                    yield ahead
                    done += 1
                    ahead = await anext(loaded, None)
                else:
                    yield sender_id, None
                    done += 1
        except CorruptConversation:
            if unreadable is None:
                raise
            # (The batch's read cannot go on past the conversation it failed on.)
            for sender_id in batch[done:]:
                yield sender_id, await _readable(store, sender_id, unreadable)


async def _readable(
    store: TrackerStore,
    sender_id: str,
    unreadable: Callable[[str, CorruptConversation], None] | None,
) -> list[dict[str, Any]] | None:
    """`_stored`, where a conversation that cannot be read goes to `unreadable` (None)."""
    try:
        return await _stored(store, sender_id)
    except CorruptConversation as exc:
        if unreadable is None:
            raise
        unreadable(sender_id, exc)
        return None


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


def _sendable(event: dict[str, Any]) -> str | None:
    """The event as its message's JSON; None when it nests more than STORED_EVENT_DEPTH
    levels (a store reads such an event as one left out, `too_deep_to_serve`; Redis's read of
    Rasa's one-string layout as it is hands one over)."""
    try:
        text = json.dumps(event, separators=(",", ":"))
    except RecursionError:
        return None
    return None if nests_deeper_in_text(text, event, STORED_EVENT_DEPTH) else text


def _moved(event: dict[str, Any], offset_seconds: int) -> dict[str, Any]:
    """The event as published with an offset: its timestamp moved, when it has one."""
    stamp = event.get("timestamp")
    if not offset_seconds or not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
        return event
    return {**event, "timestamp": stamp + offset_seconds}


async def publish_events(
    broker: EventBroker,
    selected: Selection | AsyncIterator[Selected],
    progress: Progress | None = None,
) -> int:
    """Publishes the selected events in order, PUBLISH_CHUNK at a time; how many. A broker
    failure stops at once with ExportInterrupted, naming the conversation and the tracker
    store's timestamp (before an offset) of the first event not published; so does the
    tracker store failing once some went out. `progress` is kept up to date (a cancelled
    export is cancelled as it is: it says how far it got)."""
    run = uuid.uuid4().hex  # as Rasa's: one per run, on each RabbitMQ message
    progress = progress if progress is not None else Progress()
    chunk: list[Selected] = []
    chunk_bytes = 0
    last: Selected | None = None  # the last one the broker took

    def stopped_at(pending: int) -> None:
        """Counts the chunk's events published, with `pending` of them left, and where to go
        on: at the first one left, or after the last one out (the next one is not read)."""
        nonlocal last
        taken = len(chunk) - pending
        progress.published += taken
        if taken:
            last = chunk[taken - 1]
        if pending:
            progress.resume = chunk[taken].resume_here()
        elif last is not None:
            progress.resume = last.resume_after()

    async def deliver() -> None:
        # (A stop a Redis call or a broker's own wait dropped: before, the export went on.)
        stop_if_cancelled()
        pending = deque(item.outgoing(run) for item in chunk)
        try:
            await broker.deliver(pending)
        except BaseException as exc:
            stopped_at(len(pending))
            chunk.clear()  # (accounted for)
            if not isinstance(exc, Exception) or not pending or progress.resume is None:
                raise
            done = (
                f"after {how_many(progress.published, 'event')}"
                if progress.published
                else "nothing published"
            )
            raise ExportInterrupted(
                # (An error without text, a timeout's, ended the line with a bare colon.)
                f"the event broker failed ({done}): "
                + first_line(exc, limit=None, default=f"{type(exc).__name__} (no answer)"),
                progress.published,
                progress.resume.timestamp,
                progress.resume.sender_id,
                progress.resume.skip,
            ) from exc
        stopped_at(0)
        chunk.clear()

    items = _each(selected.selected) if isinstance(selected, Selection) else selected
    try:
        async for item in items:
            chunk.append(item)
            chunk_bytes += len(item.text)
            if len(chunk) == PUBLISH_CHUNK or chunk_bytes >= PUBLISH_CHUNK_BYTES:
                await deliver()
                chunk_bytes = 0
    except BotServerError as exc:
        # The store failed reading on (events are read as they are published): say what went
        # out and where to go on, as for a broker failure. (Before anything went out, or
        # a broker failure: as it is.)
        if isinstance(exc, ExportInterrupted) or last is None:
            raise
        resume = chunk[0].resume_here() if chunk else last.resume_after()
        progress.resume = resume
        raise ExportInterrupted(
            f"the tracker store failed (after {how_many(progress.published, 'event')}): "
            + first_line(exc, limit=None),
            progress.published,
            resume.timestamp,
            resume.sender_id,
            resume.skip,
        ) from exc
    except BaseException:  # (cancelled while reading: from the chunk not yet handed on)
        if chunk and last is not None:
            progress.resume = chunk[0].resume_here()
        raise
    if chunk:
        await deliver()
    return progress.published


async def _each(items: list[Selected]) -> AsyncIterator[Selected]:
    for item in items:
        yield item


async def export_events(broker: EventBroker, store: TrackerStore) -> int:
    """Every event of `store` published to `broker` (`selected_events`, `publish_events`)."""
    return await publish_events(broker, selected_events(store))
