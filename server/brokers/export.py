"""`botserver export`: a tracker store's stored events published to an event broker, oldest
first, as Rasa's `rasa export` publishes them."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from server.brokers.broker import EventBroker
from server.brokers.delivery import Outgoing, outgoing
from server.errors import ExportInterrupted, NothingToExport
from server.trackers.events import left_out_by_rasa
from server.trackers.store import TrackerStore


@dataclass
class Selection:
    """The events to publish, in timestamp order, and what the selection found."""

    conversations: list[str]  # those with events selected
    messages: list[Outgoing]
    # Requested conversation ids the tracker store does not hold.
    missing: list[str] = field(default_factory=list)


def _timestamp(event: dict[str, Any]) -> float:
    value = event.get("timestamp")
    return float(value) if isinstance(value, (int, float)) else 0.0


async def select_events(
    store: TrackerStore,
    conversation_ids: list[str] | None = None,
    minimum_timestamp: float | None = None,
    maximum_timestamp: float | None = None,
) -> Selection:
    """Every event of the chosen conversations (all sessions) with `minimum_timestamp <=
    timestamp < maximum_timestamp`, sorted by timestamp (a conversation's events keep their
    order among equal ones). Each message has the id the live broker gives the same event, so
    a consumer can drop what it already has, and names the one before it in its conversation
    among those selected (the first names none)."""
    stored = set(await store.keys())
    if not stored:
        raise NothingToExport("the tracker store holds no conversation: nothing to export")
    missing: list[str] = []
    if conversation_ids:
        requested = set(conversation_ids)
        missing = sorted(requested - stored)
        chosen = sorted(requested & stored)
        if not chosen:
            raise NothingToExport(
                "none of the conversations of --conversation-ids is in the tracker store: "
                + ", ".join(missing)
            )
    else:
        chosen = sorted(stored)
    messages: list[Outgoing] = []
    for sender_id in chosen:
        loaded = await store.load_all(sender_id) or []
        events = [event for event in loaded if not left_out_by_rasa(event)]
        previous: str | None = None  # the conversation's last event selected
        for item in outgoing(sender_id, events, None):
            stamp = _timestamp(item.event)
            if minimum_timestamp is not None and stamp < minimum_timestamp:
                continue
            if maximum_timestamp is not None and stamp >= maximum_timestamp:
                continue
            # Linked to the event before it in this export: one left out is not coming, and
            # a consumer restoring the order would wait for it for ever.
            messages.append(replace(item, previous_id=previous))
            previous = item.message_id
    if not messages:
        raise NothingToExport("no event of these conversations is within the requested time range")
    messages.sort(key=lambda item: _timestamp(item.event))
    conversations = sorted({item.sender_id for item in messages})
    return Selection(conversations, messages, missing)


async def publish_events(broker: EventBroker, messages: list[Outgoing]) -> int:
    """Publishes the messages in order; how many. A broker failure stops at once with
    ExportInterrupted, naming the timestamp of the first message not published."""
    run = uuid.uuid4().hex  # as Rasa's: one per run, on each RabbitMQ message
    pending = deque(replace(message, export_process_id=run) for message in messages)
    try:
        await broker.deliver(pending)
    except Exception as exc:
        if not pending:
            raise
        published = len(messages) - len(pending)
        done = f"after {published} of {len(messages)} events" if published else "nothing published"
        raise ExportInterrupted(
            f"the event broker failed ({done}): {exc}",
            published,
            _timestamp(pending[0].event),
        ) from exc
    return len(messages)
