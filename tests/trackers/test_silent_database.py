"""A database host that takes connections but never answers (a hung server, a firewall
dropping packets, a dead host behind a load balancer) is an outage: 503, never a 500 or a
request that hangs, and the conversation goes on once the database answers again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench.tcp_proxy import SilentProxy
from server.errors import InvalidConfig, StoreUnavailable
from server.trackers import postgres_database as postgres_module
from server.trackers import sql_engine
from server.trackers.factory import create_tracker_store
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    MARIADB,
    POSTGRES,
    mariadb_database,
    postgres_database,
)

DATABASES = {"postgresql": (POSTGRES, postgres_database), "mysql": (MARIADB, mariadb_database)}


@contextlib.asynccontextmanager
async def behind_proxy(dialect: str) -> AsyncIterator[tuple[dict[str, Any], SilentProxy]]:
    address, database = DATABASES[dialect]
    async with database() as config:
        proxy = SilentProxy(address)
        await proxy.restore()
        try:
            yield {**config, "url": "127.0.0.1", "port": proxy.port}, proxy
        finally:
            proxy.silent = False
            await proxy.cut()


@contextlib.asynccontextmanager
async def store_behind_proxy(
    dialect: str,
) -> AsyncIterator[tuple[Any, dict[str, Any], SilentProxy]]:
    """A tracker store on a fresh database behind a SilentProxy, with its config and proxy."""
    async with behind_proxy(dialect) as (config, proxy):
        store = create_tracker_store(config)
        try:
            yield store, config, proxy
        finally:
            await store.close()


def user(text: str) -> dict[str, Any]:
    return {"event": "user", "timestamp": time.time(), "text": text, "parse_data": {}}


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_a_database_that_never_answers_is_unavailable(
    dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: PostgreSQL's connect timeout surfaced as an IndexError, a 500 (and the
    readiness probe failed with a traceback); MySQL waited for the server's greeting for
    ever."""
    # The 5 s connect timeout, shortened: what is tested is that it ends the wait.
    monkeypatch.setattr(postgres_module, "CONNECT_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(sql_engine, "CONNECT_TIMEOUT_SECONDS", 1.0)
    async with behind_proxy(dialect) as (config, proxy):
        proxy.silent = True
        store = create_tracker_store(config)
        try:
            for attempt in (store.ping, lambda: store.load("someone")):
                with pytest.raises(
                    StoreUnavailable,
                    match="is unavailable: (TimeoutError|no answer to a new connection in 1 s)",
                ):
                    await asyncio.wait_for(attempt(), 20)
        finally:
            await store.close()


@pytest.mark.timing
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_a_database_that_stops_answering_mid_conversation(
    dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the turn (and every later turn of the conversation, waiting for its lock)
    hung until the kernel gave the connection up, about 15 minutes."""
    # 1 s at the host's pace (under 5): the statements before the silence must get their
    # answers in it (at load 7 MariaDB's first read took over 1 s, a 503 before the test began).
    seconds = paced(1, below=5)
    monkeypatch.setenv("SQL_STATEMENT_TIMEOUT", str(seconds))
    monkeypatch.setattr(postgres_module, "CONNECT_TIMEOUT_SECONDS", seconds)
    monkeypatch.setattr(sql_engine, "CONNECT_TIMEOUT_SECONDS", seconds)
    async with behind_proxy(dialect) as (config, proxy):
        store = create_tracker_store(config)
        try:
            await store.append("Bob", [user("before")])
            assert await store.load("Bob") is not None
            proxy.silent = True
            for attempt in (
                lambda: store.append("Bob", [user("during")]),
                lambda: store.load("Bob"),
            ):
                with pytest.raises(StoreUnavailable):
                    await asyncio.wait_for(attempt(), 20)
            proxy.silent = False
            await proxy.cut()  # the connections left hanging are gone; new ones get through
            await proxy.restore()
            await store.append("Bob", [user("after")])
            texts = [event["text"] for event in await store.load_all("Bob") or []]
            assert texts[0] == "before" and texts[-1] == "after"
        finally:
            await store.close()


# PostgreSQL with the default settings (2 s, then 3 s: what is checked is their value);
# MySQL with both shortened (what is checked is the dialect's path, not the defaults again:
# 8 s waited become 2.5).
SILENCE_SETTINGS = [("postgresql", None), ("mysql", ("0.5", "1"))]


@pytest.mark.parametrize(("dialect", "settings"), SILENCE_SETTINGS, ids=["postgresql", "mysql"])
async def test_a_database_that_falls_silent_is_unavailable_within_seconds(
    dialect: str, settings: tuple[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the turn waited the whole `SQL_STATEMENT_TIMEOUT` (30 s), and its 503 said
    only `TimeoutError (no answer)`."""
    after, timeout = settings or ("2", "3")
    if settings is not None:
        monkeypatch.setenv("SQL_SILENCE_CHECK_AFTER", after)
        monkeypatch.setenv("SQL_SILENCE_CHECK_TIMEOUT", timeout)
    async with store_behind_proxy(dialect) as (store, config, proxy):
        await store.append("Bob", [user("before")])
        proxy.silent = True
        # `after` s without an answer, then `timeout` s for a new connection's (5 s by default).
        with pytest.raises(StoreUnavailable) as refused:
            await asyncio.wait_for(store.append("Bob", [user("during")]), 12)
        assert str(refused.value).endswith(
            f":{proxy.port}/{config['db']}) is unavailable: it stopped answering (no "
            f"answer to a statement in {after} s, nor to a new connection in {timeout} s)"
        )
        # Known silent: the next turn is checked as it starts, and gives up after `timeout`
        # (not `after` + `timeout`, nor its new connection's own 5 s).
        with pytest.raises(StoreUnavailable) as refused:
            await asyncio.wait_for(store.load("Bob"), 12)
        assert refused.value.reason == (
            f"it stopped answering (no answer to a new connection in {timeout} s)"
        ), refused.value.reason


@contextlib.asynccontextmanager
async def table_locked(dialect: str, config: dict[str, Any]) -> AsyncIterator[None]:
    """Another session holds the events table's lock for the block: a turn's statements
    wait for it (up to `SQL_LOCK_TIMEOUT`, 10 s), on a database that answers."""
    if dialect == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=config["db"]
        )
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                yield
        finally:
            await conn.close()
        return
    import aiomysql

    mysql = await aiomysql.connect(
        host=MARIADB[0], port=MARIADB[1], user="root", password="", db=config["db"]
    )
    try:
        async with mysql.cursor() as cursor:
            await cursor.execute("LOCK TABLES events WRITE")
            yield
            await cursor.execute("UNLOCK TABLES")
    finally:
        mysql.close()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_a_slow_statement_on_a_database_that_answers_is_not_cut_short(
    dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check of a slow statement (a new connection) is answered: the statement keeps
    waiting, here three times as long as a silent database would be given."""
    monkeypatch.setenv("SQL_SILENCE_CHECK_AFTER", "0.3")
    monkeypatch.setenv("SQL_SILENCE_CHECK_TIMEOUT", "0.4")
    async with store_behind_proxy(dialect) as (store, config, _proxy):
        await store.append("Bob", [user("before")])
        async with table_locked(dialect, config):
            append = asyncio.create_task(store.append("Bob", [user("slow")]))
            await asyncio.sleep(2.1)  # the lock held: the statement waits this long
            assert not append.done()
        await asyncio.wait_for(append, 10)
        texts = [event["text"] for event in await store.load_all("Bob") or []]
        assert texts == ["before", "slow"]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_a_statement_past_the_statement_timeout_says_so(
    dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a database that answers. Before, its 503 said `TimeoutError (no answer)`, as if
    the database were silent."""
    monkeypatch.setenv("SQL_STATEMENT_TIMEOUT", "1")
    async with store_behind_proxy(dialect) as (store, config, _proxy):
        await store.append("Bob", [user("before")])
        async with table_locked(dialect, config):
            with pytest.raises(StoreUnavailable) as refused:
                await asyncio.wait_for(store.append("Bob", [user("slow")]), 10)
        assert refused.value.reason == "a statement took more than 1 s (SQL_STATEMENT_TIMEOUT)"


@pytest.mark.parametrize("value", ["soon", "0"])
@pytest.mark.parametrize("variable", ["SQL_SILENCE_CHECK_TIMEOUT", "SQL_GROUP_WAIT"])
def test_a_wrong_silence_setting_is_a_clear_error(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Said when the store is made (at start), naming the variable (SQL_GROUP_WAIT: see
    test_postgres_stuck_group.py)."""
    monkeypatch.setenv(variable, value)
    config = {"type": "sql", "dialect": "postgresql", "url": "127.0.0.1", "db": "unused"}
    with pytest.raises(InvalidConfig, match=f"'tracker_store': {variable} must be "):
        create_tracker_store(config)
