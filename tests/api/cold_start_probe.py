"""Run in a fresh process (`python -m tests.api.cold_start_probe MODEL DB`): the app
`botserver run` serves, on a SQLite tracker store, and the first request of each route a
client hits first; prints, as JSON, the modules each one imported on the event loop's thread."""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from server.api.runner import server_app
from server.api.server import ServerOptions

# (method, path, JSON body): each one's first call in the process.
FIRST_REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/webhooks/rest/webhook", {"sender": "alice", "message": "hello"}),
    ("POST", "/model/parse", {"text": "hello"}),
    ("POST", "/conversations/bob/messages", {"text": "hello", "sender": "user"}),
    ("GET", "/conversations/bob/tracker", None),
    ("GET", "/status", None),
    ("GET", "/health/ready", None),
]


class _LoopImports(importlib.abc.MetaPathFinder):
    """Notes each module imported on the loop's thread (asked for while not yet loaded)."""

    def __init__(self, loop_thread: int) -> None:
        self.loop_thread = loop_thread
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> None:
        if threading.get_ident() == self.loop_thread and fullname not in sys.modules:
            self.names.append(fullname)
        return None


async def first_requests(model: Path, database: Path) -> dict[str, list[str]]:
    options = ServerOptions(
        model_path=model,
        enable_api=True,
        endpoints={"tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(database)}},
        models_dir=model.parent,
    )
    app = server_app(options)
    imported: dict[str, list[str]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            # The test client's own first-use imports are not the server's.
            await client.get("/version")
            watch = _LoopImports(threading.get_ident())
            sys.meta_path.insert(0, watch)
            try:
                for method, path, body in FIRST_REQUESTS:
                    watch.names = []
                    response = await client.request(method, path, json=body)
                    response.raise_for_status()
                    imported[f"{method} {path}"] = watch.names
            finally:
                sys.meta_path.remove(watch)
    return imported


if __name__ == "__main__":
    print(json.dumps(asyncio.run(first_requests(Path(sys.argv[1]), Path(sys.argv[2])))))
