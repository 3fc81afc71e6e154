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
    # Each message's event's timestamp in the tracker store (with an offset, the message's
    # is moved): where an interrupted export goes on from.
    stored_timestamps: list[float]
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
    offset_seconds: int = 0,
) -> Selection:
    """Every event of the chosen conversations (all sessions) with `minimum_timestamp <=
    timestamp < maximum_timestamp`, sorted by timestamp (a conversation's events keep their
    order among equal ones). Each message has the id the live broker gives the same event, so
    a consumer can drop what it already has, and names the one before it in its conversation
    among those selected (the first names none). `offset_seconds` moves the timestamps of
    the messages (Rasa's `--offset-timestamps-by-seconds`), not those the range is of."""
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
    selected: list[tuple[float, Outgoing]] = []
    for sender_id in chosen:
        loaded = await store.load_all(sender_id) or []
        events = [event for event in loaded if not left_out_by_rasa(event)]
        previous: str | None = None  # the conversation's last event selected
        published = [_moved(event, offset_seconds) for event in events]
        for event, item in zip(events, outgoing(sender_id, published, None), strict=True):
            stamp = _timestamp(event)
            if minimum_timestamp is not None and stamp < minimum_timestamp:
                continue
            if maximum_timestamp is not None and stamp >= maximum_timestamp:
                continue
            # Linked to the event before it in this export: one left out is not coming, and
            # a consumer restoring the order would wait for it for ever.
            selected.append((stamp, replace(item, previous_id=previous)))
            previous = item.message_id
    if not selected:
        raise NothingToExport("no event of these conversations is within the requested time range")
    selected.sort(key=lambda pair: pair[0])
    messages = [item for _, item in selected]
    conversations = sorted({item.sender_id for item in messages})
    return Selection(conversations, messages, [stamp for stamp, _ in selected], missing)


def _moved(event: dict[str, Any], offset_seconds: int) -> dict[str, Any]:
    """The event as published with an offset: its timestamp moved, when it has one."""
    stamp = event.get("timestamp")
    if not offset_seconds or not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
        return event
    return {**event, "timestamp": stamp + offset_seconds}


async def publish_events(
    broker: EventBroker, messages: list[Outgoing], stored_timestamps: list[float] | None = None
) -> int:
    """Publishes the messages in order; how many. A broker failure stops at once with
    ExportInterrupted, naming the timestamp of the first message not published (its
    `stored_timestamps` entry when given: the tracker store's, before an offset)."""
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
            stored_timestamps[published] if stored_timestamps else _timestamp(pending[0].event),
        ) from exc
    return len(messages)
