"""Serving a model imports only what it uses: scikit-learn is for training, socket.io,
RabbitMQ, Redis and asyncpg only for a project that configures them. Each of them costs
10-60 MB of resident memory in every server process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from server.training.train import train
from tests.dialogue.conversation_fixtures import copy_bot

OPTIONAL = ("sklearn", "socketio", "aiohttp", "aio_pika", "redis", "asyncpg")

BUILD_AND_LIST = """
import json, sys
from server.api.runner import server_app
from server.api.server import ServerOptions
app = server_app(ServerOptions(model_path=sys.argv[1], endpoints=json.loads(sys.argv[2]),
                               enable_api=True))
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.fixture(scope="module")
def moodbot_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("moodbot")
    folder = copy_bot("moodbot", workdir)
    result = train(
        folder / "config.yml",
        folder / "domain.yml",
        [folder / "data"],
        workdir / "models",
        force=True,
    )
    return Path(result.path)


def loaded_packages(archive: Path, endpoints: Mapping[str, object]) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", BUILD_AND_LIST, str(archive), json.dumps(endpoints)],
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
    assert loaded_packages(moodbot_archive, endpoints) & set(OPTIONAL) == set()


def test_a_postgresql_tracker_store_brings_its_driver(moodbot_archive: Path) -> None:
    endpoints = {
        "tracker_store": {"type": "sql", "dialect": "postgresql", "url": "127.0.0.1", "db": "test"}
    }
    assert "asyncpg" in loaded_packages(moodbot_archive, endpoints)
