"""Retention: deleting conversations older than a configured age, run by a command."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from server.trackers.lock import IdleLocks, LockStore
from server.trackers.store import TrackerStore


@dataclass
class Pruned:
    """What a prune did: how many conversations it deleted, and those whose lock was found
    lost while it held them (left alone from then on: another process may be in a turn)."""

    deleted: int = 0
    lost: list[str] = field(default_factory=list)


async def delete_conversations_older_than(
    store: TrackerStore,
    max_age_seconds: float,
    locks: LockStore | None = None,
    deleted_some: Callable[[int], None] | None = None,
) -> Pruned:
    """Delete conversations whose latest event is older than `max_age_seconds`.

    With the serving processes' lock store, each conversation is deleted under its lock and
    one in the middle of a turn is skipped (the turn makes it recent). Without it, a turn
    that loaded a stale conversation before the prune deleted it appends to an empty one.
    """
    if max_age_seconds <= 0:
        raise ValueError("max_age_seconds must be positive")
    pruned = Pruned()
    if locks is None:
        pruned.deleted = await store.delete_older_than(
            time.time() - max_age_seconds, None, deleted_some
        )
        return pruned

    @asynccontextmanager
    async def hold(conversation_ids: list[str]) -> AsyncIterator[IdleLocks]:
        async with locks.hold_idle(conversation_ids) as idle:
            try:
                yield idle
            finally:
                pruned.lost.extend(idle.lost)

    pruned.deleted = await store.delete_older_than(
        time.time() - max_age_seconds, hold, deleted_some
    )
    return pruned


def latest_timestamp(events: Sequence[dict[str, Any]]) -> float:
    """When the conversation of these events last moved (an event without a timestamp counts
    as oldest): what retention compares with its cutoff."""
    return max((float(event.get("timestamp") or 0.0) for event in events), default=0.0)
