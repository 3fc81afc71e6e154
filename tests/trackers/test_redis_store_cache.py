"""The Redis tracker store reads a session it read before incrementally (only the items pushed
since), and still sees what other processes did: appends, a new session, replace, delete."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from server.errors import StoreUnavailable
from server.trackers.factory import create_tracker_store
from server.trackers.redis_store import RedisTrackerStore
from tests.loop_lag import loop_hold
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)
from tests.trackers.test_redis_client import drop
from tests.trackers.test_tracker_stores import bot, session_start, user


@pytest.fixture
async def config() -> AsyncIterator[dict[str, Any]]:
    require_service("Redis", REDIS)
    prefix = unique_name("bsrcache")
    yield {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    await delete_redis_keys(prefix)


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    redis = Redis(host=REDIS[0], port=REDIS[1], db=0, decode_responses=True)
    yield redis
    await redis.aclose()


def redis_store(config: dict[str, Any]) -> RedisTrackerStore:
    store = create_tracker_store(config)
    assert isinstance(store, RedisTrackerStore)
    return store


async def test_a_second_load_reads_only_the_items_pushed_since(
    config: dict[str, Any], client: Redis
) -> None:
    store = redis_store(config)
    key = f"{config['key_prefix']}:tracker:alice"
    try:
        await store.append("alice", [*session_start(0.0), user("hi", 1.0), bot("hey", 2.0)])
        assert len(await store.load("alice") or []) == 5
        # Change an item the store already read, behind its back (no store does this): a
        # whole read would show it, an incremental one does not.
        await client.lset(key, 3, json.dumps(user("changed", 1.0)))
        await store.append("alice", [user("again", 3.0)])

        events = list(await store.load("alice") or [])
        assert [e.get("text") for e in events[3:]] == ["hi", "hey", "again"]
        # A fresh store (another process) reads the whole session.
        fresh = redis_store(config)
        try:
            assert (await fresh.load("alice") or [])[3]["text"] == "changed"
        finally:
            await fresh.close()
    finally:
        await store.close()


async def test_what_another_process_did_is_seen(config: dict[str, Any]) -> None:
    mine, other = redis_store(config), redis_store(config)
    try:
        await mine.append("bob", [*session_start(0.0), user("one", 1.0)])
        assert len(await mine.load("bob") or []) == 4

        await other.append("bob", [bot("two", 2.0)])  # an append
        assert [e.get("text") for e in await mine.load("bob") or []][-2:] == ["one", "two"]

        await other.append("bob", [*session_start(3.0), user("new session", 4.0)])
        assert [e["event"] for e in await mine.load("bob") or []] == [
            "action",
            "session_started",
            "action",
            "user",
        ]

        await other.replace("bob", [*session_start(5.0), user("replaced", 6.0)])
        assert (await mine.load("bob") or [])[-1]["text"] == "replaced"

        await other.delete("bob")
        assert await mine.load("bob") is None
    finally:
        await mine.close()
        await other.close()


async def test_the_sessions_kept_stay_within_cache_events(config: dict[str, Any]) -> None:
    store = redis_store({**config, "cache_events": 20})
    try:
        for n in range(10):
            await store.append(f"c{n}", [*session_start(0.0), user(f"m{n}", 1.0)])
            assert len(await store.load(f"c{n}") or []) == 4
        assert store._sessions.weight <= 20
        assert len(store._sessions) == 5  # the five most recent conversations
        assert (await store.load("c0") or [])[-1]["text"] == "m0"  # evicted: read whole
    finally:
        await store.close()


def heavy_user(text: str, timestamp: float, kib: int) -> dict[str, Any]:
    """A user event whose metadata makes its JSON `kib` KiB and a bit: it weighs 1 + kib."""
    return user(text, timestamp) | {"metadata": {"blob": "x" * (kib * 1024)}}


async def test_a_heavy_event_weighs_its_kib_and_evicts_the_least_recently_used(
    config: dict[str, Any],
) -> None:
    store = redis_store({**config, "cache_events": 103})
    try:
        await store.append("light", [user("hi", 1.0), bot("hello", 2.0)])
        await store.append("heavy", [heavy_user("big", 3.0, 40)])  # weighs 41
        await store.append("heavier", [heavy_user("bigger", 4.0, 60)])  # weighs 61
        for sender_id in ("light", "heavy"):
            assert await store.load(sender_id)
        assert store._sessions.weight == 2 + 41
        assert await store.load("heavier") == [heavy_user("bigger", 4.0, 60)]  # 104 of 103

        assert "light" not in store._sessions  # the least recently used went
        assert "heavy" in store._sessions and "heavier" in store._sessions
        assert store._sessions.weight == 41 + 61
        await store.append("heavier", [heavy_user("more", 5.0, 30)])
        assert len(await store.load("heavier") or []) == 2  # read on: 133, 'heavy' goes
        assert "heavy" not in store._sessions
        assert store._sessions.weight == 61 + 31
        assert await store.load("light") == [user("hi", 1.0), bot("hello", 2.0)]
    finally:
        await store.close()


async def test_a_session_heavier_than_the_bound_is_read_whole_each_time(
    config: dict[str, Any],
) -> None:
    store = redis_store({**config, "cache_events": 50})
    try:
        for n in range(3):  # 30 KiB each: the session outweighs the cache from the second
            await store.append("big", [heavy_user(f"big {n}", float(n), 30)])
            assert await store.load("big") == [
                heavy_user(f"big {i}", float(i), 30) for i in range(n + 1)
            ]
        assert "big" not in store._sessions and store._sessions.weight == 0
    finally:
        await store.close()


async def keys_left(client: Redis, config: dict[str, Any]) -> list[str]:
    """Every key under the store's prefix, sorted."""
    return sorted([key async for key in client.scan_iter(match=f"{config['key_prefix']}:*")])


