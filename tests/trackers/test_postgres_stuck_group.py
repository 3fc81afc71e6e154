"""PostgreSQL store: a group of reads or appends that gets no answer (its connection dropped
by the network, a statement waiting on a lock) holds only its own conversations; the next
groups go out on other connections after SQL_GROUP_WAIT, each conversation's statements
still in order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from server.errors import StoreUnavailable
from server.trackers.factory import create_tracker_store
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import postgres_database, postgres_events_locked
from tests.trackers.test_silent_database import behind_proxy

# The forgotten connection is closed by the kernel after 5 s (DB_TCP_TIMEOUT's default);
# before, every other conversation's turn waited as long.
DEAD_AFTER = 5.0
PROMPT = 2.0  # SQL_GROUP_WAIT (0.5 s) and a new connection, on a loaded machine


def user(text: str, timestamp: float) -> dict[str, Any]:
    return {"event": "user", "timestamp": timestamp, "text": text, "parse_data": {}}


async def settled_after(operation: Any, started: float) -> tuple[Any, float]:
    """`operation`'s result (or exception) and the seconds from `started` to its end."""
    try:
        result = await asyncio.wait_for(operation, 4 * DEAD_AFTER)
    except (StoreUnavailable, TimeoutError) as exc:
        result = exc
    return result, time.monotonic() - started


@pytest.fixture(autouse=True)
def dead_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_TCP_TIMEOUT", str(DEAD_AFTER))
    monkeypatch.delenv("SQL_GROUP_WAIT", raising=False)


@pytest.mark.timing
async def test_a_read_without_an_answer_holds_only_its_own_conversation() -> None:
    async with behind_proxy("postgresql") as (config, proxy):
        store = create_tracker_store(config)
        try:
            for sender in ("stuck", "free"):  # one pooled connection, used in turn
                await store.append(sender, [user(f"hi {sender}", 1.0)])
            proxy.forget_open_connections()  # the next statement goes out on it, unanswered
            started = time.monotonic()
            stuck = asyncio.ensure_future(settled_after(store.load("stuck"), started))
            await asyncio.sleep(0.1)  # its group is out
            loaded, took = await settled_after(store.load("free"), time.monotonic())
            assert [e["text"] for e in loaded or []] == ["hi free"]
            assert took < paced(PROMPT, below=DEAD_AFTER)  # before: about DB_TCP_TIMEOUT (5 s)
            assert not stuck.done()
            loaded, took = await stuck  # read again on a new connection once it is closed
            assert [e["text"] for e in loaded or []] == ["hi stuck"]
            assert took >= DEAD_AFTER - 0.5
        finally:
            await proxy.cut()
            await store.close()


async def test_an_append_waits_for_its_conversations_earlier_one_without_answer() -> None:
    async with behind_proxy("postgresql") as (config, proxy):
        store = create_tracker_store(config)
        try:
            for sender in ("stuck", "free"):
                await store.append(sender, [user(f"hi {sender}", 1.0)])
            proxy.forget_open_connections()
            started = time.monotonic()
            first = asyncio.ensure_future(
                settled_after(store.append("stuck", [user("first", 2.0)]), started)
            )
            await asyncio.sleep(0.1)
            second = asyncio.ensure_future(
                settled_after(store.append("stuck", [user("second", 3.0)]), started)
            )
            other, took = await settled_after(
                store.append("free", [user("other", 2.0)]), time.monotonic()
            )
            assert (
                not isinstance(other, BaseException) and took < PROMPT
            )  # before: about DB_TCP_TIMEOUT
            assert not first.done() and not second.done()
            (failed, first_took), (written, second_took) = await asyncio.gather(first, second)
            # The first append's statement went out: it may or may not be stored (503).
            assert isinstance(failed, StoreUnavailable) and first_took >= DEAD_AFTER - 0.5
            assert not isinstance(written, BaseException) and second_took >= first_took
            reader = create_tracker_store(config)  # nothing cached
            try:
                free = await reader.load("free")
                assert [e["text"] for e in free or []] == ["hi free", "other"]
                texts = [e["text"] for e in await reader.load("stuck") or []]
                assert texts[-1] == "second"
            finally:
                await reader.close()
        finally:
            await proxy.cut()
            await store.close()


@pytest.mark.timing
async def test_appends_waiting_on_a_table_lock_leave_connections_for_the_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every append group waits on the lock: a new one goes out each SQL_GROUP_WAIT, but no
    more than a quarter of the pool's connections (at least 2) for each kind."""
    monkeypatch.setenv("SQL_POOL_SIZE", "2")
    monkeypatch.setenv("SQL_MAX_OVERFLOW", "2")  # 4 connections
    async with postgres_database() as config:
        store = create_tracker_store(config)
        try:
            await store.append("reader", [user("hi", 1.0)])
            # Reads pass, writes wait.
            async with postgres_events_locked(config["db"], "SHARE") as release:
                appends = []
                for n in range(8):
                    append = store.append(f"w{n}", [user("w", 2.0)])
                    appends.append(asyncio.ensure_future(append))
                    await asyncio.sleep(0.3)
                loaded, took = await settled_after(store.load("reader"), time.monotonic())
                await release()
            assert [e["text"] for e in loaded or []] == ["hi"]
            # Without the bound: no connection left until the lock goes.
            assert took < paced(PROMPT, below=DEAD_AFTER)
            await asyncio.gather(*appends)
            assert sorted(await store.keys()) == ["reader"] + [f"w{n}" for n in range(8)]
        finally:
            await store.close()
