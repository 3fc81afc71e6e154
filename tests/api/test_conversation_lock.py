"""One conversation's messages, one at a time, through the real HTTP server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.tcp_proxy import SilentProxy, TcpProxy
from server.api.server import ServerOptions, build_app
from server.dialogue.processor import CLIENT_GONE_KEY
from server.trackers.factory import create_lock_store
from tests.serving import serving
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)

WEBHOOK = "/webhooks/rest/webhook"


def in_memory_app(model: Path, models_dir: Path, lock_store: dict[str, Any] | None = None) -> Any:
    """The server on `model` with an in-memory tracker store, and lock store unless
    `lock_store` is given."""
    endpoints: dict[str, Any] = {"tracker_store": {"type": "in_memory"}}
    if lock_store is not None:
        endpoints["lock_store"] = lock_store
    return build_app(
        ServerOptions(model_path=model, enable_api=True, endpoints=endpoints, models_dir=models_dir)
    )


async def clients_give_up(app: Any, client: httpx.AsyncClient, senders: list[str]) -> None:
    """A message to each of `senders`, whose earlier turns still run; each client gives up
    waiting for its answer."""
    wait = httpx.Timeout(5.0, read=0.3)
    held = [app.state.lock_store.lock(sender) for sender in senders]
    for lock in held:  # earlier turns, still running
        await lock.__aenter__()
    try:
        for answer in await asyncio.gather(
            *(
                client.post(WEBHOOK, json={"sender": sender, "message": "hi"}, timeout=wait)
                for sender in senders
            ),
            return_exceptions=True,
        ):
            assert isinstance(answer, httpx.ReadTimeout), answer
        await asyncio.sleep(0.05)  # the server sees the connections close
    finally:
        for lock in held:
            await lock.__aexit__(None, None, None)


@pytest.mark.parametrize("stream", ["", "?stream=true"])
async def test_a_message_whose_client_left_while_it_waited_is_not_handled(
    moodbot_model: Path, tmp_path: Path, stream: str
) -> None:
    """Before, it was handled when its turn came, after the client had given up (and had
    perhaps sent it again): a turn nobody saw, and the conversation's next message waited
    for it."""
    app = in_memory_app(moodbot_model, tmp_path)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        async with app.state.lock_store.lock("u1"):  # an earlier turn of u1, still running
            with pytest.raises(httpx.ReadTimeout):
                await client.post(
                    WEBHOOK + stream, json={"sender": "u1", "message": "hello"}, timeout=0.3
                )
            await asyncio.sleep(0.05)  # the server sees the connection close

        answer = await client.post(WEBHOOK, json={"sender": "u1", "message": "bye"}, timeout=5)

        assert answer.status_code == 200
        assert answer.json() == [{"recipient_id": "u1", "text": "Bye"}]
        events = (await client.get("/conversations/u1/tracker")).json()["events"]
        assert [e["text"] for e in events if e["event"] == "user"] == ["bye"]


async def test_a_client_gone_while_another_process_held_the_redis_lock_is_not_handled(
    moodbot_model: Path, tmp_path: Path
) -> None:
    """The wait on another process's Redis lease (no local waiter here) watches the client
    too; a message that takes its lock at once starts no watch."""
    require_service("Redis", REDIS)
    prefix = unique_name("lead_gone")
    lock_config = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    app = in_memory_app(moodbot_model, tmp_path, lock_config)
    other_process = create_lock_store(lock_config)
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            async with other_process.lock("u1"):
                with pytest.raises(httpx.ReadTimeout):
                    await client.post(
                        WEBHOOK, json={"sender": "u1", "message": "hello"}, timeout=0.3
                    )
                await asyncio.sleep(0.05)  # the server sees the connection close

            answer = await client.post(WEBHOOK, json={"sender": "u1", "message": "bye"}, timeout=5)
            assert answer.json() == [{"recipient_id": "u1", "text": "Bye"}]
            events = (await client.get("/conversations/u1/tracker")).json()["events"]
            assert [e["text"] for e in events if e["event"] == "user"] == ["bye"]
    finally:
        await other_process.close()
        await delete_redis_keys(prefix)


async def test_a_burst_on_a_busy_conversation_is_two_warnings_not_one_error_per_message(
    moodbot_model: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, each message that timed out waiting for the lock was an ERROR line of its
    own: a burst flooded the log. Now the first is a warning, the others are counted in one
    line when the window ends; every client still gets the 503."""
    from server.api.errors import BUSY_CONVERSATIONS

    monkeypatch.setattr(BUSY_CONVERSATIONS, "window", 0.3)
    app = build_app(
        ServerOptions(
            model_path=moodbot_model,
            enable_api=True,
            endpoints={
                "tracker_store": {"type": "in_memory"},
                "lock_store": {"type": "in_memory", "wait_timeout": 0.1},
            },
            models_dir=tmp_path,
        )
    )
    caplog.set_level(logging.INFO)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        async with app.state.lock_store.lock("busy"):  # an earlier turn, still running
            answers = await asyncio.gather(
                *(
                    client.post(WEBHOOK, json={"sender": "busy", "message": "hi"}, timeout=5)
                    for _ in range(6)
                )
            )
        await asyncio.sleep(0.6)  # the window ends

    for answer in answers:
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert answer.json()["message"] == "The conversation is busy; retry later."
    lines = [r for r in caplog.records if "Could not lock conversation 'busy'" in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING", "WARNING"], [r.getMessage() for r in lines]
    assert "Answered 503" in lines[0].getMessage()
    assert lines[1].getMessage().startswith("5 more times in the last 0.3 s: Could not lock")


async def test_clients_that_left_while_their_messages_waited_are_two_lines_not_one_each(
    moodbot_model: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a database is silent every client of a busy server gives up; before, each of
    their messages was a line of its own when its turn came. Now the first is a line, the
    others a count when the window ends."""
    from server.dialogue.processor import CLIENTS_GONE

    monkeypatch.setattr(CLIENTS_GONE, "window", 0.5)
    monkeypatch.setattr(CLIENTS_GONE, "_repeats", {})  # a window an earlier test's loop left
    app = in_memory_app(moodbot_model, tmp_path)
    caplog.set_level(logging.INFO)
    senders = [f"u{i}" for i in range(6)]
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        await clients_give_up(app, client, senders)
        await asyncio.sleep(0.8)  # the window ends

    lines = [r.getMessage() for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("The client of a message to 'u")
    assert lines[1].startswith("5 more times in the last 0.5 s: clients went away")


async def test_the_count_of_clients_gone_is_logged_when_the_server_stops(
    moodbot_model: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, a stop within the window lost its count: the log said one client went away
    where six had."""
    from server.api.runner import server_app
    from server.dialogue.processor import CLIENTS_GONE

    monkeypatch.setattr(CLIENTS_GONE, "_repeats", {})  # a window an earlier test's loop left
    app = server_app(
        ServerOptions(
            model_path=moodbot_model,
            endpoints={"tracker_store": {"type": "in_memory"}},
            models_dir=tmp_path,
        ),
        metrics=False,
    )
    caplog.set_level(logging.INFO)
    senders = [f"u{i}" for i in range(6)]
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        await clients_give_up(app, client, senders)
        for _ in range(100):  # the six turns took the lock and saw their clients gone
            if CLIENTS_GONE._repeats.get(CLIENT_GONE_KEY) == 5:
                break
            await asyncio.sleep(0.02)
    # The server stopped well within the 60 s window.

    lines = [r.getMessage() for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[1].startswith("5 more times in the last 60 s: clients went away")


async def test_the_count_of_lock_releases_failed_as_the_server_stops_is_logged(
    moodbot_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis (the lock store) goes away while three background turns hold their locks; the
    server stops: their releases fail as the stop cancels them, after the windows' counts
    were logged. Before, the count of those after the first was lost with the process."""
    from server.api.runner import server_app

    require_service("Redis", REDIS)
    proxy = TcpProxy(REDIS)
    await proxy.restore()
    prefix = unique_name("bsstopcount")
    lock_store = {"type": "redis", "url": REDIS[0], "port": proxy.port, "key_prefix": prefix}
    options = ServerOptions(
        model_path=moodbot_model,
        endpoints={"tracker_store": {"type": "in_memory"}, "lock_store": lock_store},
        models_dir=tmp_path,
    )
    app = server_app(options, metrics=False)
    try:
        async with serving(app):
            locks = app.state.lock_store

            async def turn(sender: str) -> None:
                async with locks.lock(sender):
                    await asyncio.sleep(3600)

            for sender in ("ana", "bob", "eve"):
                app.state.services.spawn(turn(sender))
            for _ in range(250):
                if len(locks._held) == 3:
                    break
                await asyncio.sleep(0.02)
            await proxy.cut()
    finally:
        await proxy.cut()
        await delete_redis_keys(prefix)
    where = f"redis at {REDIS[0]}:{proxy.port}/1"
    # The stop logs every count still open in the process: an earlier test's store's too
    # (its window on another proxy's port) when xdist ran it in this process.
    said = [
        r.getMessage()
        for r in caplog.records
        if "release" in r.getMessage() and where in r.getMessage()
    ]
    assert len(said) == 2, said
    assert said[0].startswith("Could not release the lock of conversation '"), said
    assert (
        said[1]
        == f"2 more times in the last 60 s: could not release the locks of ended turns ({where})"
    )


async def test_the_reply_does_not_wait_for_a_lock_release_redis_does_not_answer(
    moodbot_model: Path, tmp_path: Path
) -> None:
    """Redis (the lock store) stops answering after the turn took its lock (hung, a dead
    host behind a load balancer). Before, the bot's reply came a `socket_timeout` late (30 s
    here, 10 s by default): the turn's end waited for the release's answer, for a lease that
    runs out by itself."""
    require_service("Redis", REDIS)
    proxy = SilentProxy(REDIS)
    await proxy.restore()
    prefix = unique_name("bs_hung_release")
    lock_store = {
        "type": "redis",
        "url": REDIS[0],
        "port": proxy.port,
        "key_prefix": prefix,
        "socket_timeout": 30,
    }
    app = in_memory_app(moodbot_model, tmp_path, lock_store)
    store = app.state.tracker_store
    append = store.append

    async def append_as_redis_hangs(sender_id: str, events: Any) -> Any:
        proxy.silent = True  # the lease is taken; its release will not be answered
        return await append(sender_id, events)

    store.append = append_as_redis_hangs
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            answer = await client.post(
                WEBHOOK, json={"sender": "u1", "message": "bye"}, timeout=5
            )  # (before: ReadTimeout)
            assert answer.json() == [{"recipient_id": "u1", "text": "Bye"}]
            proxy.silent = False
    finally:
        proxy.silent = False
        await proxy.cut()
        await delete_redis_keys(prefix)