def conversation_keys(config: dict[str, Any], sender: str) -> list[str]:
    """The keys one conversation leaves: its list, its last append's id, its session index."""
    prefix = config["key_prefix"]
    return [
        f"{prefix}:{kind}:{sender}" for kind in ("tracker", "tracker_append", "tracker_session")
    ]


@pytest.mark.timing
async def test_a_conversation_of_100000_events_is_written_and_read_off_the_loop(
    config: dict[str, Any],
) -> None:
    """Before, the store wrote 100,000 events to JSON on the event loop (1.1 s held on a PUT)
    and parsed them there on a process's first load (0.5-0.8 s). Now both run in a thread;
    another process (a new store) reads them all."""
    said = {"intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    events = [
        {"event": "user", "text": "hi", "parse_data": said, "timestamp": 1.0},
        {"event": "action", "name": "utter_greet", "timestamp": 1.0},
    ] * 50_000
    writer, reader = redis_store(config), redis_store(config)
    try:
        async with loop_hold() as wrote:
            await writer.replace("long", events)
        async with loop_hold() as read:
            loaded = await reader.load("long")
        # Before: 0.44-0.51 s and 0.37 s with the collector off; 0.25 s each with the
        # thread's work on the loop; 5-15 ms now.
        assert wrote.busiest < 0.1 and read.busiest < 0.1
        assert loaded is not None and len(loaded) == 100_000 and loaded[-1] == events[-1]
        async with loop_hold() as appended:
            await writer.append("long", events[:2_000])
        assert appended.busiest < 0.1
        loaded = await reader.load("long")
        assert loaded is not None and len(loaded) == 102_000
    finally:
        await writer.close()
        await reader.close()


@pytest.mark.timing
async def test_rasas_string_of_100000_events_is_parsed_off_the_loop(
    config: dict[str, Any], client: Redis
) -> None:
    """A conversation Rasa stored as one JSON string of 100,000 events (10 MB), converted on
    its first read: before, the string was parsed on the event loop (0.16 s of CPU, each
    attempt of the conversion). Now in a thread, as the list's items are."""
    said = {"intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    events = [
        {"event": "user", "text": "hi", "parse_data": said, "timestamp": 1.0},
        {"event": "action", "name": "utter_greet", "timestamp": 1.0},
    ] * 50_000
    key = f"{config['key_prefix']}:tracker:old"
    await client.set(key, json.dumps({"sender_id": "old", "events": events}))
    store = redis_store(config)
    try:
        async with loop_hold() as converted:
            loaded = await store.load("old")
        assert loaded is not None and len(loaded) == 100_000 and loaded[-1] == events[-1]
        assert await client.type(key) == "list"
        assert converted.busiest_iteration < 0.05 * converted.slowness, converted
    finally:
        await store.close()


