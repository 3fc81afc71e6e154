"""Retention (`botserver prune`) beside a serving process: a conversation that comes back to
life while the prune runs keeps its new turn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from server.trackers.factory import create_tracker_store
from server.trackers.retention import delete_conversations_older_than
from server.trackers.store import TrackerStore
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    tracker_store_config,
    unique_name,
)

DAY = 86400.0
SIX = ("ana", "bob", "cy", "dee", "eve", "fay")


def bot(text: str, timestamp: float) -> dict[str, Any]:
    return {"event": "bot", "timestamp": timestamp, "text": text, "data": {}, "metadata": {}}


def run_after_listing(
    store: TrackerStore, step: Callable[[], Awaitable[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs `step` right after the prune has listed its candidates: the moment a serving
    process's turn can land between the prune's look and its delete."""
    db = getattr(store, "_db", None)
    owner, name = (db, "senders_older_than") if db is not None else (store, "_scan_page")
    listing = getattr(owner, name)

    steps = [step]

    async def listed(*args: Any) -> Any:
        found = await listing(*args)
        while steps:  # once, after the first listing
            await steps.pop()()
        return found

    monkeypatch.setattr(owner, name, listed)


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb", "redis"])
async def test_a_turn_stored_while_prune_runs_is_not_deleted(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    async with tracker_store_config(kind, tmp_path) as config:
        pruning, serving = create_tracker_store(config), create_tracker_store(config)
        try:
            await serving.append("returning", [bot("long ago", now - 200 * DAY)])
            await serving.append("gone", [bot("long ago", now - 200 * DAY)])
            await serving.append("recent", [bot("yesterday", now - DAY)])

            async def user_comes_back() -> None:
                await serving.append("returning", [bot("welcome back", now)])

            run_after_listing(pruning, user_comes_back, monkeypatch)
            deleted = (await delete_conversations_older_than(pruning, 90 * DAY)).deleted

            assert deleted == 1
            assert sorted(await serving.keys()) == ["recent", "returning"]
            assert await pruning.load_all("returning") == [
                bot("long ago", now - 200 * DAY),
                bot("welcome back", now),
            ]
        finally:
            await pruning.close()
            await serving.close()


async def test_redis_prune_reads_conversations_rasa_wrote(tmp_path: Path) -> None:
    """Rasa's Redis store keeps a conversation as one JSON string."""
    import json

    from redis.asyncio import Redis

    now = time.time()
    async with tracker_store_config("redis", tmp_path) as config:
        store = create_tracker_store(config)
        client = Redis(host=REDIS[0], port=REDIS[1])
        try:
            for sender_id, at in (("old", now - 200 * DAY), ("new", now)):
                document = {"sender_id": sender_id, "events": [bot("hi", at)]}
                await client.set(
                    f"{config['key_prefix']}:tracker:{sender_id}", json.dumps(document)
                )
            await store.append("ours", [bot("hi", now - 200 * DAY)])

            assert (await delete_conversations_older_than(store, 90 * DAY)).deleted == 2
            assert await store.keys() == ["new"]
            assert await store.load_all("new") == [bot("hi", now)]
        finally:
            await client.aclose()
            await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb", "redis"])
async def test_prune_goes_through_every_batch(kind: str, tmp_path: Path) -> None:
    """More stale conversations than one batch, fresh ones between them in sender id order
    (and an empty sender id, which sorts first)."""
    now = time.time()
    async with tracker_store_config(kind, tmp_path) as config:
        store = create_tracker_store(config)
        try:
            names = [""] + [f"user-{n:04d}" for n in range(1_200)]
            fresh = set(names[::7])
            for start in range(0, len(names), 100):
                await asyncio.gather(
                    *(
                        store.append(name, [bot("hi", now if name in fresh else now - 200 * DAY)])
                        for name in names[start : start + 100]
                    )
                )

            deleted = (await delete_conversations_older_than(store, 90 * DAY)).deleted

            assert deleted == len(names) - len(fresh)
            assert sorted(await store.keys()) == sorted(fresh)
        finally:
            await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
async def test_prune_leaves_a_conversation_in_the_middle_of_a_turn(
    kind: str, tmp_path: Path
) -> None:
    """`botserver prune` with the servers' Redis lock in endpoints.yml: a stale conversation
    whose turn is running (lock held, history loaded, events not yet appended) keeps its
    history; before, it was deleted and the turn appended to an empty conversation."""
    import yaml

    import cli
    from server.trackers.factory import create_lock_store

    now = time.time()
    async with tracker_store_config(kind, tmp_path) as config:
        locks_config = await _redis_lock_config()
        endpoints = tmp_path / "endpoints.yml"
        endpoints.write_text(yaml.safe_dump({"tracker_store": config, "lock_store": locks_config}))
        serving, locks = create_tracker_store(config), create_lock_store(locks_config)
        try:
            await serving.append("mid-turn", [bot("long ago", now - 200 * DAY)])
            await serving.append("gone", [bot("long ago", now - 200 * DAY)])

            async with locks.lock("mid-turn"):
                history = await serving.load_all("mid-turn")
                prune = ["prune", "--older-than-days", "90", "--endpoints", str(endpoints)]
                assert await asyncio.to_thread(cli.main, prune) == 0
                await serving.append("mid-turn", [bot("welcome back", now)])

            assert history == [bot("long ago", now - 200 * DAY)]
            assert await serving.keys() == ["mid-turn"]
            assert await serving.load_all("mid-turn") == [*history, bot("welcome back", now)]
            async with locks.lock("gone", wait_timeout=0.5):  # the prune gave its locks back
                pass
        finally:
            await serving.close()
            await locks.close()
            await delete_redis_keys(locks_config["key_prefix"], db=1)


class _Told(logging.Handler):
    """Sets `event` at a log line saying a lock was gone."""

    def __init__(self, event: asyncio.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "was gone" in record.getMessage():
            self.event.set()


@pytest.mark.parametrize("found_by", ["renewal", "look before the delete"])
@pytest.mark.parametrize("kind", ["sqlite", "redis", "dynamo"])
async def test_prune_leaves_a_conversation_whose_lock_it_lost_and_exits_1(
    kind: str,
    found_by: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Redis loses the lease of a conversation the prune holds (restarted without its data):
    another process may now be in a turn there. Found gone by the lease's renewal, or by the
    look at the batch's leases before its delete goes out (a renewal is due only a third of
    `lock_lifetime` on: 20 s by default), the prune leaves it alone, names it, and exits 1
    for the cron job (the other is deleted). Before, the prune went on and deleted it, and
    exited 0. Two lost are said as two (before: "2 conversations's lock ... left it")."""
    import yaml
    from redis.asyncio import Redis

    import cli
    from server.trackers.redis_lock import RedisLockStore

    now = time.time()
    async with tracker_store_config(kind, tmp_path) as config:
        lifetime = 1.0 if found_by == "renewal" else 60  # (1 s: two leases kept at load)
        lost = ["ana"] if found_by == "renewal" else ["ana", "cy"]
        locks_config = {**await _redis_lock_config(), "lock_lifetime": lifetime}
        endpoints = tmp_path / "endpoints.yml"
        endpoints.write_text(yaml.safe_dump({"tracker_store": config, "lock_store": locks_config}))
        serving = create_tracker_store(config)
        hold_idle = RedisLockStore.hold_idle

        @contextlib.asynccontextmanager
        async def losing_them(self: RedisLockStore, ids: list[str]) -> AsyncIterator[Any]:
            async with hold_idle(self, ids) as idle:
                told = asyncio.Event()
                handler = _Told(told)
                logging.getLogger("server.trackers.redis_lock").addHandler(handler)
                client = Redis(host=REDIS[0], port=REDIS[1], db=1)
                try:
                    await client.delete(*(f"{locks_config['key_prefix']}:lock:{c}" for c in lost))
                    if found_by == "renewal":
                        await asyncio.wait_for(told.wait(), 5)  # a third of a second on
                finally:
                    await client.aclose()
                    logging.getLogger("server.trackers.redis_lock").removeHandler(handler)
                yield idle

        monkeypatch.setattr(RedisLockStore, "hold_idle", losing_them)
        try:
            await serving.append("ana", [bot("long ago", now - 200 * DAY)])
            await serving.append("bob", [bot("long ago", now - 200 * DAY)])
            await serving.append("cy", [bot("long ago", now - 200 * DAY)])
            prune = ["prune", "--older-than-days", "90", "--endpoints", str(endpoints)]
            log_file = tmp_path / "prune.log"
            code = await asyncio.to_thread(cli.main, [*prune, "--log-file", str(log_file)])

            assert sorted(await serving.keys()) == lost
            assert code == 1
            out, err = capsys.readouterr()
            assert out == (
                "Deleted 2 conversations.\n" if len(lost) == 1 else "Deleted 1 conversation.\n"
            )
            # The ERROR (one line for the conversations lost at one look).
            assert re.search(r"(was|were) gone while a prune held (it|them)", err), err
            # (Not the last line: moto's server logs on stderr too.)
            (said,) = [line for line in err.splitlines() if line.startswith("error:")]
            if found_by == "renewal":
                assert said == (
                    "error: the lock of 1 conversation was found lost while the prune held it; "
                    "the prune left it alone from then on, unless its delete had gone out "
                    "already (another process may be in a turn there): 'ana'; see the log above"
                )
            else:
                assert said in (
                    "error: the locks of 2 conversations were found lost while the prune held "
                    "them; the prune left them alone from then on, unless their delete had gone "
                    f"out already (another process may be in a turn there): {names}; see the "
                    "log above"
                    for names in ("'ana', 'cy'", "'cy', 'ana'")  # (Redis's SCAN: any order)
                )
            # In the log file too (a cron job's), as the ERROR record that ends it.
            logged = log_file.read_text(encoding="utf-8")
            assert logged.count(f"ERROR   botserver - {said.removeprefix('error: ')}\n") == 1
        finally:
            await serving.close()
            await delete_redis_keys(locks_config["key_prefix"], db=1)


@pytest.mark.parametrize(("lost", "lock_db"), [("long", 1), ("short", 1), ("short", 0)])
async def test_redis_prune_leaves_a_conversation_whose_lock_was_lost_after_the_look(
    lost: str, lock_db: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis loses a lease after the look before the batch's delete (restarted without its
    data, a failover): the conversation is left alone and named, the other deleted.

    `long`, of more than 100 events, is read and deleted after the batch's pipeline, one at
    a time: the prune looks again before those deletes. Before, it was deleted all the same,
    the prune saying nothing and exiting 0 (no renewal due for 20 s to find the lease gone).
    `short` is deleted by the pipeline itself: with the lock store on the same Redis server,
    the script that deletes a conversation checks its lease in the same step (in a database
    of its own, the lock store's default 1, or in the tracker store's). Before, that window
    was too late to skip: it was deleted, and the prune exited 0."""
    from redis.asyncio import Redis

    from server.trackers.redis_lock import RedisLockStore

    now = time.time()
    async with tracker_store_config("redis", tmp_path) as config:
        locks_config = {**await _redis_lock_config(), "db": lock_db}
        store, locks = create_tracker_store(config), RedisLockStore(locks_config)
        client = Redis(host=REDIS[0], port=REDIS[1], db=lock_db)
        look = RedisLockStore._check_idle

        async def look_then_lose_it(self: RedisLockStore, tokens: Any, idle: Any) -> None:
            await look(self, tokens, idle)
            await client.delete(f"{locks_config['key_prefix']}:lock:{lost}")

        monkeypatch.setattr(RedisLockStore, "_check_idle", look_then_lose_it)
        try:
            await store.append("long", [bot(f"{n}", now - 200 * DAY + n) for n in range(150)])
            await store.append("short", [bot("long ago", now - 200 * DAY)])

            pruned = await delete_conversations_older_than(store, 90 * DAY, locks)

            assert await store.keys() == [lost]
            assert (pruned.deleted, pruned.lost) == (1, [lost])
        finally:
            await store.close()
            await locks.close()
            await client.aclose()
            await delete_redis_keys(locks_config["key_prefix"], db=lock_db)


async def test_redis_prune_says_the_leases_its_delete_found_lost_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis loses the batch's leases after the look before its delete (a failover): the
    delete's script finds each gone and leaves the conversations alone. One ERROR says so
    for the three; before, one a conversation (500 a batch)."""
    from redis.asyncio import Redis

    from server.trackers.redis_lock import RedisLockStore

    now = time.time()
    async with tracker_store_config("redis", tmp_path) as config:
        locks_config = {**await _redis_lock_config(), "db": 0}
        store, locks = create_tracker_store(config), RedisLockStore(locks_config)
        client = Redis(host=REDIS[0], port=REDIS[1], db=0)
        look = RedisLockStore._check_idle

        async def look_then_lose_them(self: RedisLockStore, tokens: Any, idle: Any) -> None:
            await look(self, tokens, idle)
            await client.delete(*(f"{locks_config['key_prefix']}:lock:{c}" for c in tokens))

        monkeypatch.setattr(RedisLockStore, "_check_idle", look_then_lose_them)
        try:
            for sender_id in ("ana", "bob", "cy"):
                await store.append(sender_id, [bot("long ago", now - 200 * DAY)])

            with caplog.at_level(logging.ERROR, logger="server.trackers.redis_lock"):
                pruned = await delete_conversations_older_than(store, 90 * DAY, locks)

            assert (pruned.deleted, sorted(pruned.lost)) == (0, ["ana", "bob", "cy"])
        finally:
            await store.close()
            await locks.close()
            await client.aclose()
            await delete_redis_keys(locks_config["key_prefix"], db=0)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(said) == 1, said
    assert said[0].startswith("The locks of 3 conversations ("), said
    assert "were gone while a prune held them: Redis lost them (" in said[0], said


async def _redis_lock_config() -> dict[str, Any]:
    require_service("Redis", REDIS)
    prefix = unique_name("bstest_locks")
    return {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres", "mariadb", "redis", "dynamo"])
async def test_prune_goes_by_the_newest_event_not_the_last_one(kind: str, tmp_path: Path) -> None:
    """A conversation whose last event carries an old timestamp (events a client appended
    with their original timestamps, a worker whose clock is behind) is as recent as its
    newest event. Before, the Redis store judged by the last event alone and deleted such a
    conversation of yesterday, which every other store keeps. (Redis reads a list of more
    than 100 events outside its prune script: `long-ago-*`.)"""
    now = time.time()
    old = [bot(f"imported {n}", now - 200 * DAY + n) for n in range(250)]
    async with tracker_store_config(kind, tmp_path) as config:
        store = create_tracker_store(config)
        try:
            await store.append("yesterday", [bot("hi", now - DAY)])
            await store.append("yesterday", [bot("imported", now - 200 * DAY)])
            await store.append("long-ago-yesterday", [bot("hi", now - DAY), *old])
            await store.append("stale", [bot("hi", now - 300 * DAY), bot("bye", now - 200 * DAY)])
            await store.append("long-ago-stale", old)

            deleted = (await delete_conversations_older_than(store, 90 * DAY)).deleted

            assert deleted == 2
            assert sorted(await store.keys()) == ["long-ago-yesterday", "yesterday"]
        finally:
            await store.close()


@pytest.mark.parametrize("replacement", ["shorter", "as-long-same-end"])
async def test_redis_keeps_a_long_conversation_replaced_while_the_prune_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replacement: str
) -> None:
    """A list too long for the prune script is read by the prune process, then deleted only
    if it is unchanged since: a replace meanwhile (a PUT of the tracker's events, whose newest
    event is recent but not last) keeps it. (A turn appended meanwhile ends the list with a
    recent event, which keeps it anyway.) Before, only the list's length and last item were
    compared, and a replace by a list as long, of the same last item, was deleted."""
    now = time.time()
    old = [bot(f"old {n}", now - 200 * DAY) for n in range(250)]
    restored = [bot("welcome back", now)]
    restored += (
        old[1:] if replacement == "as-long-same-end" else [bot("imported", old[0]["timestamp"])]
    )
    async with tracker_store_config("redis", tmp_path) as config:
        pruning, serving = create_tracker_store(config), create_tracker_store(config)
        try:
            await serving.append("returning", old)
            client: Any = pruning._redis  # type: ignore[attr-defined]
            read = client.lrange
            replaces = [restored]

            async def read_then_a_replace(*args: Any) -> Any:
                items = await read(*args)
                while replaces:
                    await serving.replace("returning", replaces.pop())
                return items

            monkeypatch.setattr(client, "lrange", read_then_a_replace)

            assert (await delete_conversations_older_than(pruning, 90 * DAY)).deleted == 0
            assert await serving.load_all("returning") == restored
        finally:
            await pruning.close()
            await serving.close()


def _scanned_pages(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The pages of conversations a Redis store scans from now on, in order. SCAN's COUNT is a
    hint, not a page size: a page holds every key of the hash buckets it visits (a chain, both
    tables while Redis rehashes), and on a Redis other tests fill, 3 of the 6 came in one page
    of COUNT 2."""
    from server.trackers.redis_store import RedisTrackerStore

    pages: list[list[str]] = []
    scan = RedisTrackerStore._scan_page

    async def recorded(self: RedisTrackerStore, cursor: int) -> tuple[int, list[str]]:
        cursor, sender_ids = await scan(self, cursor)
        pages.append(sender_ids)
        return cursor, sender_ids

    monkeypatch.setattr(RedisTrackerStore, "_scan_page", recorded)
    return pages


def _deleted_after_the_stop_s_page(pages: list[list[str]], kept: list[str]) -> set[str]:
    """The conversations deleted that were not in the page the stop came in (the first page
    with a deletion, which the prune finishes): those a later page deleted."""
    deleted = set(SIX) - set(kept)
    stop_page = next((set(page) for page in pages if deleted & set(page)), set())
    return deleted - stop_page


async def _prune_stopped_at_the_first_deletion(
    store: TrackerStore, now: float, locks: Any = None
) -> list[int]:
    """Six conversations 200 days old, pruned until the first deletion asks the prune's task
    to stop (then a Redis command goes out: the cancel may be dropped); the counts the prune
    told, one a call. The prune must end CancelledError."""
    for sender_id in SIX:
        await store.append(sender_id, [bot("long ago", now - 200 * DAY)])
    batches: list[int] = []

    def deleted_some(deleted: int) -> None:
        batches.append(deleted)
        if len(batches) == 1:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await delete_conversations_older_than(store, 90 * DAY, locks, deleted_some)
    return batches


async def test_redis_prune_whose_stop_a_redis_call_swallowed_takes_no_further_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune stopped (SIGTERM, Ctrl-C: its task cancelled) at the moment a Redis command
    went out: on Python 3.11 the client's `asyncio.wait_for` around the send returns the
    send's result and drops the cancellation (half of the stops of a busy prune, measured).
    The prune stops before its next batch takes its locks. Before, it went on to the end:
    the stop was lost, and Kubernetes killed it later with its locks held."""
    from redis.asyncio import Redis

    from server.trackers import redis_store
    from server.trackers.redis_lock import RedisLockStore

    monkeypatch.setattr(redis_store, "_PRUNE_BATCH", 2)
    pages = _scanned_pages(monkeypatch)
    now = time.time()
    async with tracker_store_config("redis", tmp_path) as config:
        locks_config = {**await _redis_lock_config(), "db": 0}
        store, locks = create_tracker_store(config), RedisLockStore(locks_config)
        client = Redis(host=REDIS[0], port=REDIS[1], db=0)
        try:
            batches = await _prune_stopped_at_the_first_deletion(store, now, locks)
            pages = pages.copy()  # (the prune's, not those of the listing below)
            left = await client.keys(f"{locks_config['key_prefix']}:lock:*")
            kept = await store.keys()
        finally:
            await store.close()
            await locks.close()
            await client.aclose()
            await delete_redis_keys(locks_config["key_prefix"], db=0)
    assert left == []
    assert sum(batches) + len(kept) == 6, (batches, kept)
    # (The page the stop came in finished: no later one.)
    assert _deleted_after_the_stop_s_page(pages, kept) == set(), (pages, kept)


@pytest.mark.parametrize("kind", ["redis", "sqlite", "postgres", "mariadb", "dynamo"])
async def test_a_prune_without_a_lock_store_whose_stop_was_swallowed_takes_no_further_batch(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the test above, without a lock store (each store's own loop): a stop that came as
    a Redis command went out was dropped, and the prune went on to its end (`botserver
    prune` carried on after Ctrl-C). It stops before its next batch."""
    from server.trackers import dynamo_store, redis_store, sql_store

    monkeypatch.setattr(redis_store, "_PRUNE_BATCH", 2)
    monkeypatch.setattr(sql_store, "DELETE_BATCH", 2)
    monkeypatch.setattr(dynamo_store, "DELETE_HELD", 2)
    pages = _scanned_pages(monkeypatch)
    now = time.time()
    async with tracker_store_config(kind, tmp_path) as config:
        store = create_tracker_store(config)
        try:
            batches = await _prune_stopped_at_the_first_deletion(store, now)
            pages = pages.copy()  # (the prune's, not those of the listing below)
            kept = await store.keys()
        finally:
            await store.close()
    if kind == "redis":  # (a SCAN page: 2 or more)
        assert _deleted_after_the_stop_s_page(pages, kept) == set(), (pages, kept)
    else:  # (At most the batch the stop came in, of 2: no later one.)
        assert len(kept) >= 4, (batches, kept)
