"""Two processes' worth of stores (each its own session cache and Redis lock client) taking
turns on one PostgreSQL conversation: every turn sees every earlier event, none is lost or
reordered, whichever process served the turn before."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from server.trackers.factory import create_lock_store, create_tracker_store
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    postgres_database,
    require_service,
    unique_name,
)

TURNS = 60
EVENTS_PER_TURN = 3


def event(turn: int, index: int) -> dict[str, Any]:
    return {"event": "action", "timestamp": turn + index / 10, "name": f"t{turn}_{index}"}


async def test_turns_alternating_between_two_processes_see_all_earlier_events() -> None:
    require_service("Redis", REDIS)
    prefix = unique_name("bsturns")
    async with postgres_database() as config:
        processes = [
            (
                create_tracker_store(config),
                create_lock_store(
                    {
                        "type": "redis",
                        "url": REDIS[0],
                        "port": REDIS[1],
                        "db": 1,
                        "key_prefix": prefix,
                    }
                ),
            )
            for _ in range(2)
        ]
        turns_seen: list[int] = []
        rng = random.Random(7)
        # Each process serves a random share of the turns, several in a row at times, so a
        # process's cache is sometimes current and sometimes several turns behind.
        chosen = [rng.randrange(2) for _ in range(TURNS)]

        async def turn(number: int) -> None:
            store, locks = processes[chosen[number]]
            async with locks.lock("conv", wait_timeout=30):
                events = list(await store.load("conv") or [])
                done = len(events) // EVENTS_PER_TURN
                assert events == [
                    event(t, i) for t in range(done) for i in range(EVENTS_PER_TURN)
                ], f"turn {number} saw a stale history"
                turns_seen.append(done)
                await asyncio.sleep(rng.random() / 500)
                await store.append("conv", [event(done, i) for i in range(EVENTS_PER_TURN)])

        try:
            await asyncio.gather(*(turn(n) for n in range(TURNS)))
            expected = [event(t, i) for t in range(TURNS) for i in range(EVENTS_PER_TURN)]
            for store, _ in processes:
                assert await store.load("conv") == expected
            assert turns_seen == list(range(TURNS))
        finally:
            for store, locks in processes:
                await store.close()
                await locks.close()
            await delete_redis_keys(prefix, db=1)
