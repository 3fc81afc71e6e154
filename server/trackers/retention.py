"""Retention: deleting conversations older than a configured age, run by a command."""

from __future__ import annotations

import time

from server.trackers.store import TrackerStore


async def delete_conversations_older_than(store: TrackerStore, max_age_seconds: float) -> int:
    """Delete conversations whose latest event is older than `max_age_seconds`; how many."""
    if max_age_seconds <= 0:
        raise ValueError("max_age_seconds must be positive")
    return await store.delete_older_than(time.time() - max_age_seconds)
