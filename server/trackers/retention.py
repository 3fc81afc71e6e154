"""Retention: deleting conversations older than a configured age, run by a command."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from server.trackers.lock import LockStore
from server.trackers.store import TrackerStore


async def delete_conversations_older_than(
    store: TrackerStore,
    max_age_seconds: float,
    locks: LockStore | None = None,
    deleted_some: Callable[[int], None] | None = None,
) -> int:
    """Delete conversations whose latest event is older than `max_age_seconds`; how many.

    With the serving processes' lock store, each conversation is deleted under its lock and
    one in the middle of a turn is skipped (the turn makes it recent). Without it, a turn
    that loaded a stale conversation before the prune deleted it appends to an empty one.
    """
    if max_age_seconds <= 0:
        raise ValueError("max_age_seconds must be positive")
    hold = None if locks is None else locks.hold_idle
    return await store.delete_older_than(time.time() - max_age_seconds, hold, deleted_some)


def latest_timestamp(events: Sequence[dict[str, Any]]) -> float:
    """When the conversation of these events last moved (an event without a timestamp counts
    as oldest): what retention compares with its cutoff."""
    return max((float(event.get("timestamp") or 0.0) for event in events), default=0.0)
