"""The tracker store contract: where a conversation's events (Rasa event dicts) are kept.

Event dicts returned by `load`/`load_all` may be shared with a store's cache: treat them as
read-only. `load` may return a `Snapshot` of the cache instead of a copy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, Protocol, runtime_checkable

from server.errors import CorruptConversation, InvalidConversationId
from server.json_values import nests_deeper_in_text
from server.tasks import stop_if_cancelled
from server.trackers.lock import IdleLocks

logger = logging.getLogger(__name__)

# Events of current sessions a process keeps hot by default (`cache_events`).
DEFAULT_CACHE_EVENTS = 10_000


# What Rasa's EndpointConfig takes from any section before a store sees the rest: its stores
# never read them (`url` aside, which some read as their host), and Rasa starts with them.
ENDPOINT_SETTINGS = frozenset(
    {"url", "params", "headers", "basic_auth", "token", "token_name", "cafile"}
)


def cache_events_setting(config: dict[str, Any]) -> int:
    """`cache_events` of a `tracker_store:` section (`cache_size` is its former name)."""
    return int(config.get("cache_events") or config.get("cache_size") or DEFAULT_CACHE_EVENTS)


# Levels of lists and objects a stored event may nest and still be served. A reader goes to
# nearly Python's recursion limit (about 1,000), and what then writes the event (a tracker's
# JSON, a story, the broker's message id), each deeper in the stack, failed at it: every
# turn of its conversation was a 500. Far below the limit, whatever stack they run at.
STORED_EVENT_DEPTH = 500
# A text this short cannot nest deeper (each level opens and closes with a bracket).
_SHORTEST_TOO_DEEP = 2 * STORED_EVENT_DEPTH


def stored_events(
    sender_id: str,
    texts: Iterable[Any],
    load: Callable[[Any], Any] = json.loads,
    what: str = "a stored event",
) -> list[dict[str, Any]]:
    """A conversation's stored texts (`what` each: an item, a row's data) as its events, each
    read by `load`. One that is not JSON is CorruptConversation naming the conversation
    (before: a JSONDecodeError, a 500 with a traceback), and so is one that is JSON but no
    object (before: a 500, or `botserver export`'s AttributeError, with a traceback). One
    nested deeper than STORED_EVENT_DEPTH, read or too deep to read, is left out
    (`too_deep_to_serve`). The stores call it in a thread when the texts are many."""
    texts = texts if isinstance(texts, (list, tuple)) else list(texts)
    try:
        events = [load(text) for text in texts]
    except ValueError as exc:
        raise _not_json(sender_id, what, exc) from exc
    except RecursionError:  # (before: a 500 naming it; earlier, with a traceback)
        events = [_read_or_left_out(sender_id, text, load, what) for text in texts]
    if not all(isinstance(event, dict) for event in events):
        raise CorruptConversation(
            f"Conversation '{sender_id}' holds {what} that is not a JSON object"
        )
    # (Most conversations hold no text this long: one pass over the lengths, at C speed.)
    if events and max(map(len, texts)) > _SHORTEST_TOO_DEEP:
        for index, text in enumerate(texts):
            if len(text) > _SHORTEST_TOO_DEEP and nests_deeper_in_text(
                text, events[index], STORED_EVENT_DEPTH
            ):
                events[index] = too_deep_to_serve(sender_id, events[index], what)
    return events


def _not_json(sender_id: str, what: str, exc: ValueError) -> CorruptConversation:
    return CorruptConversation(f"Conversation '{sender_id}' holds {what} that is not JSON ({exc})")


def _read_or_left_out(
    sender_id: str, text: Any, load: Callable[[Any], Any], what: str
) -> dict[str, Any]:
    """`load(text)`; a text nested deeper than the reader goes (far more than
    STORED_EVENT_DEPTH) is left out as `too_deep_to_serve`."""
    try:
        event: dict[str, Any] = load(text)
    except ValueError as exc:
        raise _not_json(sender_id, what, exc) from exc
    except RecursionError:
        return too_deep_to_serve(sender_id, {}, what)
    return event


def too_deep_to_serve(sender_id: str, event: dict[str, Any], what: str) -> dict[str, Any]:
    """What a store reads in place of a stored event nested deeper than STORED_EVENT_DEPTH
    (another program's: this server refuses such input), logged as a warning naming the
    conversation and the event (`event` is {} for one too deep to read): its timestamp
    alone, an item Rasa leaves out of a tracker (`left_out_by_rasa`). Its tracker, turns,
    story, export and the broker's message ids all go on without it, and a prune still sees
    when it was stored. The store keeps it."""
    kind, stamp = event.get("event"), event.get("timestamp")
    kind = kind[:60] if isinstance(kind, str) else "?"
    dated = isinstance(stamp, int | float) and not isinstance(stamp, bool)
    logger.warning(
        "Conversation '%s' holds %s ('%s' event, timestamp %s) nested more than %d levels "
        "deep, more than this server serves; left out",
        sender_id,
        what,
        kind,
        stamp if dated else "none",
        STORED_EVENT_DEPTH,
    )
    return {"timestamp": stamp} if dated else {}


# Takes, without waiting, the locks of those conversations no turn holds; yields them and
# releases the locks after the block (`LockStore.hold_idle`).
Hold = Callable[[list[str]], AbstractAsyncContextManager[IdleLocks]]


def holding(hold: Hold | None, sender_ids: list[str]) -> AbstractAsyncContextManager[IdleLocks]:
    """The conversations of `sender_ids` a prune may delete now: with no lock store, all.
    Only those still held as a delete goes out (`IdleLocks.still_held`, then `in` it): a
    lock found lost meanwhile leaves its conversation alone. A prune asked to stop stops
    here, before its next batch (`stop_if_cancelled`), with or without a lock store."""
    stop_if_cancelled()
    return nullcontext(IdleLocks(sender_ids)) if hold is None else hold(sender_ids)


# Rasa's `sender_id`, `intent_name` and `action_name` columns hold 255 characters
# (PostgreSQL and MySQL enforce it).
NAME_COLUMN_LENGTH = 255


def check_conversation_id(sender_id: str) -> None:
    """Refuses an id some store cannot hold, whichever store this server uses, so that a
    conversation never works on one store and fails on another: longer than the column, or
    with a NUL character (PostgreSQL's text types cannot hold one), or with a lone UTF-16
    surrogate (no SQL store or Redis can encode it: socket.io's JSON reader takes one)."""
    if len(sender_id) > NAME_COLUMN_LENGTH:
        raise InvalidConversationId(
            f"The conversation id is longer than {NAME_COLUMN_LENGTH} characters."
        )
    if "\x00" in sender_id:
        raise InvalidConversationId("The conversation id holds a NUL character.")
    if not sender_id.isascii():
        try:
            sender_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidConversationId(
                "The conversation id holds a lone surrogate, which is no Unicode text."
            ) from None


class RowBudget:
    """A batch read's rows (`(sender_id, data)`, each conversation's together, conversations
    in code point order) until `max_bytes` of data is taken (None: all): a conversation
    begun is always finished, so one larger than the budget still comes whole."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.rows: list[tuple[str, str]] = []
        self.size = 0
        self._seen: set[str] = set()

    def rows_to_fetch(self) -> int:
        """How many rows to ask the database for next: what the budget has room for at the
        rows' mean size so far (16 to 4,096; 64 first), so that a fetch of long rows does not
        take far more than the budget, nor one of short rows a round trip each few."""
        if not self.rows or self.max_bytes is None:
            return 64 if not self.rows else 4096
        mean = max(1, self.size // len(self.rows))
        return min(4096, max(16, (self.max_bytes - self.size) // mean))

    def take(self, sender_id: str, data: str) -> bool:
        """Keeps the row; False (not kept) when the budget is spent and the row begins a
        conversation not met yet: the read stops there."""
        if sender_id not in self._seen:
            if self.max_bytes is not None and self.size >= self.max_bytes:
                return False
            self._seen.add(sender_id)
        self.rows.append((sender_id, data))
        self.size += len(data)
        return True


@runtime_checkable
class ReadsEverything(Protocol):
    """A store that reads all its conversations in one pass for less than `keys()` and a
    `load_all()` of each (DynamoDB, where listing the keys reads every item whole)."""

    def each_conversation(
        self, unreadable: Callable[[str, CorruptConversation], None] | None = None
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """Every conversation that has events, with all of them (`load_all`'s). One that
        cannot be read is CorruptConversation, which ends the pass; with `unreadable`, it is
        handed to it instead and the pass goes on."""
        ...


@runtime_checkable
class ReadsInBatches(Protocol):
    """A store that reads several whole conversations in one round trip (SQL, Redis), where
    a `load_all()` of each took one a conversation."""

    def load_all_of(
        self, sender_ids: Sequence[str], max_bytes: int | None = None
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """Each of `sender_ids` (sorted) that has events, in that order, with every one of
        them (`load_all`'s): read together, each parsed only as it is handed on. `max_bytes`:
        about that much of their stored JSON is held at a time (read in several round trips
        where the conversations hold more; one larger than it is read whole)."""
        ...


@runtime_checkable
class SetsUpOnFirstUse(Protocol):
    """A store that sets itself up on its first use, in the background (the SQL store
    migrates its schema): a stop gives a set-up under way what is left of its graceful
    period, and `close()` gives up one still running, saying so."""

    async def setup_done(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds for the set-up under way; whether none is left."""
        ...


class TrackerStore(Protocol):
    """Append-only event storage per conversation (`sender_id`)."""

    # True when the data lives in this process only (refused with several workers).
    process_local: bool
    # Events of current sessions this process keeps hot: the store's own cache (if it has
    # one) and the hot trackers over it each hold at most this many.
    cache_events: int

    async def append(self, sender_id: str, events: list[dict[str, Any]]) -> int | None:
        """Append these new events, in one transaction. Returns what they weigh beyond 1
        each as stored (see weight.py), or None from a store that does not weigh them."""

    async def load(self, sender_id: str) -> Sequence[dict[str, Any]] | None:
        """The current session's events (a read-only sequence); None when the conversation
        does not exist."""

    async def load_all(self, sender_id: str) -> list[dict[str, Any]] | None:
        """Every event of every session; None when the conversation does not exist."""

    async def replace(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        """Replace all stored events of the conversation, in one transaction."""

    async def keys(self) -> list[str]:
        """Every stored conversation id."""

    async def delete(self, sender_id: str) -> None:
        """Delete the conversation (no error if it does not exist)."""

    async def delete_older_than(
        self,
        cutoff_timestamp: float,
        hold: Hold | None = None,
        deleted_some: Callable[[int], None] | None = None,
    ) -> int:
        """Delete conversations whose latest event is older than the cutoff; how many.

        With `hold`, each batch is deleted under the conversations' locks, and those whose
        lock a turn holds are skipped (their turn makes them recent). `deleted_some` is told
        each batch's count as it is deleted (for what a prune stopped midway says).
        """

    async def ping(self) -> None:
        """Raise `StoreUnavailable` when the store cannot be reached."""

    async def close(self) -> None:
        """Release connections."""