@pytest.mark.timing
async def test_a_replace_of_100000_events_pushes_them_a_piece_at_a_time(
    config: dict[str, Any], client: Redis
) -> None:
    """Before, the replace sent one RPUSH of 100,000 items, whose arguments redis-py wrote out
    on the event loop (0.15-0.19 s held). Now they are pushed to a key of their own a
    thousand at a time, which takes the conversation's place in one transaction: a reader
    sees the old events or the new ones, and no key is left over."""
    events = [user(f"m{n}", 1.0) for n in range(100_000)]
    store, reader = redis_store(config), redis_store(config)
    try:
        await store.replace("long", [user("old", 1.0)])
        async with loop_hold() as wrote:
            await store.replace("long", events)
        assert wrote.busiest < 0.05
        loaded = await reader.load("long")
        assert loaded is not None and len(loaded) == 100_000 and loaded[-1]["text"] == "m99999"
        # (and the replace's id, as an append's, for 5 minutes)
        assert await keys_left(client, config) == conversation_keys(config, "long")
        assert 0 < await client.pttl(conversation_keys(config, "long")[1]) <= 300_000
    finally:
        await store.close()
        await reader.close()


@pytest.mark.timing
async def test_an_append_of_100000_events_holds_neither_the_loop_nor_redis(
    config: dict[str, Any], client: Redis
) -> None:
    """A bulk append (a `POST .../tracker/events` of 100,000 events: 10 MB takes 300,000
    small ones) went out as one script call of 100,000 arguments: redis-py wrote them out on
    the event loop, and the script pushed them one by one while Redis served nobody else
    (0.68 s for 300,000). Now the conversation's items and the new ones are pushed a
    thousand at a time to a key of their own, which takes the list's place in one script
    when the list is still as read: all of the append or nothing, and no key left over."""
    events = [user(f"m{n}", 1.0) for n in range(100_000)]
    store, reader = redis_store(config), redis_store(config)
    sent: list[int] = []
    send = store._redis.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        sent.append(len(args))
        return await send(*args, **options)

    try:
        await store.append("long", [*session_start(0.0), user("before", 0.5)])
        store._redis.execute_command = counting  # type: ignore[method-assign]
        async with loop_hold() as wrote:
            await store.append("long", events)
        assert wrote.busiest < 0.05
        assert max(sent) < 1_100
        loaded = await reader.load("long")
        assert loaded is not None and len(loaded) == 100_004
        assert loaded[3]["text"] == "before" and loaded[-1]["text"] == "m99999"
        assert await keys_left(client, config) == conversation_keys(config, "long")
    finally:
        await store.close()
        await reader.close()


