"""The Redis tracker store's list of conversations (`GET /conversations`, `botserver export`
without `--conversation-ids`): each conversation once."""

from __future__ import annotations

import pytest

from server.trackers.factory import create_tracker_store
from server.trackers.redis_store import RedisTrackerStore


async def test_a_conversation_scan_returns_twice_is_listed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SCAN may return a key twice (Redis rehashing its table between two pages); Rasa's KEYS
    never does. Before, such a conversation was listed (and exported) twice. The pages are
    given here: a rehash in the middle of a scan cannot be brought about at will."""
    store = create_tracker_store({"type": "redis", "url": "127.0.0.1", "key_prefix": "pages"})
    assert isinstance(store, RedisTrackerStore)
    pages = {0: (7, ["alice", "bob"]), 7: (3, ["carol", "alice"]), 3: (0, ["bob", "dave"])}

    async def page(cursor: int) -> tuple[int, list[str]]:
        return pages[cursor]

    monkeypatch.setattr(store, "_scan_page", page)
    try:
        assert await store.keys() == ["alice", "bob", "carol", "dave"]
    finally:
        await store.close()
