"""The Redis lock serves one conversation's messages in arrival order across processes, and a
waiter that dies or gives up does not hold the line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.errors import LockTimeout
from server.trackers.factory import create_tracker_store
from server.trackers.redis_lock import TICKET_LIFETIME, RedisLockStore
from server.trackers.store import TrackerStore
from tests.stop_races import StopRace, wait_for_swallows_a_cancel
from tests.trackers.lock_worker import CONVERSATION, user_event
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 200


class Worker:
    """A second process with its own lock and tracker stores (tests/trackers/lock_worker.py)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, lock_config: dict[str, Any], tracker_config: dict[str, Any]) -> Worker:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.trackers.lock_worker",
            json.dumps(lock_config),
            json.dumps(tracker_config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        return cls(process)

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def expect(self, line: str) -> None:
        assert self.process.stdout is not None
        got = await asyncio.wait_for(self.process.stdout.readline(), 30)
        assert got.decode().strip() == line

    async def finish(self) -> None:
        await self.send("exit")
        await asyncio.wait_for(self.process.wait(), 60)
        assert self.process.returncode == 0

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def turn(
    locks: RedisLockStore,
    trackers: TrackerStore,
    number: int,
    on_wait: Callable[[], None],
    wait_timeout: float = 60,
) -> None:
    """One message handled by this process: the lock, then its user event in the tracker."""
    async with locks.lock(CONVERSATION, wait_timeout=wait_timeout, on_wait=on_wait):
        await trackers.append(CONVERSATION, [user_event(number)])


@pytest.fixture
async def configs() -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The lock store and tracker store sections both processes use (own key prefix)."""
    require_service("Redis", REDIS)
    prefix = unique_name("lockfifo")
    redis = {"url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    yield {"type": "redis", "db": 1, **redis}, {"type": "redis", "db": 0, **redis}
    await delete_redis_keys(prefix, db=1)
    await delete_redis_keys(prefix, db=0)


@dataclass
class Processes:
    """An earlier turn's lock store, this process's lock and tracker stores, another process."""

    earlier_turn: RedisLockStore
    here: RedisLockStore
    trackers: TrackerStore
    worker: Worker


@pytest.fixture
async def processes(configs: tuple[dict[str, Any], dict[str, Any]]) -> AsyncIterator[Processes]:
    lock_config, tracker_config = configs
    started = Processes(
        RedisLockStore(lock_config),
        RedisLockStore(lock_config),
        create_tracker_store(tracker_config),
        await Worker.start(lock_config, tracker_config),
    )
    try:
        yield started
    finally:
        started.worker.kill()
        for store in (started.earlier_turn, started.here, started.trackers):
            await store.close()


async def test_rapid_messages_alternating_two_processes_are_stored_in_arrival_order(
    processes: Processes,
) -> None:
    """Before, a process whose turn ended took the lock again for its own next waiter while
    the other process was polling: the tracker held later messages before earlier ones."""
    worker, here, trackers = processes.worker, processes.here, processes.trackers
    turns = []
    async with processes.earlier_turn.lock(CONVERSATION):
        # Each message arrives once the one before it waits for the lock, every other one
        # at the other process.
        for number in range(MESSAGES):
            if number % 2:
                await worker.send(str(number))
                await worker.expect(f"waiting {number}")
            else:
                waiting = asyncio.Event()
                turns.append(asyncio.ensure_future(turn(here, trackers, number, waiting.set)))
                await asyncio.wait_for(waiting.wait(), 30)
    await asyncio.gather(*turns)
    await worker.finish()

    events = await trackers.load(CONVERSATION)
    assert events is not None
    assert [event["text"] for event in events] == [f"message {n}" for n in range(MESSAGES)]


async def test_a_waiter_whose_process_died_holds_the_line_only_until_its_ticket_expires(
    processes: Processes,
) -> None:
    async with processes.earlier_turn.lock(CONVERSATION):
        await processes.worker.send("0")
        await processes.worker.expect("waiting 0")
        processes.worker.kill()  # first in line, and gone
        await processes.worker.process.wait()
        waiting = asyncio.Event()
        next_turn = asyncio.ensure_future(
            turn(
                processes.here,
                processes.trackers,
                1,
                waiting.set,
                wait_timeout=TICKET_LIFETIME + 5,
            )
        )
        await asyncio.wait_for(waiting.wait(), 10)
    await next_turn  # a LockTimeout here: the dead waiter's ticket never expired
    events = await processes.trackers.load(CONVERSATION)
    assert [event["text"] for event in events or []] == ["message 1"]


@pytest.mark.timing
async def test_a_waiter_that_timed_out_leaves_the_line_at_once(
    configs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    lock_config, _ = configs
    stores = [RedisLockStore(lock_config) for _ in range(3)]
    holder, impatient, patient = stores
    loop = asyncio.get_running_loop()
    try:
        async with holder.lock(CONVERSATION):
            with pytest.raises(LockTimeout):
                async with impatient.lock(CONVERSATION, wait_timeout=0.1):
                    pass
            waiting = asyncio.Event()

            async def next_turn() -> float:
                async with patient.lock(CONVERSATION, wait_timeout=30, on_wait=waiting.set):
                    return loop.time()

            took = asyncio.ensure_future(next_turn())
            await asyncio.wait_for(waiting.wait(), 10)
            released = loop.time()
        # Not after the impatient waiter's ticket would have expired.
        assert await took - released < TICKET_LIFETIME / 2
    finally:
        for store in stores:
            await store.close()


@wait_for_swallows_a_cancel
async def test_closing_as_the_wake_up_listener_writes_to_redis_still_returns(
    configs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """The first wait of a process starts a listener for wake-ups from other processes, which
    close() cancels. redis-py writes each command under asyncio.wait_for, which in Python 3.11
    swallows a cancel that lands as the write ends: the listener went on to wait for a message
    for ever, and close() (the server's shutdown) with it. Here close() lands just so: as the
    first write the listener starts has ended, before wait_for has heard of it."""
    lock_config, _ = configs
    holder, store = RedisLockStore(lock_config), RedisLockStore(lock_config)
    race = StopRace(lambda task: getattr(task.get_coro(), "__name__", "") == "_listen", store.close)
    try:
        async with holder.lock(CONVERSATION):
            with race:
                with pytest.raises(LockTimeout):  # starts the listener, gives up at once
                    async with store.lock(CONVERSATION, wait_timeout=0):
                        pass
                await race.started("the listener wrote nothing to Redis")
            assert await race.ended(), "close() waits for ever"
    finally:
        if not await race.abandon():
            await store.close()
        await holder.close()


async def test_a_release_hands_the_lock_to_a_waiter_of_another_process_at_once(
    configs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """Waiters behind others poll only every half second (to keep their tickets): a release
    wakes the next one, in whichever process, so ten hand-overs between two processes take
    milliseconds each, not a poll interval (about 2.5 s for ten)."""
    lock_config, _ = configs
    stores = [RedisLockStore(lock_config) for _ in range(2)]
    loop = asyncio.get_running_loop()
    finished: list[float] = []

    async def waiter(store: RedisLockStore, waiting: asyncio.Event) -> None:
        async with store.lock(CONVERSATION, wait_timeout=30, on_wait=waiting.set):
            pass
        finished.append(loop.time())

    try:
        async with stores[0].lock(CONVERSATION):
            waiters = []
            for number in range(10):
                waiting = asyncio.Event()
                waiters.append(asyncio.ensure_future(waiter(stores[1 - number % 2], waiting)))
                await asyncio.wait_for(waiting.wait(), 10)
            await asyncio.sleep(1.5)  # every waiter now polls at its slowest
            released = loop.time()
        await asyncio.gather(*waiters)
        assert max(finished) - released < 1.0
    finally:
        for store in stores:
            await store.close()


async def test_a_conversation_id_beyond_ascii_locks_its_own_utf8_key(
    configs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """The lock's keys are sent as bytes (the turn's CPU): a conversation named in UTF-8
    holds `<prefix>:lock:<name>` as Rasa and any other client name it, and gives it back."""
    from redis.asyncio import Redis

    lock_config, _ = configs
    locks = RedisLockStore(lock_config)
    raw = Redis(host=REDIS[0], port=REDIS[1], db=1, decode_responses=True)
    name = "Zoë 🙂 会話"
    key = f"{lock_config['key_prefix']}:lock:{name}"
    try:
        async with locks.lock(name):
            assert await raw.exists(key) == 1
            with pytest.raises(LockTimeout):
                async with locks.lock(name, wait_timeout=0.05):
                    pass
        await locks.wait_for_releases()
        assert await raw.exists(key) == 0
        async with locks.lock(name, wait_timeout=5):  # the line is empty again
            pass
    finally:
        await raw.aclose()
        await locks.close()
