"""asyncpg is an optional extra (`botserver[postgres]`): a SQLite-only install keeps its
conversations and delivers its SQL broker's events without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A process where `import asyncpg` fails, as in an install without the extra.
WITHOUT_ASYNCPG = """
import asyncio, importlib.abc, sys

class NoAsyncpg(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "asyncpg":
            raise ModuleNotFoundError("No module named 'asyncpg'")

sys.meta_path.insert(0, NoAsyncpg())
sys.modules.pop("asyncpg", None)

from server.brokers.sql import SqlEventBroker
from server.trackers.factory import create_tracker_store

async def main(directory):
    event = {"event": "user", "text": "hi", "timestamp": 1.0}
    store = create_tracker_store({"type": "SQL", "dialect": "sqlite", "db": f"{directory}/t.db"})
    try:
        await store.append("alice", [event])
        assert list(await store.load("alice")) == [event]
    finally:
        await store.close()
    broker = SqlEventBroker({"type": "SQL", "dialect": "sqlite", "db": f"{directory}/b.db"})
    try:
        await broker.publish("alice", [event])
        assert await broker.flush(timeout=10)
    finally:
        await broker.close()
    assert "asyncpg" not in sys.modules

asyncio.run(main(sys.argv[1]))
"""


def test_a_sqlite_only_install_needs_no_asyncpg(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_ASYNCPG, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
