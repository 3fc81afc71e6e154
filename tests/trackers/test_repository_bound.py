"""Hot trackers are bounded by their events' weight; evicted conversations reload whole."""

from __future__ import annotations

from pathlib import Path

from server.trackers.events import ActionExecuted, Event, UserUttered
from server.trackers.factory import create_tracker_store
from server.trackers.repository import TrackerRepository
from server.trackers.tracker import Tracker


async def test_conversations_beyond_the_bound_reload_with_all_their_events() -> None:
    repository = TrackerRepository(create_tracker_store({"type": "in_memory"}), max_events=3)
    for n in range(5):
        tracker = Tracker(f"u{n}", {})
        events = [UserUttered(text=f"hi {n}"), ActionExecuted(action_name="action_listen")]
        tracker.update_many(events)
        await repository.save(tracker, events)
    for n in range(5):
        loaded = await repository.load(f"u{n}", {})
        assert loaded is not None
        assert [getattr(e, "text", None) for e in loaded.events] == [f"hi {n}", None]


async def test_cache_events_sets_how_many_events_stay_hot() -> None:
    """A long conversation stays hot (its tracker is reused, not rebuilt) while others come
    and go, as long as `cache_events` holds them all."""
    for cache_events, long_stays_hot in ((50, True), (10, False)):
        store = create_tracker_store({"type": "in_memory", "cache_events": cache_events})
        repository = TrackerRepository(store)
        long = Tracker("long", {})
        events: list[Event] = [UserUttered(text=f"hi {n}") for n in range(20)]
        long.update_many(events)
        await repository.save(long, events)
        other = Tracker("other", {})
        other.update(UserUttered(text="hello"))
        await repository.save(other, other.events)

        assert repository.max_events == cache_events
        assert (await repository.load("long", {}) is long) is long_stays_hot


async def test_a_conversation_just_loaded_is_the_last_to_be_evicted() -> None:
    repository = TrackerRepository(create_tracker_store({"type": "in_memory"}), max_events=6)
    trackers = {}
    for name in ("a", "b", "c"):
        tracker = trackers[name] = Tracker(name, {})
        tracker.update_many([UserUttered(text=name), ActionExecuted(action_name="action_listen")])
        await repository.save(tracker, tracker.events)
    assert await repository.load("a", {}) is trackers["a"]  # now the most recently used

    d = Tracker("d", {})
    d.update_many([UserUttered(text="d"), ActionExecuted(action_name="action_listen")])
    await repository.save(d, d.events)  # 8 events: the least recently used goes

    assert await repository.load("a", {}) is trackers["a"]
    assert await repository.load("c", {}) is trackers["c"]
    reloaded = await repository.load("b", {})
    assert reloaded is not None and reloaded is not trackers["b"]
    assert [getattr(e, "text", None) for e in reloaded.events] == ["b", None]


async def test_a_conversation_holding_a_left_out_item_stays_hot_and_sees_other_appends() -> None:
    """A stored `topic` event (Rasa Core 0.x) is left out of the tracker; the tracker still
    counts it among the store's items, so the events another process appends after it are
    folded once, neither lost nor twice."""
    store = create_tracker_store({"type": "in_memory"})
    await store.append(
        "old",
        [
            {"event": "topic", "timestamp": 1.0, "topic": "greetings"},
            {"event": "action", "timestamp": 2.0, "name": "action_listen"},
        ],
    )
    repository = TrackerRepository(store)
    tracker = await repository.load("old", {})
    assert tracker is not None
    new: list[Event] = [UserUttered(text="hi", timestamp=3.0)]
    tracker.update_many(new)
    await repository.save(tracker, new)
    await store.append("old", [{"event": "bot", "timestamp": 4.0, "text": "elsewhere"}])

    again = await repository.load("old", {})
    assert again is tracker
    assert [e.type_name for e in tracker.events] == ["action", "user", "bot"]


def heavy_user(text: str, kib: int) -> UserUttered:
    """A user message whose metadata makes its stored JSON `kib` KiB and a bit (its parse
    data holds the metadata too)."""
    return UserUttered(text=text, metadata={"blob": "x" * (kib * 512)})


async def test_a_heavy_event_weighs_its_kib_and_evicts_the_least_recently_used(
    tmp_path: Path,
) -> None:
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "r.db")})
    repository = TrackerRepository(store, max_events=60)
    try:
        trackers = {}
        for name, kib in (("light", 0), ("heavy", 30), ("heavier", 25)):
            tracker = trackers[name] = Tracker(name, {})
            event = UserUttered(text=name) if kib == 0 else heavy_user(name, kib)
            tracker.update(event)
            await repository.save(tracker, [event])
        # 1 + 31 + 26: all three stay hot
        assert repository.weight == 58
        assert await repository.load("light", {}) is trackers["light"]

        more = heavy_user("more", 5)  # 'heavy' now weighs 37: 64 of 60
        trackers["heavy"].update(more)
        await repository.save(trackers["heavy"], [more])

        assert await repository.load("heavy", {}) is trackers["heavy"]
        assert await repository.load("light", {}) is trackers["light"]
        reloaded = await repository.load("heavier", {})  # the least recently used went
        assert reloaded is not None and reloaded is not trackers["heavier"]
        assert [getattr(e, "text", None) for e in reloaded.events] == ["heavier"]
        assert reloaded.stored_extra == 25  # weighed again as read
    finally:
        await store.close()


async def test_a_conversation_heavier_than_the_bound_is_folded_from_the_store(
    tmp_path: Path,
) -> None:
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "o.db")})
    repository = TrackerRepository(store, max_events=50)
    try:
        tracker = Tracker("big", {})
        for n in range(3):  # 30 KiB each: over the bound from the second
            event = heavy_user(f"big {n}", 30)
            tracker.update(event)
            await repository.save(tracker, [event])
        assert repository.weight == 0
        loaded = await repository.load("big", {})
        assert loaded is not None and loaded is not tracker
        assert [getattr(e, "text", None) for e in loaded.events] == ["big 0", "big 1", "big 2"]
        assert repository.weight == 0
    finally:
        await store.close()
