"""Identity and order of published events, and the consumer's rule that restores them.

Each message's id is derived from its content (and, for a repeat of an identical event, how
many came before it in its run: see `chain_ids`), the same id whichever process sends it, however
often, and names the id of the event before it in the conversation. A consumer that drops ids
it has seen and holds a message until its predecessor is out (`ConversationOrderer`) sees every
event exactly once, in order per conversation, across processes and broker outages.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

# AMQP header naming the message_id of the event before this one in its conversation.
PREVIOUS_ID_HEADER = "previous_message_id"
# Rasa's AMQP header on the messages of one `rasa export` run (a uuid4 hex per run).
EXPORT_PROCESS_ID_HEADER = "rasa-export-process-id"

T = TypeVar("T")


def event_message_id(sender_id: str, event: dict[str, Any]) -> str:
    """The id of one event of one conversation: a hash of its JSON, keys sorted."""
    canonical = json.dumps(
        {"sender_id": sender_id, **event}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def chain_ids(
    sender_id: str,
    events: list[dict[str, Any]],
    previous_event: dict[str, Any] | None,
    before: Sequence[dict[str, Any]] = (),
) -> list[tuple[str, str | None]]:
    """(message_id, previous message_id) of each event, the first one following
    `previous_event` (the conversation's last event before these; None for a new one).

    An event byte-identical to earlier ones of its run (the events in a row, up to it, with
    its timestamp; `before` holds those of the run before `events`) has the id of its content
    and how many came before (a client's events of one timestamp; see docs/persistence.md for
    the repeats still sharing an id), the same whichever process publishes it, or `botserver
    export`."""
    previous = None if previous_event is None else event_message_id(sender_id, previous_event)
    run_stamp: object = events[0].get("timestamp") if events else None
    seen: dict[str, int] = {}  # in the current run: how many of each content
    for event in before:
        content = event_message_id(sender_id, event)
        seen[content] = seen.get(content, 0) + 1
    ids: list[tuple[str, str | None]] = []
    for event in events:
        stamp = event.get("timestamp")
        if stamp != run_stamp:
            run_stamp, seen = stamp, {}
        content = event_message_id(sender_id, event)
        repeats = seen.get(content, 0)
        seen[content] = repeats + 1
        current = content if not repeats else _repeated_id(content, repeats)
        ids.append((current, previous))
        previous = current
    return ids


def same_time_run(events: Sequence[Any], start: int) -> list[Any]:
    """The events just before `events[start]` with its `timestamp`, oldest first (mostly none:
    a server stamps each event apart): `chain_ids`'s `before` for events from `start` on."""
    if start >= len(events):
        return []
    stamp = events[start].timestamp
    first = start
    while first > 0 and events[first - 1].timestamp == stamp:
        first -= 1
    return list(events[first:start])


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
