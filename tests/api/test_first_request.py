"""The first request after startup costs the event loop no more than the next ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI

from server.api.app import prepare_routes
from tests.api.cold_start_probe import FIRST_REQUESTS
from tests.loop_lag import loop_hold

API_ROUTE_MODULES = {"server.api.conversations", "server.api.model", "server.api.domain"}


@pytest.mark.timing
async def test_the_first_request_after_startup_does_not_hold_the_loop(
    make_client: Callable[..., Any],
) -> None:
    """Before, FastAPI worked out every route's parameters and dependencies at the first
    request the app served (its first turn after a restart, whatever the conversation):
    19 ms of the loop thread's CPU (moodbot's routes), every other conversation waiting.
    Now that is done in a thread at startup."""
    client = await make_client()
    async with loop_hold() as hold:
        response = await client.post(
            "/webhooks/rest/webhook", json={"sender": "alice", "message": "hello"}
        )
    assert response.status_code == 200 and response.json()
    assert hold.loop_busiest < 0.009 * hold.slowness, (
        hold.loop_busiest
    )  # 19 ms before; now 2.6-2.9 ms


def test_no_first_request_imports_reads_source_or_compiles_on_the_event_loop(
    moodbot_model: Path, tmp_path: Path
) -> None:
    """In a fresh process, as after a restart: the first turn, parse, message, tracker,
    status and readiness probe, and a first append of 1,001 events (its tracker freed in a
    background task after the response) import no module, read no source file and compile
    no regex on the loop's thread (counts, whatever the host's speed). Before, the first turn
    imported 20 modules there (SQLAlchemy's MySQL dialect, for the SQL store's migrations:
    35-40 ms of the loop's CPU with the rest of Alembic's work), the first /model/parse 13
    (anyio's thread pool, for a dependency FastAPI ran in a thread), and each API route's
    first request read its endpoint's source (FastAPI finding its line): 9,184 Python calls
    for the first /model/parse, 1,098 for the next, 1,580 now. The first background task
    imported anyio's asyncio backend there (13 modules, 8-10 ms of the loop's CPU)."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.api.cold_start_probe", str(moodbot_model), "t.db"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    first_use = json.loads(out.stdout.strip().splitlines()[-1])["first_use"]
    assert list(first_use) == [f"{method} {path}" for method, path, _ in FIRST_REQUESTS]
    assert {request: work for request, work in first_use.items() if work} == {}


def test_startup_survives_a_fastapi_whose_private_endpoint_helper_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """prepare_routes warms FastAPI's private `_extract_endpoint_context` (fastapi>=0.110 is
    not pinned). Before, a release where it takes other arguments stopped every server at
    startup (its TypeError); now its first requests just do that work themselves."""

    def changed(dependant: object, scope: object) -> None:
        raise AssertionError("not called this way")

    monkeypatch.setattr(fastapi.routing, "_extract_endpoint_context", changed)
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    prepare_routes(app)


async def test_a_second_app_in_a_process_analyses_the_api_routes_once_and_keeps_its_state(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, every app built in a process (each API test's, for one) worked out each
    conversation, /model and /domain endpoint's parameters twice: making the route, then for
    the app including it; making the routes was half of an app's start (about 30 ms of CPU).
    Those routes are made once a process now; each app still serves its own conversations,
    from its own tracker store."""
    first = await make_client()
    analysed: Counter[str] = Counter()
    analyse = fastapi.routing.get_dependant

    def counted(*args: Any, **kwargs: Any) -> Any:
        call = kwargs.get("call")
        if getattr(call, "__module__", "") in API_ROUTE_MODULES:
            analysed[getattr(call, "__qualname__", "")] += 1
        return analyse(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "get_dependant", counted)
    second = await make_client()
    event = {"event": "slot", "name": "mood", "value": "great", "timestamp": 1.0}
    appended = await first.post("/conversations/ann/tracker/events", json=event)
    assert appended.status_code == 200, appended.text
    own = (await second.get("/conversations/ann/tracker")).json()
    assert own["slots"].get("mood") is None
    assert len(analysed) >= 16  # every endpoint of those routes, for the second app
    assert max(analysed.values()) == 1, analysed  # twice before
