"""Reminders live in process memory, as in Rasa: a server that stops says what it drops."""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from server.api.server import ServerOptions, build_app
from server.trackers.factory import create_lock_store
from tests.api.conftest import MEMORY_STORE
from tests.trackers.persistence_fixtures import REDIS, require_service, unique_name


def moodbot_app(model: Path, tmp_path: Path, endpoints: dict[str, Any] = MEMORY_STORE) -> FastAPI:
    options = ServerOptions(
        model_path=model, enable_api=True, endpoints=endpoints, models_dir=tmp_path / "models"
    )
    return build_app(options)


def reminder(name: str) -> dict[str, object]:
    when = datetime.datetime.now() + datetime.timedelta(hours=1)
    return {"event": "reminder", "intent": "greet", "date_time": when.isoformat(), "name": name}


async def test_stopping_names_the_reminders_it_drops(
    moodbot_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the reminders went without a word: nothing told the operator that users were
    waiting for reminders that would never come (Rasa is silent too)."""
    app = moodbot_app(moodbot_model, tmp_path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for sender, names in (("ada", ["call", "water"]), ("bob", ["call"])):
                posted = await client.post(
                    f"/conversations/{sender}/tracker/events?execute_side_effects=true",
                    json=[reminder(name) for name in names],
                )
                assert posted.status_code == 200
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="server")

    dropped = [r.getMessage() for r in caplog.records if "reminder" in r.getMessage()]
    assert dropped == [
        "stopping drops 3 pending reminders of 2 conversations: reminders are kept in this "
        "process's memory, as in Rasa, and do not outlive it"
    ]


async def test_stopping_with_no_reminder_pending_says_nothing_of_them(
    moodbot_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = moodbot_app(moodbot_model, tmp_path)
    async with app.router.lifespan_context(app):
        caplog.set_level(logging.WARNING, logger="server")
    assert not [r for r in caplog.records if "reminder" in r.getMessage()]


@pytest.mark.parametrize("lock_store", ["memory", "redis"])
async def test_a_due_reminder_waiting_for_its_conversation_is_dropped_at_stop(
    moodbot_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, lock_store: str
) -> None:
    """Its timer ran out while a turn (the test's; with Redis, another worker's) held the
    conversation, and the server stopped meanwhile. Before, stopping said nothing of it, and
    it ran its turn once the lock was free: after the server had said it stopped, against
    closed stores."""
    endpoints: dict[str, Any] = dict(MEMORY_STORE)
    if lock_store == "redis":
        require_service("Redis", REDIS)
        config = {"type": "redis", "url": REDIS[0], "port": REDIS[1]}
        endpoints["lock_store"] = config | {"key_prefix": unique_name("bstest")}
    app = moodbot_app(moodbot_model, tmp_path, endpoints)
    processor = app.state.processor
    # The other worker's lock store (with Redis), or this process's own.
    locks = processor.lock_store
    if lock_store == "redis":
        locks = create_lock_store(endpoints["lock_store"])
    held = locks.lock("ada")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            soon = datetime.datetime.now() + datetime.timedelta(seconds=0.3)
            due = reminder("call") | {"date_time": soon.isoformat()}
            posted = await client.post(
                "/conversations/ada/tracker/events?execute_side_effects=true", json=[due]
            )
            assert posted.status_code == 200
        await held.__aenter__()
        for _ in range(200):  # its timer runs out; its turn waits for the lock
            if not processor.reminders.pending("ada"):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        caplog.clear()
        caplog.set_level(logging.INFO, logger="server")
    await held.__aexit__(None, None, None)
    if locks is not processor.lock_store:
        await locks.close()
    for _ in range(10):
        await asyncio.sleep(0.02)

    said = [r.getMessage() for r in caplog.records if "reminder" in r.getMessage()]
    assert said == [
        "stopping drops 1 pending reminder of 1 conversation: reminders are kept in this "
        "process's memory, as in Rasa, and do not outlive it"
    ]
    stored = await app.state.tracker_store.load("ada")
    assert [e.get("text") for e in stored if e["event"] == "user"] == []
