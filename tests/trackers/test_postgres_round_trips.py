"""PostgreSQL store: a statement costs one round trip; nothing else runs when its connection
goes back to the pool (asyncpg's default reset was a second round trip per statement)."""

from __future__ import annotations

import asyncio

import asyncpg

from server.trackers.factory import create_tracker_store
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database

EVENT = {"event": "action", "timestamp": 1.0, "name": "action_listen"}


async def last_statements(database: str) -> list[str]:
    """The last statement each of the database's backends ran (pg_stat_activity.query)."""
    admin = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="test"
    )
    try:
        rows = await admin.fetch(
            "SELECT query FROM pg_stat_activity WHERE datname = $1 AND state = 'idle'", database
        )
        return [row[0] for row in rows]
    finally:
        await admin.close()


async def test_the_last_statement_on_a_pooled_connection_is_the_stores_own() -> None:
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            await store.append("alice", [EVENT])
            statements = await last_statements(config["db"])
            assert len(statements) == 1, statements
            assert statements[0].startswith("WITH previous AS"), statements
            assert await store.load("alice") == [EVENT]
            assert (await last_statements(config["db"]))[0].startswith("SELECT id, data")
        finally:
            await store.close()


async def test_small_groups_do_not_make_postgresql_plan_every_statement_anew() -> None:
    """A connection whose first group statements carried two conversations each would
    otherwise get a new plan for every statement after (PostgreSQL's custom plans), about
    twice the CPU of the appends themselves."""
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            for number in range(12):
                pair = [f"user{number}a", f"user{number}b"]
                await asyncio.gather(*(store.append(sender, [EVENT]) for sender in pair))
                await asyncio.gather(*(store.load(sender) for sender in pair))
            pool = await store._db._get_pool()  # type: ignore[attr-defined]
            async with pool.acquire() as conn:
                plans = await conn.fetch(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE 'WITH previous%' OR statement LIKE 'SELECT q.k%'"
                )
        finally:
            await store.close()
    assert len(plans) == 2, plans  # the group append and the group read
    for plan in plans:
        assert plan["custom_plans"] == 0, plan
        assert plan["generic_plans"] == 12, plan
