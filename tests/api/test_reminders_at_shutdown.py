"""Reminders live in process memory, as in Rasa: a server that stops says what it drops."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from server.api.server import ServerOptions, build_app
from tests.api.conftest import MEMORY_STORE


def moodbot_app(model: Path, tmp_path: Path) -> FastAPI:
    options = ServerOptions(
        model_path=model, enable_api=True, endpoints=MEMORY_STORE, models_dir=tmp_path / "models"
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
