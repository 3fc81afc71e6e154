"""Conversation locks: mutual exclusion, FIFO, lease renewal, safe release, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shlex
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bench.tcp_proxy import TcpProxy, free_port
from server.errors import InvalidConfig, LockTimeout, StoreUnavailable
from server.outages import RepeatsCounted
from server.trackers import redis_lock
from server.trackers.factory import create_lock_store, create_tracker_store
from server.trackers.lock import LockStore
from server.trackers.memory_lock import InMemoryLockStore
from server.trackers.redis_client import describe
from server.trackers.redis_lock import RedisLockStore
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
)


async def run_turns(stores: list[LockStore], turns: int) -> list[tuple[str, int]]:
    """Concurrent turns on one conversation, spread over the stores; returns the trace."""
    trace: list[tuple[str, int]] = []

    async def turn(number: int) -> None:
        async with stores[number % len(stores)].lock("conv", wait_timeout=10):
            trace.append(("start", number))
            await asyncio.sleep(0.005)
            trace.append(("end", number))

    await asyncio.gather(*(turn(n) for n in range(turns)))
    return trace


def assert_not_interleaved(trace: list[tuple[str, int]], turns: int) -> None:
    assert len(trace) == 2 * turns
    for i in range(0, len(trace), 2):
        assert trace[i][0] == "start" and trace[i + 1] == ("end", trace[i][1])


async def test_memory_lock_serves_turns_one_at_a_time_in_arrival_order() -> None:
    store = InMemoryLockStore()
    trace = await run_turns([store], turns=20)
    assert_not_interleaved(trace, 20)
    assert [n for kind, n in trace if kind == "start"] == list(range(20))


async def test_memory_lock_wait_is_bounded() -> None:
    store = create_lock_store(None)
    async with store.lock("conv"):
        with pytest.raises(LockTimeout, match="Could not lock conversation 'conv' within 0.05 s"):
            async with store.lock("conv", wait_timeout=0.05):
                pass
    async with store.lock("conv", wait_timeout=0.05):
        pass


async def test_memory_lock_does_not_block_other_conversations() -> None:
    store = InMemoryLockStore()
    async with store.lock("a"):
        async with store.lock("b", wait_timeout=0.05):
            pass


async def test_memory_lock_is_free_again_after_a_failed_turn_and_a_cancelled_wait() -> None:
    store = InMemoryLockStore()
    with pytest.raises(ValueError):
        async with store.lock("conv"):
            raise ValueError("the turn failed")
    entered = asyncio.Event()

    async def holder() -> None:
        async with store.lock("conv"):
            entered.set()
            await asyncio.sleep(0.05)

    held = asyncio.create_task(holder())
    await entered.wait()
    waiter = asyncio.create_task(store.lock("conv", wait_timeout=10).__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await held
    async with store.lock("conv", wait_timeout=0.05):  # nobody left in line
        pass


async def test_memory_lock_after_a_timed_out_wait_goes_to_the_next_in_line() -> None:
    # The holder took it while nobody waited; the first to wait gives up, the next waits
    # until the holder is done, and nothing is left behind.
    store = InMemoryLockStore()
    order: list[str] = []
    done = asyncio.Event()

    async def holder() -> None:
        async with store.lock("conv"):
            order.append("holder")
            await done.wait()

    async def next_in_line() -> None:
        async with store.lock("conv", wait_timeout=5):
            order.append("next")

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    with pytest.raises(LockTimeout):
        async with store.lock("conv", wait_timeout=0.01):
            order.append("timed out")
    waiting = asyncio.create_task(next_in_line())
    await asyncio.sleep(0.02)
    assert order == ["holder"]
    done.set()
    await asyncio.gather(held, waiting)
    assert order == ["holder", "next"] and store._queues == {}


async def test_redis_lock_excludes_turns_across_two_lock_stores(
    redis_config: dict[str, Any],
) -> None:
    stores = [RedisLockStore(redis_config), RedisLockStore(redis_config)]
    try:
        trace = await run_turns(list(stores), turns=30)
    finally:
        for store in stores:
            await store.close()
    assert_not_interleaved(trace, 30)


async def test_redis_lock_is_fifo_within_one_process(redis_config: dict[str, Any]) -> None:
    store = RedisLockStore(redis_config)
    try:
        trace = await run_turns([store], turns=10)
    finally:
        await store.close()
    assert [n for kind, n in trace if kind == "start"] == list(range(10))


async def test_lease_renewal_keeps_a_long_turn_locked(redis_config: dict[str, Any]) -> None:
    holder = RedisLockStore({**redis_config, "lock_lifetime": 0.3})
    other = RedisLockStore({**redis_config, "lock_lifetime": 0.3})
    try:
        async with holder.lock("conv"):
            # Three lifetimes later the lease has been renewed, so the other store waits.
            with pytest.raises(LockTimeout):
                async with other.lock("conv", wait_timeout=1.0):
                    pass
        async with other.lock("conv", wait_timeout=1.0):
            pass
    finally:
        await holder.close()
        await other.close()


async def test_release_of_an_expired_lease_keeps_the_new_owners_key(
    redis_config: dict[str, Any],
) -> None:
    first = RedisLockStore(redis_config)
    key = f"{redis_config['key_prefix']}:lock:conv"
    client = Redis(host=REDIS[0], port=REDIS[1], db=1, decode_responses=True)
    try:
        async with first.lock("conv"):
            await client.delete(key)  # the lease ran out while the turn was running
            await client.set(key, "someone-else")  # and another process took the lock
        await first.wait_for_releases()
        assert await client.get(key) == "someone-else"
    finally:
        await client.aclose()
        await first.close()


async def test_redis_lock_wait_ends_in_lock_timeout(redis_config: dict[str, Any]) -> None:
    holder, waiter = RedisLockStore(redis_config), RedisLockStore(redis_config)
    try:
        async with holder.lock("conv"):
            with pytest.raises(LockTimeout, match="'conv' within 0.2 s"):
                async with waiter.lock("conv", wait_timeout=0.2):
                    pass
    finally:
        await holder.close()
        await waiter.close()


async def test_unreachable_redis_raises_store_unavailable() -> None:
    store = create_lock_store({"type": "redis", "url": "127.0.0.1", "port": free_port()})
    try:
        with pytest.raises(StoreUnavailable, match="lock store"):
            async with store.lock("conv", wait_timeout=1):
                pass
    finally:
        await store.close()


async def test_a_release_lost_in_a_redis_outage_is_retried_when_redis_is_back(
    redis_config: dict[str, Any],
) -> None:
    """Redis unreachable as a turn ends: its release fails and the lease stays in Redis.
    Before, the conversation's next turns waited out the whole lease (60 s by default, as
    long as the default wait: 503s) although Redis was back within a second."""
    async with through_proxy(redis_config, TcpProxy(REDIS)) as (store, other, proxy):
        async with store.lock("conv"):
            await proxy.cut()
        await asyncio.sleep(0.2)
        await proxy.restore()
        async with other.lock("conv", wait_timeout=3):
            pass


async def test_leases_redis_could_not_renew_are_one_warning_and_the_right_reason(
    redis_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Two turns hold their leases (1.5 s) while Redis is away for 3 s. Before, each lease
    logged a warning at every retry (a sixth of the lifetime: 20 lines here; with the
    default 60 s, one a lease every 10 s), and then an ERROR advising to raise
    lock_lifetime, which would not have helped."""
    proxy = TcpProxy(REDIS)
    await proxy.restore()
    store = RedisLockStore({**redis_config, "port": proxy.port, "lock_lifetime": 1.5})
    try:
        async with store.lock("ana"), store.lock("bob"):
            await proxy.cut()
            await asyncio.sleep(3)
            await proxy.restore()
            await asyncio.sleep(1)
    finally:
        await store.close()
        await proxy.cut()
    renewals = [r for r in caplog.records if "renew" in r.getMessage()]
    assert len([r for r in renewals if r.levelname == "WARNING"]) == 1, caplog.text
    expired = [r.getMessage() for r in caplog.records if "expired" in r.getMessage()]
    # (One line for both when their renewals were due at once.)
    assert sorted(re.findall(r"'(ana|bob)'", " ".join(expired))) == ["ana", "bob"], expired
    assert not any("raise lock_lifetime" in m for m in expired)
    assert all("could not be renewed" in m for m in expired), expired


