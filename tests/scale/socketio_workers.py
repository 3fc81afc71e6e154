"""`botserver run --workers 2` with the socketio channel, for the tests of sessions across
workers (python-socketio's client and rasa-webchat in Chromium)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.concurrency import ServerProcess
from tests.scale.scale_services import sqlite_and_redis_endpoints


@contextlib.contextmanager
def socketio_workers(model: Path, tmp_path: Path, socketio: dict[str, Any]) -> Iterator[str]:
    """Two workers serving `model` with these socketio settings and `--cors "*"`, on SQLite
    with Redis locks, until the block ends; yields the base URL."""
    endpoints = sqlite_and_redis_endpoints(tmp_path)
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(json.dumps({"socketio": socketio}))
    server = ServerProcess(model, endpoints, tmp_path / "server.log", workers=2)
    server.args += ["--credentials", str(credentials), "--cors", "*"]
    server.start()
    try:
        asyncio.run(server.wait_for("/", 200, timeout=60))
        deadline = time.monotonic() + 30
        while "with 2 workers" not in server.log.read_text():  # said once both serve
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.1)
        yield server.url
    except BaseException:
        print(server.log.read_text()[-3000:])
        raise
    finally:
        asyncio.run(server.stop())
