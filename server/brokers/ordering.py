"""Identity and order of published events, and the consumer's rule that restores them.

Each message's id is derived from its content (and, for a repeat of an identical event, how
many came before it in its run: see `chain_ids`), the same id whichever process sends it, however
often, and names the id of the event before it in the conversation. A consumer that drops ids
it has seen and holds a message until its predecessor is out (`ConversationOrderer`) sees every
event exactly once, in order per conversation, across processes and broker outages.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from server.brokers.event_json import canonical_text

# AMQP header naming the message_id of the event before this one in its conversation.
PREVIOUS_ID_HEADER = "previous_message_id"
# Rasa's AMQP header on the messages of one `rasa export` run (a uuid4 hex per run).
EXPORT_PROCESS_ID_HEADER = "rasa-export-process-id"

T = TypeVar("T")


def event_message_id(sender_id: str, event: dict[str, Any]) -> str:
    """The id of one event of one conversation: a hash of its JSON, keys sorted."""
    return _content_id(canonical_text({"sender_id": sender_id, **event}))


def _content_id(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def chain_ids(
    sender_id: str,
    events: list[dict[str, Any]],
    previous_event: dict[str, Any] | None,
    before: Sequence[dict[str, Any]] = (),
    sizes: list[int] | None = None,
) -> list[tuple[str, str | None]]:
    """(message_id, previous message_id) of each event, the first one following
    `previous_event` (the conversation's last event before these; None for a new one);
    `sizes`, if given, gets the length of each event's hashed JSON (what it weighs, known
    without writing it out again).

    An event byte-identical to earlier ones of its run (the events in a row, up to it, with
    its timestamp) has the id of its content and how many came before (a client's events of
    one timestamp; see docs/persistence.md for the repeats still sharing an id), the same
    whichever process publishes it, or `botserver export`. `before` is the run that ends with
    `previous_event` (`same_time_run`): it gives `previous_event` the id it was published
    with, and `events` the count of their twins in it when they share its timestamp."""
    if before and (not events or events[0].get("timestamp") != before[-1].get("timestamp")):
        # Another run: only the twins of `previous_event` in its own count (an import's run
        # of 100,000 events is not hashed for one id).
        last = before[-1]
        before = [event for event in before if event == last]
    ids = _run_ids(sender_id, [*before, *events], sizes)
    if sizes is not None:
        del sizes[: len(before)]
    if before and previous_event is before[-1]:  # a turn's: hashed once, in its run
        previous: str | None = ids[len(before) - 1]
    else:
        previous = None if previous_event is None else event_message_id(sender_id, previous_event)
        # Of its run when `before` ends with it (not so after a PUT that changed it).
        if before and previous == event_message_id(sender_id, before[-1]):
            previous = ids[len(before) - 1]
    chained: list[tuple[str, str | None]] = []
    for current in ids[len(before) :]:
        chained.append((current, previous))
        previous = current
    return chained


def _run_ids(
    sender_id: str, events: Sequence[dict[str, Any]], sizes: list[int] | None = None
) -> list[str]:
    """The message_id of each of a conversation's events in a row: of its content, and of
    how many identical ones came before it in its run of one timestamp (`sizes`: see
    `chain_ids`)."""
    run_stamp: object = None
    seen: dict[str, int] = {}  # in the current run: how many of each content
    ids: list[str] = []
    for index, event in enumerate(events):
        stamp = event.get("timestamp")
        if index == 0 or stamp != run_stamp:
            run_stamp, seen = stamp, {}
        canonical = canonical_text({"sender_id": sender_id, **event})
        if sizes is not None:
            sizes.append(len(canonical))
        content = _content_id(canonical)
        repeats = seen.get(content, 0)
        seen[content] = repeats + 1
        ids.append(content if not repeats else _repeated_id(content, repeats))
    return ids


def same_time_run(events: Sequence[Any], start: int) -> list[Any]:
    """The events just before `events[start]` that share the `timestamp` of the last of them
    (`events[start - 1]`, included), oldest first: mostly that one alone, a server stamping
    each event apart. `chain_ids`'s `before` for events from `start` on."""
    if start <= 0 or start > len(events):
        return []
    return list(events[_run_start(events, start, lambda e: e.timestamp) : start])


def stored_run(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events at the end of `events` (dicts, as stored) that share the last one's
    `timestamp`, oldest first: `same_time_run` over a conversation's stored events."""
    if not events:
        return []
    return list(events[_run_start(events, len(events), lambda e: e.get("timestamp")) :])


def _run_start(events: Sequence[Any], end: int, stamp: Callable[[Any], Any]) -> int:
    """Where the run of events sharing `events[end - 1]`'s stamp begins (end > 0): walked
    back from the end, so a turn reads its last few events, not the conversation."""
    last = stamp(events[end - 1])
    first = end - 1
    while first > 0 and stamp(events[first - 1]) == last:
        first -= 1
    return first


def _repeated_id(content: str, repeats: int) -> str:
    """The id of the event with the content hashed to `content` after `repeats` like it."""
    return hashlib.sha256(f"{content}#{repeats}".encode()).hexdigest()[:32]


class ConversationOrderer(Generic[T]):
    """Consumer side: exactly once (ids seen are dropped), in order (a message waits for the
    one it names as previous). `add` returns what can be handed on, in order."""

    def __init__(self) -> None:
        self._released: set[str] = set()
        self._waiting: dict[str | None, list[tuple[str, T]]] = defaultdict(list)
        self._waiting_ids: set[str] = set()

    @property
    def waiting(self) -> int:
        """Messages held back because their predecessor has not arrived."""
        return len(self._waiting_ids)

    def add(self, message_id: str, previous_id: str | None, payload: T) -> list[T]:
        if message_id in self._released or message_id in self._waiting_ids:
            return []
        if previous_id is not None and previous_id not in self._released:
            self._waiting[previous_id].append((message_id, payload))
            self._waiting_ids.add(message_id)
            return []
        return self._release(message_id, payload)

    def release_waiting(self) -> list[T]:
        """Give up waiting (a predecessor that will never come, e.g. written by a replace):
        hand on everything held, oldest chains first."""
        out: list[T] = []
        for previous_id in list(self._waiting):
            for message_id, payload in self._waiting.pop(previous_id, []):
                self._waiting_ids.discard(message_id)
                out.extend(self._release(message_id, payload))
        return out

    def _release(self, message_id: str, payload: T) -> list[T]:
        out: list[T] = []
        ready = [(message_id, payload)]
        while ready:
            current, item = ready.pop(0)
            if current in self._released:
                continue
            self._released.add(current)
            self._waiting_ids.discard(current)
            out.append(item)
            ready.extend(self._waiting.pop(current, []))
        return out