async def test_a_turn_ending_after_its_renewals_failed_names_that_cause(
    redis_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis away longer than the lease (1.5 s), back just as the turn ends, before a
    renewal got through: the lease ran out while it could not be renewed. Before, the
    warning blamed Redis losing its data or this process stalling, neither of which
    happened."""
    proxy = TcpProxy(REDIS)
    await proxy.restore()
    store = RedisLockStore({**redis_config, "port": proxy.port, "lock_lifetime": 1.5})
    try:
        async with store.lock("ana"):
            await proxy.cut()
            await asyncio.sleep(2)
            await proxy.restore()
    finally:
        await store.close()
        await proxy.cut()
    (gone,) = [r.getMessage() for r in caplog.records if "was gone" in r.getMessage()]
    assert gone.startswith("The lock of conversation 'ana' was gone when its turn ended: it")
    assert "could not be renewed for" in gone and "Redis unreachable" in gone, gone
    assert "restarted without its data" not in gone, gone
    # (redis-py's reason ends in a full stop: before, "Connect call failed (...).; retried")
    (renewal,) = [r.getMessage() for r in caplog.records if "Could not renew" in r.getMessage()]
    assert ".;" not in renewal and "Connect call failed" in renewal, renewal


async def test_releases_redis_could_not_take_are_one_warning(
    redis_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Three turns end while Redis is away. Before, each logged its own "Could not release"
    warning: during an outage under load, one line per conversation with a turn in flight
    (12 lines in `botserver run`'s log, where the outage is to be two)."""
    async with through_proxy(redis_config, TcpProxy(REDIS)) as (store, other, proxy):
        async with store.lock("ana"), store.lock("bob"), store.lock("eve"):
            await proxy.cut()
        await store.wait_for_releases()  # (sent after the turns' end: failed)
        await proxy.restore()
        for conversation in ("ana", "bob", "eve"):  # each release retried once Redis is back
            async with other.lock(conversation, wait_timeout=3):
                pass
    releases = [r for r in caplog.records if "release" in r.getMessage()]
    assert len([r for r in releases if r.levelname == "WARNING"]) == 1, caplog.text
    assert "Could not release the lock of conversation 'eve'" in releases[0].getMessage(), (
        caplog.text
    )


async def test_releases_redis_could_not_take_are_counted_and_the_next_outage_logs_again(
    redis_config: dict[str, Any], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window's count names no conversation, with the right figure and Redis's address;
    an outage after the window ends (an hour later in production) has its own warning; every
    conversation whose release failed is named at DEBUG (before, only the first, at WARNING:
    the others, locked until a retry or their lease's end, were named nowhere)."""
    monkeypatch.setattr(redis_lock, "_RELEASES_FAILED", RepeatsCounted(redis_lock.logger, 0.3))
    caplog.set_level(logging.DEBUG, logger=redis_lock.logger.name)
    async with through_proxy(redis_config, TcpProxy(REDIS)) as (store, other, proxy):
        where = describe(store._redis)
        async with store.lock("ana"), store.lock("bob"), store.lock("eve"):
            await proxy.cut()
        await store.wait_for_releases()  # (sent after the turns' end: failed)
        await proxy.restore()
        await asyncio.sleep(0.5)  # the window ends
        async with store.lock("zoe"):
            await proxy.cut()
        await store.wait_for_releases()
        await proxy.restore()
        for conversation in ("ana", "bob", "eve", "zoe"):  # each release retried
            async with other.lock(conversation, wait_timeout=3):
                pass
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "release" in r.getMessage()]
    warnings = [message for level, message in said if level == "WARNING"]
    assert len(warnings) == 3, said
    assert warnings[0].startswith(
        f"Could not release the lock of conversation 'eve' ({where}): "
    ), said
    assert warnings[1] == (
        f"2 more times in the last 0.3 s: could not release the locks of ended turns ({where})"
    )
    assert warnings[2].startswith(
        f"Could not release the lock of conversation 'zoe' ({where}): "
    ), said
    named = [message for level, message in said if level == "DEBUG"]
    assert [m.split("'")[1] for m in named] == ["bob", "ana"], said
    assert all(m.endswith("retrying until its lease ends") for m in named), named


@pytest.mark.parametrize(
    ("conversations", "released"),
    [
        (["ana"], "the lock of conversation 'ana' (redis at "),
        (["ana", "bob"], "the locks of 2 conversations ('ana', 'bob') (redis at "),
    ],
)
async def test_idle_locks_redis_could_not_give_back_are_given_back_once_it_is_back(
    redis_config: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    conversations: list[str],
    released: str,
) -> None:
    """Redis goes away while a prune batch holds its locks, and comes back 0.5 s later: one
    warning for them all, in the singular for one lock and the plural for two (before: "... 1
    conversation locks ...; retrying until their leases end"), and the give-back is retried
    until it gets through, before the prune's process closes its lock store and exits.
    Before, the retries ran in the background, which the close stopped: the conversations'
    next messages waited out `lock_lifetime` (30 s here: a 503 after their 3 s
    `wait_timeout`)."""
    async with through_proxy(redis_config, TcpProxy(REDIS)) as (store, other, proxy):
        async with store.hold_idle(conversations) as held:
            assert await held.still_held() == conversations  # (the look before a delete)
            await proxy.cut()
            asyncio.get_running_loop().call_later(
                0.5, lambda: asyncio.ensure_future(proxy.restore())
            )
        await store.close()  # (as the prune command does at its end)
        for conversation in conversations:
            async with other.lock(conversation, wait_timeout=3):
                pass
    said = [r.getMessage() for r in caplog.records if "release" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"Could not release {released}"), said
    until = "its lease ends" if len(conversations) == 1 else "their leases end"
    assert f"; retrying until {until}, further failures" in said[0], said


@contextlib.asynccontextmanager
async def through_proxy(
    redis_config: dict[str, Any], proxy: TcpProxy
) -> AsyncIterator[tuple[RedisLockStore, RedisLockStore, TcpProxy]]:
    """A lock store reaching Redis through `proxy` (30 s leases), and another process's
    lock store with its own way to Redis."""
    await proxy.restore()
    store = RedisLockStore({**redis_config, "port": proxy.port, "lock_lifetime": 30})
    other = RedisLockStore(redis_config)
    try:
        yield store, other, proxy
    finally:
        await store.close()
        await other.close()
        await proxy.cut()


@pytest.mark.parametrize("lifetime", [-1, 0.0001, 1e20, "inf"])
def test_a_lease_redis_refuses_is_refused_at_start_up(lifetime: float | str) -> None:
    """Before, the server started and Redis refused every turn's SET ... PX (as a 500, and
    before that as a REST webhook's 200 for a message neither handled nor stored); an
    infinite lifetime was refused as 'a setting has the wrong type' naming none."""
    with pytest.raises(InvalidConfig, match="lock_lifetime"):
        create_lock_store({"type": "redis", "url": REDIS[0], "lock_lifetime": lifetime})


async def test_ticket_lock_lifetime_0_is_rasas_default_lifetime(
    redis_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa reads `TICKET_LOCK_LIFETIME=0` as its default, 60 s (`int(...) or 60`): before,
    a deployment that set it so, which Rasa started, was refused at start-up."""
    monkeypatch.setenv("TICKET_LOCK_LIFETIME", "0")
    store = create_lock_store(redis_config)
    client = Redis(host=REDIS[0], port=REDIS[1], db=1)
    try:
        async with store.lock("conv"):
            lease_ms = await client.pttl(f"{redis_config['key_prefix']}:lock:conv")
        assert 55_000 < lease_ms <= 60_000
    finally:
        await store.close()
        await client.aclose()


@pytest.mark.parametrize("kind", ["redis", "in_memory"])
@pytest.mark.parametrize("wait_timeout", [-1, "nan"])
def test_a_wait_timeout_that_is_no_wait_is_refused_at_start_up(
    kind: str, wait_timeout: float | str
) -> None:
    """Before, `nan` made a turn behind a busy one wait for ever (no 503 ever), and a
    negative one refused every such turn at once, `within -1 s`."""
    with pytest.raises(InvalidConfig, match="wait_timeout"):
        create_lock_store({"type": kind, "url": REDIS[0], "wait_timeout": wait_timeout})


def test_an_infinite_ticket_lock_lifetime_is_named_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rasa refuses it (`int('inf')`); before, the error named no setting."""
    monkeypatch.setenv("TICKET_LOCK_LIFETIME", "inf")
    with pytest.raises(InvalidConfig, match="TICKET_LOCK_LIFETIME"):
        create_lock_store({"type": "redis", "url": REDIS[0]})


@pytest.mark.parametrize("value", ["sixty", "1m"])
def test_a_ticket_lock_lifetime_that_is_no_number_is_named_at_start_up(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the error blamed `a setting` of endpoints.yml's lock_store section, which held
    no such setting."""
    monkeypatch.setenv("TICKET_LOCK_LIFETIME", value)
    with pytest.raises(InvalidConfig, match=f"TICKET_LOCK_LIFETIME.*'{value}'"):
        create_lock_store({"type": "redis", "url": REDIS[0]})


@pytest.mark.parametrize("section", ["lock_store", "tracker_store"])
@pytest.mark.parametrize("timeout", [0, -1])
def test_a_redis_socket_timeout_that_is_no_time_is_refused_at_start_up(
    section: str, timeout: float
) -> None:
    """Before, the server started and every turn answered 503, Redis being 'unavailable:
    No reply within 0 s'."""
    create = create_lock_store if section == "lock_store" else create_tracker_store
    with pytest.raises(InvalidConfig, match=f"{section}.*socket_timeout"):
        create({"type": "redis", "url": REDIS[0], "socket_timeout": timeout})


async def test_a_lease_whose_acquire_reply_was_lost_is_given_back(
    redis_config: dict[str, Any],
) -> None:
    """The connection breaks after Redis ran the SET but before its reply came back: the
    re-sent acquire finds its own lease (or, if it fails, the lease is given back). Before,
    the re-sent SET NX failed against that lease until the wait timed out (503), and the
    lease then blocked the conversation for the whole lock_lifetime."""
    from tests.scale.test_commit_answer_lost import AnswerLosingProxy

    proxy = AnswerLosingProxy(REDIS)
    async with through_proxy(redis_config, proxy) as (store, other, _):
        proxy.lose_answer_to = f"{redis_config['key_prefix']}:lock:conv".encode()
        async with store.lock("conv", wait_timeout=2):
            pass
        async with other.lock("conv", wait_timeout=3):
            pass


def rasa_ticket_lock(conversation_id: str, *expires: float) -> str:
    """The value of Rasa 3.6's `<prefix>:lock:<id>` key: tickets as JSON texts in JSON."""
    tickets = [json.dumps({"number": n, "expires": e}) for n, e in enumerate(expires)]
    return json.dumps({"conversation_id": conversation_id, "tickets": tickets})


@pytest.fixture
async def rasa_shared_redis(
    redis_config: dict[str, Any],
) -> AsyncIterator[tuple[dict[str, Any], Redis]]:
    """A lock store config with a prefix Rasa uses too (letters and digits), and a client
    writing that database as a Rasa server would."""
    config = {**redis_config, "key_prefix": redis_config["key_prefix"].replace("_", "")}
    client = Redis(host=REDIS[0], port=REDIS[1], db=1, decode_responses=True)
    try:
        yield config, client
    finally:
        await delete_redis_keys(config["key_prefix"], db=1)
        await client.aclose()


@pytest.mark.parametrize("left", ["expired ticket", "no ticket"])
async def test_a_lock_left_by_a_rasa_process_that_died_is_taken(
    rasa_shared_redis: tuple[dict[str, Any], Redis], left: str
) -> None:
    """A Rasa server killed in a turn leaves its ticket lock, a key without a lifetime that
    Rasa deletes only once its last ticket is served; Rasa takes it again once the tickets
    have expired. Before, botserver found the key taken for good: every message of that
    conversation waited `wait_timeout` and answered 503, for ever."""
    config, client = rasa_shared_redis
    key = f"{config['key_prefix']}:lock:ana"
    value = {
        "expired ticket": rasa_ticket_lock("ana", time.time() - 1),
        "no ticket": rasa_ticket_lock("ana"),
    }[left]
    await client.set(key, value)
    store = RedisLockStore(config)
    try:
        async with store.lock("ana", wait_timeout=1):
            assert await client.pttl(key) > 0  # our lease now, with its lifetime
        await store.wait_for_releases()
        assert await client.exists(key) == 0
    finally:
        await store.close()


async def test_another_programs_key_where_a_lease_goes_is_left_as_it_is(
    rasa_shared_redis: tuple[dict[str, Any], Redis],
) -> None:
    """A key without a lifetime that is no Rasa ticket lock is not ours to overwrite (nor to
    delete at the turn's end): the turn waits for it, as before."""
    config, client = rasa_shared_redis
    key = f"{config['key_prefix']}:lock:ana"
    await client.set(key, "another program's")
    store = RedisLockStore(config)
    try:
        with pytest.raises(LockTimeout):
            async with store.lock("ana", wait_timeout=0.2):
                pass
    finally:
        await store.close()
    assert await client.get(key) == "another program's"


async def test_a_wait_on_a_key_without_expiry_names_the_key_once_a_window(
    rasa_shared_redis: tuple[dict[str, Any], Redis],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Such a key makes the conversation answer 503 for good: the operator is told which key,
    that it has no expiry and how to clear it, once per conversation per window. Before, the
    log said only that the conversation was busy."""
    config, client = rasa_shared_redis
    monkeypatch.setattr(redis_lock, "_KEPT_FOR_GOOD", RepeatsCounted(redis_lock.logger, 60))
    key = f"{config['key_prefix']}:lock:ana"
    await client.set(key, "another program's")
    store = RedisLockStore(config)
    caplog.set_level(logging.WARNING, logger=redis_lock.logger.name)
    try:
        for _ in range(3):
            with pytest.raises(LockTimeout):
                async with store.lock("ana", wait_timeout=0.05):
                    pass
        async with store.lock("bob", wait_timeout=0.05):  # a lease of ours: nothing said
            with pytest.raises(LockTimeout):
                async with store.lock("bob", wait_timeout=0.05):
                    pass
    finally:
        await store.close()
    said = [r.getMessage() for r in caplog.records if "no expiry" in r.getMessage()]
    assert len(said) == 1
    assert f"'{key}'" in said[0] and "'ana'" in said[0]
    assert f"DEL {shlex.quote(key)}" in said[0]


async def test_a_lock_a_rasa_process_holds_is_waited_for(
    rasa_shared_redis: tuple[dict[str, Any], Redis],
) -> None:
    """While a Rasa server's ticket is live its turn runs: botserver's turn waits for it (for
    Rasa deleting the key, or the ticket expiring), then takes the lock."""
    config, client = rasa_shared_redis
    key = f"{config['key_prefix']}:lock:ana"
    await client.set(key, rasa_ticket_lock("ana", time.time() - 1, time.time() + 60))
    store = RedisLockStore(config)
    try:
        with pytest.raises(LockTimeout):
            async with store.lock("ana", wait_timeout=0.2):
                pass
        waiting = asyncio.ensure_future(store.lock("ana", wait_timeout=5).__aenter__())
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await client.set(key, rasa_ticket_lock("ana", time.time() + 0.3))  # Rasa's next
        await asyncio.wait_for(waiting, 3)  # taken once that ticket expired
        assert await client.pttl(key) > 0
    finally:
        await store.close()


async def test_the_prune_takes_a_lock_left_by_a_rasa_process_that_died(
    rasa_shared_redis: tuple[dict[str, Any], Redis],
) -> None:
    """`botserver prune` deletes such a conversation too (before, it was skipped for good as
    if a turn held it), and leaves one whose Rasa ticket is live."""
    config, client = rasa_shared_redis
    prefix = config["key_prefix"]
    await client.set(f"{prefix}:lock:ana", rasa_ticket_lock("ana", time.time() - 1))
    await client.set(f"{prefix}:lock:bob", rasa_ticket_lock("bob", time.time() + 60))
    store = RedisLockStore(config)
    try:
        async with store.hold_idle(["ana", "bob", "cyd"]) as held:
            assert held.ids() == ["ana", "cyd"]
    finally:
        await store.close()
    assert await client.exists(f"{prefix}:lock:ana") == 0
    assert await client.exists(f"{prefix}:lock:bob") == 1


async def test_turns_whose_leases_redis_lost_say_so_once_when_they_end(
    redis_config: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis restarted without its data in the middle of two turns: another process took one
    of their conversations meanwhile. Before, nothing said that two turns may have run at
    once; now one warning says so, and the second such turn is counted in it."""
    # (a window of its own: another test of this process may have lost a lease at this Redis)
    monkeypatch.setattr(redis_lock, "_LEASES_LOST", RepeatsCounted(redis_lock.logger, 60))
    store, other = RedisLockStore(redis_config), RedisLockStore(redis_config)
    try:
        async with store.lock("ana"), store.lock("bob"):
            await delete_redis_keys(redis_config["key_prefix"], db=1)  # the restart
            async with other.lock("ana", wait_timeout=0.5):  # taken at once, meanwhile
                pass
        async with store.lock("cyd"):  # a lease nobody lost: nothing said
            pass
    finally:
        await store.close()
        await other.close()
    gone = [r for r in caplog.records if "was gone" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelname == "WARNING", caplog.text
    said = gone[0].getMessage()
    assert said.startswith("The lock of conversation 'bob' was gone when its turn ended: Redis")
    assert "another turn of the conversation may have run at the same time" in said


async def test_a_lease_its_renewal_finds_gone_is_one_error_not_advice_to_raise_the_lifetime(
    redis_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Renewed every third of its lifetime, a lease is not outlived by a long turn: before,
    its loss (here, Redis restarted without its data) advised raising lock_lifetime "if
    turns take longer than 0.3 s"."""
    store = RedisLockStore({**redis_config, "lock_lifetime": 0.3})
    try:
        async with store.lock("ana"):
            await delete_redis_keys(redis_config["key_prefix"], db=1)
            await asyncio.sleep(0.4)
    finally:
        await store.close()
    gone = [r.getMessage() for r in caplog.records if "gone" in r.getMessage()]
    assert len(gone) == 1, gone  # (its release says nothing more)
    assert gone[0].startswith("The lock of conversation 'ana' was gone while its turn was still")
    assert "Redis lost it" in gone[0] and "raise lock_lifetime" not in gone[0]


async def test_a_prune_lease_its_renewal_finds_gone_is_told_as_the_prune_s(
    redis_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """`botserver prune` holds the conversations it deletes: before, the loss of such a
    lease said "while its turn was still running", though no turn held it."""
    store = RedisLockStore({**redis_config, "lock_lifetime": 0.06})
    told = asyncio.Event()

    def tell(record: logging.LogRecord) -> bool:
        if "gone" in record.getMessage():
            told.set()
        return True

    caplog.handler.addFilter(tell)
    try:
        async with store.hold_idle(["ana"]) as held:
            assert held.ids() == ["ana"]
            await delete_redis_keys(redis_config["key_prefix"], db=1)
            await asyncio.wait_for(told.wait(), 5)  # the renewal, a third of a lifetime on
    finally:
        await store.close()
    gone = [r.getMessage() for r in caplog.records if "gone" in r.getMessage()]
    assert len(gone) == 1, gone
    assert gone[0].startswith("The lock of conversation 'ana' was gone while a prune held it"), gone
    assert "turn was still running" not in gone[0]


async def test_a_prune_gives_back_only_its_own_leases_not_a_turn_s_taken_after_it_lost_one(
    redis_config: dict[str, Any],
) -> None:
    """Redis lost a lease the prune held (restarted without its data), and a turn of another
    process took the conversation's lock meanwhile: the prune's give-back at the end of the
    batch leaves that turn's lease (a compare-and-delete per key), so a third message still
    waits for the turn."""
    pruning, other, third = (RedisLockStore(redis_config) for _ in range(3))
    lease = f"{redis_config['key_prefix']}:lock:ana"
    client = Redis(host=REDIS[0], port=REDIS[1], db=1)
    turn = other.lock("ana", wait_timeout=1)
    try:
        async with pruning.hold_idle(["ana", "bob"]) as held:
            assert held.ids() == ["ana", "bob"]
            await client.delete(lease)  # lost
            await turn.__aenter__()  # taken by a turn meanwhile
            turns_token = await client.get(lease)
        assert await client.get(lease) == turns_token  # (before a compare: deleted)
        with pytest.raises(LockTimeout):
            async with third.lock("ana", wait_timeout=0.2):
                pass
        async with third.lock("bob", wait_timeout=1):
            pass  # the prune's own lease, given back
    finally:
        await turn.__aexit__(None, None, None)
        for store in (pruning, other, third):
            await store.close()
        await client.aclose()


async def test_a_redis_url_with_its_port_reaches_that_port(redis_config: dict[str, Any]) -> None:
    """`url: host:port`, as the SQL store and the RabbitMQ broker read it. Before, the lock
    store (and the Redis tracker store) looked up a host named '127.0.0.1:6379' (as Rasa
    does): every turn answered 503, 'Name or service not known'."""
    config = {**redis_config, "url": f"{REDIS[0]}:{REDIS[1]}"}
    del config["port"]
    store = create_lock_store(config)
    try:
        async with store.lock("ana", wait_timeout=1):
            pass
    finally:
        await store.close()
    trackers = create_tracker_store({**config, "type": "redis"})  # the same keys
    try:
        await trackers.ping()  # type: ignore[attr-defined]
    finally:
        await trackers.close()


@pytest.mark.parametrize("key", ["pasword", "key_prefx", "record_exp"])
def test_a_setting_the_redis_lock_store_does_not_read_is_refused_naming_it(key: str) -> None:
    """Rasa refuses them too (its RedisLockStore takes no such argument). Before, they were
    ignored without a word: a misspelt `key_prefix` shared another bot's locks, a misspelt
    `password` said only that Redis refused the credentials."""
    with pytest.raises(InvalidConfig, match=f"section 'lock_store': unknown setting '{key}'"):
        create_lock_store({"type": "redis", "url": REDIS[0], key: "x"})


@pytest.mark.parametrize(
    ("key", "meant"), [("key_prefx", "key_prefix"), ("lock_lifetim", "lock_lifetime")]
)
def test_a_misspelt_lock_store_setting_is_refused_with_the_setting_meant(
    key: str, meant: str
) -> None:
    """The one "did you mean" of every endpoints.yml section (`near_miss`): before, the
    error listed every setting the store reads and left the reader to find the one meant."""
    with pytest.raises(InvalidConfig) as refused:
        create_lock_store({"type": "redis", "url": REDIS[0], key: "x"})
    assert str(refused.value).endswith(
        f"unknown setting '{key}' (Rasa refuses it too); did you mean '{meant}'?"
    )


def test_a_lock_store_setting_near_none_is_refused_with_the_settings_read() -> None:
    with pytest.raises(InvalidConfig, match="'colour' .*; the Redis lock store reads db, "):
        create_lock_store({"type": "redis", "url": REDIS[0], "colour": "x"})


async def test_a_redis_lock_store_db_left_empty_is_database_1(
    redis_config: dict[str, Any],
) -> None:
    """`db:` with no value (YAML's null) is the default database, 1, as if not written
    (Rasa's `int(None)` stops its start with a TypeError naming no key)."""
    store = create_lock_store({**redis_config, "db": None})
    client = Redis(host=REDIS[0], port=REDIS[1], db=1)
    try:
        async with store.lock("ana", wait_timeout=1):
            assert await client.exists(f"{redis_config['key_prefix']}:lock:ana") == 1
    finally:
        await store.close()
        await client.aclose()


@pytest.mark.parametrize("db", [1.5, True, "1.5"])
def test_a_redis_lock_store_db_that_is_no_whole_number_is_refused(db: object) -> None:
    """Rasa reads `db: 1.5` (and `true`) as database 1 without a word: another database
    than the one written, perhaps another bot's locks."""
    with pytest.raises(InvalidConfig, match="'db' must be a whole number of 0 or more"):
        create_lock_store({"type": "redis", "url": REDIS[0], "db": db})


def test_the_endpoint_settings_rasa_reads_for_every_section_are_not_refused() -> None:
    """Rasa's endpoint config takes these from any section and its lock store never sees
    them: an endpoints.yml Rasa started with starts here too."""
    config = {"type": "redis", "url": REDIS[0], "token": "t", "headers": {}, "params": {}}
    assert isinstance(create_lock_store(config), RedisLockStore)


def test_a_custom_lock_store_class_is_refused_and_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa imports `type: my_locks.MyLockStore` (and runs whatever the module does); here
    it is named as unknown at start-up, and the module is not imported."""
    (tmp_path / "audit56_locks.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InvalidConfig, match="'audit56_locks.MyLockStore' is unknown .*custom"):
        create_lock_store({"type": "audit56_locks.MyLockStore", "url": "localhost"})
    assert "audit56_locks" not in sys.modules


async def test_the_prune_keeps_its_locks_while_a_batch_takes_longer_than_their_lifetime(
    redis_config: dict[str, Any],
) -> None:
    """A prune batch held longer than `lock_lifetime` (a slow delete, a short lifetime): its
    leases are renewed as a turn's are, so a message to one of its conversations waits
    until the batch is done. Before, they ran out: the message's turn loaded the
    conversation the prune was deleting, beside it."""
    pruning = RedisLockStore({**redis_config, "lock_lifetime": 0.3})
    other = RedisLockStore(redis_config)
    try:
        async with pruning.hold_idle(["ana", "bob"]) as held:
            assert held.ids() == ["ana", "bob"]
            await asyncio.sleep(1.0)  # three lifetimes
            with pytest.raises(LockTimeout):
                async with other.lock("ana", wait_timeout=0.2):
                    pass
        async with other.lock("ana", wait_timeout=1), other.lock("bob", wait_timeout=1):
            pass  # given back
    finally:
        await pruning.close()
        await other.close()


async def test_a_lease_given_back_while_its_renewal_is_due_stops_no_other_renewal(
    redis_config: dict[str, Any],
) -> None:
    """Two leases due for renewal at once (a prune batch's are taken together), one given
    back after the renewer found it due and before its renewal started (its turn or batch
    ended in between): the other is still renewed. Before, the renewal of the one given back
    failed with a KeyError, which ended the renewer: the other lease ran out while held."""
    pruning = RedisLockStore({**redis_config, "lock_lifetime": 0.3})
    other = RedisLockStore(redis_config)
    renew = pruning._renew
    given_back: list[str] = []

    async def renew_as_another_is_given_back(*, keys: Any, args: Any) -> Any:
        if not given_back:  # the first renewal: the other lease is given back meanwhile
            token = next(t for t in pruning._held if t != args[0])
            given_back.append(pruning._held.pop(token)[1])
        return await renew(keys=keys, args=args)

    pruning._renew = renew_as_another_is_given_back  # type: ignore[assignment]
    try:
        async with pruning.hold_idle(["ana", "bob"]) as held:
            assert held.ids() == ["ana", "bob"]
            await asyncio.sleep(1.0)  # three lifetimes
            assert len(given_back) == 1
            kept = "bob" if given_back == ["ana"] else "ana"
            with pytest.raises(LockTimeout):
                async with other.lock(kept, wait_timeout=0.2):
                    pass
    finally:
        await pruning.close()
        await other.close()


@pytest.mark.parametrize(
    "conversation_id", ["o'brien'; redis-cli FLUSHALL; echo '", "two\nlines", "$(reboot) `id`"]
)
async def test_the_command_given_for_a_key_without_expiry_deletes_that_key_alone(
    rasa_shared_redis: tuple[dict[str, Any], Redis],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    conversation_id: str,
) -> None:
    """The key holds a client's sender id: before, quoted as '...' as it was, a quote in it
    ended the quoting, and the rest ran as commands of the operator's shell (FLUSHALL); a
    newline, escaped in the log, made the command name another key. Now a shell's quoting,
    and no command for a name no command line carries."""
    config, client = rasa_shared_redis
    monkeypatch.setattr(redis_lock, "_KEPT_FOR_GOOD", RepeatsCounted(redis_lock.logger, 60))
    key = f"{config['key_prefix']}:lock:{conversation_id}"
    await client.set(key, "another program's")
    store = RedisLockStore(config)
    caplog.set_level(logging.WARNING, logger=redis_lock.logger.name)
    try:
        with pytest.raises(LockTimeout):
            async with store.lock(conversation_id, wait_timeout=0.05):
                pass
    finally:
        await store.close()
    said = [r.getMessage() for r in caplog.records if "no expiry" in r.getMessage()]
    assert len(said) == 1
    command = said[0].partition("delete it")[2]
    if "\n" in conversation_id:
        assert "redis-cli" not in command and "DEL" not in command
        return
    assert shlex.split(command.removeprefix(": ")) == ["redis-cli", "-n", "<db>", "DEL", key]
