"""Serving a model imports only what it uses: scikit-learn and SciPy are for training,
socket.io, RabbitMQ, Redis and asyncpg only for a project that configures them. Each of
them costs 10-60 MB of resident memory in every server process, and SciPy a quarter of a
second of CPU at every start."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

OPTIONAL = ("sklearn", "socketio", "aiohttp", "aio_pika", "redis", "asyncpg")

BUILD_AND_LIST = """
import asyncio, json, sys
import httpx
from server.api.runner import server_app
from server.api.server import ServerOptions
app = server_app(ServerOptions(model_path=sys.argv[1], endpoints=json.loads(sys.argv[2]),
                               enable_api=True))

async def talk():
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
            turn = {"sender": "me", "message": "hello"}
            said = await client.post("/webhooks/rest/webhook", json=turn, timeout=60)
            assert said.status_code == 200 and said.json(), said.text

if sys.argv[3:] == ["talk"]:
    asyncio.run(talk())
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.fixture(scope="module")
def moodbot_archive(moodbot_copy: Callable[[str], Path]) -> Path:
    return moodbot_copy("moodbot")


def loaded_packages(archive: Path, endpoints: Mapping[str, object], *then: str) -> set[str]:
    """The top-level packages a process has imported once it has built the app (and, with
    `then` "talk", loaded the model and answered a turn)."""
    out = subprocess.run(
        [sys.executable, "-c", BUILD_AND_LIST, str(archive), json.dumps(endpoints), *then],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_served_model_on_sqlite_imports_none_of_the_optional_packages(
    moodbot_archive: Path, tmp_path: Path
) -> None:
    endpoints = {
        "tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
    }
    loaded = loaded_packages(moodbot_archive, endpoints, "talk")
    assert loaded & {*OPTIONAL, "scipy"} == set()


def test_a_postgresql_tracker_store_brings_its_driver(moodbot_archive: Path) -> None:
    endpoints = {
        "tracker_store": {"type": "sql", "dialect": "postgresql", "url": "127.0.0.1", "db": "test"}
    }
    assert "asyncpg" in loaded_packages(moodbot_archive, endpoints)
