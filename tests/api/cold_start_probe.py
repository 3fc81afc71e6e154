"""Run in a fresh process (`python -m tests.api.cold_start_probe MODEL DB`): the app
`botserver run` serves, on a SQLite tracker store, and the first request of each route a
client hits first, then a second one; prints, as JSON, what each first one did on the event
loop's thread that a process does once (modules imported, FIRST_USE_WORK), and the Python
calls each made there (first, second)."""

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

# A body long enough that its request frees it, and the tracker, in a Starlette background
# task (anyio's thread pool) once the response is sent.
_LONG_EVENTS = [{"event": "slot", "name": "session_started_metadata", "value": None}] * 1_001

# (method, path, JSON body): each one's first call in the process.
FIRST_REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/webhooks/rest/webhook", {"sender": "alice", "message": "hello"}),
    ("POST", "/model/parse", {"text": "hello"}),
    ("POST", "/conversations/bob/messages", {"text": "hello", "sender": "user"}),
    ("GET", "/conversations/bob/tracker", None),
    ("POST", "/conversations/carol/tracker/events", _LONG_EVENTS),
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


# Work a process does once, seen by the function doing it: compiling a regular expression,
# reading a module's source (FastAPI 0.165 finds each endpoint's line for its error messages).
FIRST_USE_WORK = {
    ("/re/_compiler.py", "compile"): "a regex compiled",
    ("/inspect.py", "getsourcelines"): "source code read",
}


class _Calls:
    """Counts the Python functions called on this thread (a profile hook) while active, and
    notes the FIRST_USE_WORK among them."""

    def __init__(self) -> None:
        self.count = 0
        self.first_use: list[str] = []

    def __enter__(self) -> _Calls:
        sys.setprofile(self._called)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)

    def _called(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            self.count += 1
            code = frame.f_code
            for (file, name), what in FIRST_USE_WORK.items():
                if code.co_name == name and code.co_filename.endswith(file):
                    self.first_use.append(what)


async def first_requests(model: Path, database: Path) -> dict[str, Any]:
    options = ServerOptions(
        model_path=model,
        enable_api=True,
        endpoints={"tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(database)}},
        models_dir=model.parent,
    )
    app = server_app(options)
    first_use: dict[str, list[str]] = {}
    calls: dict[str, list[int]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            # The test client's own first-use imports are not the server's.
            await client.get("/no-such-path")
            watch = _LoopImports(threading.get_ident())
            sys.meta_path.insert(0, watch)
            try:
                for method, path, body in FIRST_REQUESTS:
                    watch.names = []
                    counts = []
                    for _ in range(2):
                        with _Calls() as called:
                            response = await client.request(method, path, json=body)
                        response.raise_for_status()
                        counts.append(called.count)
                        if not counts[1:]:
                            first_use[f"{method} {path}"] = watch.names + called.first_use
                    calls[f"{method} {path}"] = counts
            finally:
                sys.meta_path.remove(watch)
    return {"first_use": first_use, "calls": calls}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(first_requests(Path(sys.argv[1]), Path(sys.argv[2])))))
