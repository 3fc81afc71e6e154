"""Hot trackers are bounded by their events; evicted conversations reload whole."""

from __future__ import annotations

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
