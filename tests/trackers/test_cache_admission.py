"""Which conversations the hot caches keep when more talk than they hold (weight.py)."""

from __future__ import annotations

from pathlib import Path

from server.trackers.events import ActionExecuted, UserUttered
from server.trackers.factory import create_tracker_store
from server.trackers.repository import TrackerRepository
from server.trackers.tracker import Tracker


async def _started(repository: TrackerRepository, name: str, events: int) -> Tracker:
    tracker = Tracker(name, {})
    tracker.update_many([UserUttered(text=f"{name} {n}") for n in range(events)])
    await repository.save(tracker, tracker.events)
    return tracker


async def _turn(repository: TrackerRepository, name: str) -> Tracker:
    tracker = await repository.load(name, {})
    assert tracker is not None
    event = ActionExecuted(action_name="action_listen")
    tracker.update(event)
    await repository.save(tracker, [event])
    return tracker


async def test_a_cyclic_load_larger_than_the_caches_keeps_most_of_what_fits(
    tmp_path: Path,
) -> None:
    """Twelve conversations take turns in order, twice what `cache_events` holds. Least
    recently used first, each turn found its conversation just evicted: every one was read
    from SQLite and folded again (12 of 12 a round). Now those read once go first, and the
    conversations used again since stay: most of what fits keeps answering from memory."""
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "c.db"), "cache_events": 60})
    repository = TrackerRepository(store)
    names = [f"c{n}" for n in range(12)]
    hot = {name: await _started(repository, name, 8) for name in names}
    folded_per_round = []
    for _ in range(6):
        folded = 0
        for name in names:
            tracker = await _turn(repository, name)
            folded += tracker is not hot[name]
            hot[name] = tracker
        folded_per_round.append(folded)
        assert repository.weight <= 60
        assert store._cache.weight <= 60  # type: ignore[attr-defined]
    await store.close()
    assert max(folded_per_round[2:]) <= 9, folded_per_round  # 12 each round before


async def test_conversations_read_once_push_out_no_more_than_the_first_of_them_needs(
    tmp_path: Path,
) -> None:
    """Three conversations in use, then old ones read once each (an export, a dashboard
    looking back): the first read takes the room it needs, the others take each other's,
    not that of the conversations in use (before: all three were pushed out)."""
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "s.db"), "cache_events": 35})
    repository = TrackerRepository(store)
    for n in range(5):
        await _started(repository, f"old{n}", 10)
    in_use = {name: await _started(repository, name, 10) for name in ("a", "b", "c")}
    for name in in_use:
        in_use[name] = await _turn(repository, name)
    for n in range(5):
        assert await repository.load(f"old{n}", {}) is not None
    kept = [name for name in in_use if await repository.load(name, {}) is in_use[name]]
    await store.close()
    assert kept == ["b", "c"]
