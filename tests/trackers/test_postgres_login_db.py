"""PostgreSQL store with Rasa's `login_db`: the tracker database is created on first use,
also when several workers (processes) start on it at once."""

from __future__ import annotations

import asyncio

import asyncpg

from server.trackers.factory import create_tracker_store
from tests.trackers.persistence_fixtures import (
    POSTGRES,
    postgres_config,
    require_service,
    unique_name,
)

EVENT = {"event": "action", "timestamp": 1.0, "name": "action_listen"}


async def test_workers_starting_together_both_create_and_use_the_database() -> None:
    require_service("PostgreSQL", POSTGRES)
    name = unique_name("bs_login")
    config = {**postgres_config(name), "login_db": "test"}
    # Two stores stand for two workers' first turns: both find no database, both create it.
    stores = [create_tracker_store(config) for _ in range(2)]
    try:
        await asyncio.gather(*(store.append(f"user{n}", [EVENT]) for n, store in enumerate(stores)))
        assert [await store.load(f"user{n}") for n, store in enumerate(stores)] == [
            [EVENT],
            [EVENT],
        ]
    finally:
        for store in stores:
            await store.close()
        admin = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="test"
        )
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