async def test_a_bulk_append_copies_again_a_list_that_changed_meanwhile(
    config: dict[str, Any], client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn stored while a bulk append copies the list (from a process that holds no lock)
    is kept: the copy no longer matches, so it is made again, and the bulk's own session
    start (its first event a `session_started` after a stored `action_session_start`) is
    found where it ends up."""
    start = session_start(10.0)
    bulk = [*start[1:], *(user(f"m{n}", 11.0) for n in range(1_500))]
    store, other = redis_store(config), redis_store(config)
    push = store._push_staged
    turns = [[bot("meanwhile", 5.0), start[0]]]

    async def push_then_a_turn(*args: Any, **options: Any) -> int:
        pushed = await push(*args, **options)
        while turns:  # the list is copied: the turn comes before the rename
            await other.append("busy", turns.pop())
        return pushed

    try:
        await other.append("busy", [user("first", 1.0)])
        monkeypatch.setattr(store, "_push_staged", push_then_a_turn)
        await store.append("busy", bulk)

        assert await other.load_all("busy") == [
            user("first", 1.0),
            bot("meanwhile", 5.0),
            *start[:1],
            *bulk,
        ]
        assert await other.load("busy") == [*start[:1], *bulk]
        assert not [key for key in await keys_left(client, config) if "replacing" in key]
    finally:
        await store.close()
        await other.close()


async def test_a_bulk_append_to_a_conversation_rasa_stored_converts_it_first(
    config: dict[str, Any], client: Redis
) -> None:
    events = [user(f"m{n}", 2.0) for n in range(1_500)]
    await client.set(
        f"{config['key_prefix']}:tracker:old",
        json.dumps({"sender_id": "old", "events": [user("rasa", 1.0)]}),
    )
    store = redis_store(config)
    try:
        await store.append("old", events)
        assert await store.load_all("old") == [user("rasa", 1.0), *events]
    finally:
        await store.close()


@pytest.mark.parametrize("record_exp", [None, 100])
async def test_a_long_conversation_rasa_stored_is_converted_whole(
    config: dict[str, Any], client: Redis, record_exp: int | None
) -> None:
    """Rasa's JSON string of more than a thousand events becomes a list by way of a staged
    key, in the transaction that watches the string."""
    events = [*session_start(1.0), *(user(f"m{n}", 2.0) for n in range(1_500))]
    key = f"{config['key_prefix']}:tracker:old"
    await client.set(key, json.dumps({"sender_id": "old", "events": events}))
    store = redis_store({**config, "record_exp": record_exp})
    try:
        assert await store.load("old") == events
        assert await client.type(key) == "list"
        ttl = await client.ttl(key)
        if record_exp is None:
            assert ttl == -1
        else:  # (seconds left: Redis rounds, and a loaded host's load takes some)
            assert record_exp - 10 < ttl <= record_exp
        assert await store.load_all("old") == events
        assert not [key for key in await keys_left(client, config) if "replacing" in key]
    finally:
        await store.close()


@pytest.mark.timing
async def test_a_long_session_the_cache_lets_go_of_is_freed_off_the_loop(
    config: dict[str, Any],
) -> None:
    """Before, a session of 100,000 parsed events that the cache evicted (another
    conversation's load) or forgot (a delete) was freed at once on the event loop. Now a
    thread empties it a piece at a time; the loop thread's own CPU is measured."""
    said = {"intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    events = [
        {"event": "user", "text": "hi", "parse_data": said, "timestamp": 1.0},
        {"event": "action", "name": "utter_greet", "timestamp": 1.0},
    ] * 50_000
    store = redis_store({**config, "cache_events": 1_000})
    try:
        await store.replace("long", events)
        await store.replace("long2", events)
        await store.append("other", [*session_start(0.0), user("hi", 1.0)])
        del events
        assert len(await store.load("long") or []) == 100_000
        async with loop_hold() as evicted:
            assert len(await store.load("other") or []) == 4
        assert "long" not in store._sessions
        assert len(await store.load("long2") or []) == 100_000
        async with loop_hold() as deleted:
            await store.delete("long2")
        # Before: 50-52 ms for the eviction; now 0.6-1 ms each (loop thread CPU).
        assert evicted.loop_busiest < 0.009, evicted.loop_busiest
        assert deleted.loop_busiest < 0.009, deleted.loop_busiest
    finally:
        await store.close()


@pytest.mark.parametrize("appended", [1, 1_500], ids=["turn", "bulk"])
async def test_an_append_without_record_exp_keeps_the_conversation_for_good(
    config: dict[str, Any], client: Redis, appended: int
) -> None:
    """Rasa's save is a SET, which drops the key's expiry: once `record_exp` is taken out of
    endpoints.yml, a conversation saved again is kept for good. Before, an append left the
    expiry an earlier `record_exp` had set running, and a conversation in use was deleted.
    (A bulk append renames a list of its own over the conversation's.)"""
    expiring = redis_store({**config, "record_exp": 100})
    await expiring.append("alice", session_start(1.0))
    await expiring.close()
    store = redis_store(config)
    await store.append("alice", [user("hi", 2.0)] * appended)
    await store.close()
    prefix = config["key_prefix"]
    assert await client.ttl(f"{prefix}:tracker:alice") == -1  # no expiry
    assert await client.ttl(f"{prefix}:tracker_session:alice") == -1


async def test_a_turn_appended_while_another_process_converts_rasas_layout_is_kept(
    config: dict[str, Any], client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa kept a conversation as one JSON string; the first botserver to touch it turns it
    into a list. Before, a reader (GET /tracker, another worker) that read the string while a
    turn converted it and appended its events then wrote the string's events over the list,
    and the turn's events were gone. Now the conversion gives way to what was written since."""
    from server.trackers import redis_store as module

    key = f"{config['key_prefix']}:tracker:alice"
    await client.set(key, json.dumps({"events": session_start(1.0), "name": "alice"}))
    reader, turn = redis_store(config), redis_store(config)
    convert = module.off_loop_if_long
    interrupted = False

    async def with_a_turn_meanwhile(function: Any, items: Any) -> Any:
        nonlocal interrupted
        if function is module._encoded and not interrupted:  # the reader read the string
            interrupted = True
            await turn.load("alice")
            await turn.append("alice", [user("hi", 2.0)])
        return await convert(function, items)

    monkeypatch.setattr(module, "off_loop_if_long", with_a_turn_meanwhile)
    try:
        assert [e["event"] for e in await reader.load_all("alice") or []][-1] == "user"
        assert await turn.load("alice") == [*session_start(1.0), user("hi", 2.0)]
    finally:
        await reader.close()
        await turn.close()


@pytest.mark.parametrize("dropped", [False, True], ids=["replace", "drop-and-replace"])
async def test_a_bulk_append_never_mixes_the_list_before_and_after_a_replace_meanwhile(
    config: dict[str, Any], client: Redis, monkeypatch: pytest.MonkeyPatch, dropped: bool
) -> None:
    """A replace (a PUT of the tracker's events from another process) between two slices of
    a bulk append's copy: the copy then held the old list's first thousand items and the new
    list's rest, of the new list's length and with its last item, which is all the rename
    compared, and the conversation became half the old list and half the new one. Now any
    write to the list during the copy makes the copy start again.

    `dropped`: the connection watching the list drops once the list is copied (Redis's
    `timeout` closed it while idle, a failover), and the replace is by a list as long, of the
    same last item. redis-py's health check, due after 30 s idle, reconnected it without a
    word, and the transaction ran on the new connection, which watched nothing: the copy of
    the old list took the replaced one's place. Now a reconnect while watching fails it."""
    old = [user(f"old {n}", 1.0) for n in range(1_500)]
    new = [user(f"new {n}", 2.0) for n in range(1_499 if dropped else 1_200)]
    new += [old[-1]] if dropped else []
    bulk = [user(f"bulk {n}", 3.0) for n in range(1_500)]
    store, other = redis_store(config), redis_store(config)
    push = store._push_staged
    replaces = [new]

    async def push_then_a_replace(staged: str, items: Any, before: int) -> int:
        pushed = await push(staged, items, before)
        # After the copy's first slice; `dropped`: after the copy, pushing the new items.
        if replaces and (not dropped or before >= len(old)):
            if dropped:
                (watching,) = store._redis.connection_pool._in_use_connections  # type: ignore[attr-defined]
                await drop(store._redis, watching, by=client)
            await other.replace("mixed", replaces.pop())
        return pushed

    try:
        await other.append("mixed", old)
        monkeypatch.setattr(store, "_push_staged", push_then_a_replace)
        await store.append("mixed", bulk)

        stored = await other.load_all("mixed")
        assert stored is not None
        assert [e["text"] for e in stored] == [e["text"] for e in [*new, *bulk]]
    finally:
        await store.close()
        await other.close()


async def test_a_bulk_append_to_a_list_that_keeps_changing_goes_in_one_script(
    config: dict[str, Any], client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn during every copy: after three copies the append goes as one script, after
    every turn, with no staged key left."""
    bulk = [user(f"bulk {n}", 3.0) for n in range(1_500)]
    store, other = redis_store(config), redis_store(config)
    push = store._push_staged
    turns: list[str] = []

    copies: set[str] = set()

    async def push_then_a_turn(staged: str, *args: Any) -> int:
        pushed = await push(staged, *args)
        if staged not in copies:  # once per copy
            copies.add(staged)
            turns.append(f"turn {len(turns)}")
            await other.append("busy", [user(turns[-1], 2.0)])
        return pushed

    try:
        await other.append("busy", [user("first", 1.0)])
        monkeypatch.setattr(store, "_push_staged", push_then_a_turn)
        await store.append("busy", bulk)

        stored = await other.load_all("busy") or []
        assert len(turns) == 3
        assert [e["text"] for e in stored] == ["first", *turns, *(e["text"] for e in bulk)]
        assert not [key for key in await keys_left(client, config) if "replacing" in key]
    finally:
        await store.close()
        await other.close()


@pytest.mark.parametrize("operation", ["append", "replace"])
async def test_a_staged_key_never_lives_without_an_expiry(
    config: dict[str, Any], client: Redis, operation: str
) -> None:
    """A process killed during a bulk append or a long replace leaves its staged key to
    expire. Before, the first slice's RPUSH and the EXPIRE were two commands: a process that
    died between them left up to 100,000 events in Redis for good."""
    store = redis_store(config)
    send = store._redis.execute_command
    without_expiry: list[str] = []

    async def checking(*args: Any, **options: Any) -> Any:
        reply = await send(*args, **options)
        async for key in client.scan_iter(match=f"{config['key_prefix']}:tracker_replacing:*"):
            if await client.ttl(key) == -1:
                without_expiry.append(key)
        return reply

    try:
        await store.append("long", [user("before", 1.0)])
        store._redis.execute_command = checking  # type: ignore[method-assign]
        events = [user(f"m{n}", 2.0) for n in range(1_500)]
        await getattr(store, operation)("long", events)
        assert without_expiry == []
    finally:
        await store.close()


async def test_a_bulk_append_whose_staged_key_expired_midway_copies_again(
    config: dict[str, Any], client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staged key that expired between two slices (a process stalled longer than it
    lives) is made again by the next RPUSH, without the slices before: it is not renamed
    over the conversation (before, only a staged key gone altogether was noticed, and the
    conversation lost its first 1,000 items)."""
    old = [user(f"old {n}", 1.0) for n in range(1_500)]
    bulk = [user(f"bulk {n}", 3.0) for n in range(1_500)]
    store = redis_store(config)
    try:
        await store.append("stalled", old)
        monkeypatch.setattr(store, "_push_staged", expiring_after_one_push(store, client))
        await store.append("stalled", bulk)

        stored = await store.load_all("stalled") or []
        assert [e["text"] for e in stored] == [e["text"] for e in [*old, *bulk]]
    finally:
        await store.close()


async def test_a_long_replace_whose_staged_key_expired_midway_changes_nothing(
    config: dict[str, Any], client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its staged key expired between two slices (a stall longer than it lives): a 503, and
    the conversation as it was. Before, the next RPUSH made the key again without the slices
    before it, which then took the conversation's place."""
    old = [user(f"old {n}", 1.0) for n in range(10)]
    store = redis_store(config)
    try:
        await store.append("stalled", old)
        monkeypatch.setattr(store, "_push_staged", expiring_after_one_push(store, client))
        with pytest.raises(StoreUnavailable):
            await store.replace("stalled", [user(f"new {n}", 2.0) for n in range(1_500)])

        assert await store.load_all("stalled") == old
        assert not [key for key in await keys_left(client, config) if "replacing" in key]
    finally:
        await store.close()


def expiring_after_one_push(store: RedisTrackerStore, client: Redis) -> Any:
    """`store._push_staged`, whose staged key expires after the first push."""
    push = store._push_staged
    expiries = [1]

    async def push_then_expire(staged: str, *args: Any) -> int:
        pushed = await push(staged, *args)
        while expiries:
            expiries.pop()
            await client.delete(staged)
        return pushed

    return push_then_expire
