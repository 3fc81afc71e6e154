"""PostgreSQL store: an append's rows cost the driver no Python call per value (they travel
as one array of a row type each connection makes), and a role that may not make one still
appends, as columns."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
from typing import Any

import asyncpg
import pytest

from server.trackers.factory import create_tracker_store
from server.trackers.store import TrackerStore
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database, unique_name


def events(count: int, start: float) -> list[dict[str, Any]]:
    return [
        {"event": "bot", "timestamp": start + n, "text": f"line {n}", "data": {}}
        for n in range(count)
    ]


async def python_calls(store: TrackerStore, sender_id: str, count: int, start: float) -> int:
    profile = cProfile.Profile()
    profile.enable()
    await store.append(sender_id, events(count, start))
    profile.disable()
    return sum(stats[1] for stats in pstats.Stats(profile).stats.values())  # type: ignore[attr-defined]


async def test_an_appended_event_costs_a_few_python_calls_not_one_per_column() -> None:
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            await store.append("alice", events(2, 1.0))  # the table, the pool, the statement
            small = await python_calls(store, "alice", 1, 10.0)
            large = await python_calls(store, "alice", 101, 20.0)
            assert len(await store.load("alice") or []) == 104
        finally:
            await store.close()
    # 14 an event: its row and ids about 6, the row's tuple 8 of asyncpg's ABC checks (each
    # a Python frame and its C call). Its six values sent as six arrays cost 18 of those
    # (one or two a value): 24 an event.
    assert (large - small) / 100 < 18, (small, large)


async def postgres_admin(database: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=database
    )


async def test_a_role_that_may_not_create_temporary_objects_still_appends_and_loads() -> None:
    role = unique_name("bs_notemp")
    admin = await postgres_admin("test")
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        async with postgres_database() as config:
            own = await postgres_admin(config["db"])
            try:
                await own.execute(f'REVOKE TEMPORARY ON DATABASE "{config["db"]}" FROM PUBLIC')
                await own.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"')
            finally:
                await own.close()
            store = create_tracker_store({**config, "username": role})
            try:
                await store.append("bob", events(3, 1.0))
                await store.append("bob", events(2, 5.0))
                loaded = await store.load("bob")
                assert [event["timestamp"] for event in loaded or []] == [1, 2, 3, 5, 6]
                await store.replace("bob", events(1, 9.0))
                assert [event["timestamp"] for event in await store.load("bob") or []] == [9]
            finally:
                await store.close()
    finally:
        try:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')  # after its database
        finally:
            await admin.close()


async def discard_temporary_objects(store: TrackerStore) -> None:
    """What a pooler in transaction mode (another server backend for the next statement) or
    an operator's `DISCARD TEMP` does to every pooled session: its row type is gone."""
    pool = await store._db._get_pool()  # type: ignore[attr-defined]
    held = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        for conn in held:
            await conn.execute("DISCARD TEMP")
    finally:
        for conn in held:
            await pool.release(conn)


@pytest.mark.parametrize("first", ["append", "replace", "group"])
async def test_appends_and_replaces_go_on_when_the_sessions_lose_the_row_type(first: str) -> None:
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            # Each statement once with the type: prepared while it existed, it then fails
            # with "cache lookup failed for type". `first` meets the loss (and is sent
            # again as column arrays); the others then go as arrays from the start.
            await store.append("alice", events(2, 1.0))
            await store.replace("bob", events(1, 1.0))
            await asyncio.gather(*(store.append(f"c{n}", events(1, 5.0)) for n in range(6)))
            await discard_temporary_objects(store)

            async def append() -> None:
                await store.append("alice", events(1, 10.0))

            async def replace() -> None:  # a transaction: its DELETE is undone, then redone
                await store.replace("bob", events(3, 20.0))

            async def group() -> None:
                await asyncio.gather(*(store.append(f"c{n}", events(1, 30.0)) for n in range(6)))

            steps = {"append": append, "replace": replace, "group": group}
            await steps.pop(first)()
            for step in steps.values():
                await step()
            assert [e["timestamp"] for e in await store.load("alice") or []] == [1.0, 2.0, 10.0]
            assert [e["timestamp"] for e in await store.load("bob") or []] == [20.0, 21.0, 22.0]
            for n in range(6):
                assert [e["timestamp"] for e in await store.load(f"c{n}") or []] == [5.0, 30.0]
        finally:
            await store.close()


async def test_an_append_prepared_after_the_row_type_was_lost_goes_on() -> None:
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            await store.ping()  # the pool's first session, with its row type
            await discard_temporary_objects(store)
            await store.append("alice", events(2, 1.0))  # "type ... does not exist"
            assert len(await store.load("alice") or []) == 2
        finally:
            await store.close()
