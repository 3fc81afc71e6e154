"""The in-memory tracker store: one process, nothing survives a restart."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.trackers.events import OFF_LOOP_EVENTS, off_loop_for
from server.trackers.freeing import release_off_loop
from server.trackers.retention import latest_timestamp
from server.trackers.session_start import latest_session_start
from server.trackers.snapshot import Snapshot
from server.trackers.store import DEFAULT_CACHE_EVENTS, Hold, holding


@dataclass
class _Conversation:
    events: list[dict[str, Any]] = field(default_factory=list)
    session_start: int = 0


class InMemoryTrackerStore:
    """Events per conversation in a dict, with the index where the current session starts."""

    process_local = True

    def __init__(self, cache_events: int = DEFAULT_CACHE_EVENTS) -> None:
        self.cache_events = cache_events  # hot trackers over this store
        self._conversations: dict[str, _Conversation] = {}

    async def append(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        conversation = self._conversations.setdefault(sender_id, _Conversation())
        base = len(conversation.events)
        conversation.events.extend(events)
        # A PUT or bulk POST (100,000 events took 15-30 ms) is scanned in a thread.
        start = await off_loop_for(events, latest_session_start, conversation.events, base)
        # max(): an append made while the scan ran in its thread found a later start.
        if start is not None and start > conversation.session_start:
            conversation.session_start = start

    async def load(self, sender_id: str) -> Sequence[dict[str, Any]] | None:
        conversation = self._conversations.get(sender_id)
        if conversation is None:
            return None
        return Snapshot(conversation.events, conversation.session_start)

    async def load_all(self, sender_id: str) -> list[dict[str, Any]] | None:
        conversation = self._conversations.get(sender_id)
        return None if conversation is None else list(conversation.events)

    async def replace(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        _let_go(self._conversations.pop(sender_id, None))
        await self.append(sender_id, list(events))

    async def keys(self) -> list[str]:
        return list(self._conversations)

    async def delete(self, sender_id: str) -> None:
        _let_go(self._conversations.pop(sender_id, None))

    async def delete_older_than(
        self,
        cutoff_timestamp: float,
        hold: Hold | None = None,
        deleted_some: Callable[[int], None] | None = None,
    ) -> int:
        stale = [
            sender_id
            for sender_id, conversation in self._conversations.items()
            if latest_timestamp(conversation.events) < cutoff_timestamp
        ]
        deleted = 0
        async with holding(hold, stale) as idle:
            # Looked at again: a turn may have come meanwhile.
            for sender_id in await idle.still_held():
                conversation = self._conversations.get(sender_id)
                if conversation and latest_timestamp(conversation.events) < cutoff_timestamp:
                    _let_go(self._conversations.pop(sender_id))
                    deleted += 1
                    if deleted_some is not None:
                        deleted_some(1)
        return deleted

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _let_go(conversation: _Conversation | None) -> None:
    """A long conversation is freed off the loop (100,000 event dicts held it 14 ms), unless
    a snapshot of it is still being read."""
    if conversation is not None and len(conversation.events) > OFF_LOOP_EVENTS:
        release_off_loop(conversation)
