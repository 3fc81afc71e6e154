"""The directory the workers of `botserver run --workers N` share, and how they use it: whole
JSON files written atomically, read back, and tasks that run beside a worker's app."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from server.tasks import stop
from server.worker_claims import WORKERS_DIR_ENV as WORKERS_DIR_ENV
from server.worker_claims import first_to_claim as first_to_claim
from server.worker_claims import read_object as read_object
from server.worker_claims import workers_dir
from server.worker_claims import write_json as write_json

logger = logging.getLogger(__name__)

# Set in each worker that serves on a private Unix socket too: its route, the name of its
# socket in `route_sockets()` (socket.io sessions are routed by it: channels/socketio_routing).
WORKER_ROUTE_ENV = "BOTSERVER_WORKER_ROUTE"


def hold_workers_dir() -> IO[str] | None:
    """Held open by a worker for its life, with a shared lock: `workers.alive` in the
    directory (None in a server of one process, or when it cannot be opened)."""
    shared = workers_dir()
    if shared is None:
        return None
    try:
        alive = open(shared / "workers.alive", "a")
    except OSError:  # not ours to tidy then: serve all the same
        return None
    fcntl.flock(alive, fcntl.LOCK_SH)
    return alive


def leave_workers_dir(alive: IO[str] | None, orphaned: bool) -> None:
    """A worker stops. The parent removes the directory when the server stops; when it died
    instead (`orphaned`: a SIGKILL, the OOM killer), the last of its workers to stop does."""
    shared = workers_dir()
    if alive is None or shared is None or not orphaned:
        return
    fcntl.flock(alive, fcntl.LOCK_UN)
    try:
        # Granted only once no other worker holds its shared lock: to the last one to stop.
        fcntl.flock(alive, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    shutil.rmtree(shared, ignore_errors=True)


def route_sockets(shared: Path) -> Path:
    """Where the workers' private Unix sockets are, `<route>.sock` each."""
    return shared / "routes"


def worker_route() -> tuple[str, Path] | None:
    """This worker's route and the directory of the workers' sockets; None in a server of
    one process (or a worker without a private socket)."""
    route = os.environ.get(WORKER_ROUTE_ENV)
    shared = workers_dir()
    return (route, route_sockets(shared)) if route and shared is not None else None


# What one worker asks of another, by path, served on the workers' private Unix sockets only
# (`private_app`): no network client can reach it, whatever the main app's routes.
_PRIVATE_APPS: dict[str, ASGIApp] = {}
# Set on a request a worker relays from a client to another worker's private socket (a
# socket.io session's long-poll): such a request gets the main app, never a private one.
RELAYED_HEADER = b"botserver-relayed"


def serve_privately(path: str, app: ASGIApp) -> None:
    """Serve `app` at `path` on this worker's private socket (to the other workers) only."""
    _PRIVATE_APPS[path] = app


def private_app(app: ASGIApp) -> ASGIApp:
    """What a worker's private socket serves: the apps of `serve_privately`, then `app`."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        private = _PRIVATE_APPS.get(scope["path"]) if scope["type"] == "http" else None
        if private is not None and any(name == RELAYED_HEADER for name, _ in scope["headers"]):
            private = None
        await (private or app)(scope, receive, send)

    return dispatch


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Held by one worker at a time: the lock file beside `path`."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def next_serial(path: Path) -> int:
    """The next number of a counter the workers share, kept beside `path` under its lock: each
    call gets a larger one than every call before it, in any worker, whatever the wall clock
    does (an NTP step backwards made a later request's `time.time_ns()` the smaller)."""
    counter = path.with_name(path.name + ".serial")
    with _locked(path):
        try:
            current = int(counter.read_text() or 0)
        except FileNotFoundError:
            current = 0
        except (OSError, ValueError) as exc:  # unreadable: start above anything it could hold
            logger.warning("Skipping %s, which the workers share: %s", counter, exc)
            current = _largest_serial(path)
        write_json(counter, current + 1)
        return current + 1


def _largest_serial(path: Path) -> int:
    record = read_object(path)
    serial = record.get("serial") if record is not None else None
    return serial if isinstance(serial, int) else 0


def write_json_if_newer(path: Path, value: dict[str, Any], key: str) -> bool:
    """Replace `path` with `value` unless the object there has a larger `key`; True if written.

    A lock file beside `path` makes the compare-and-replace whole across the workers.
    """
    with _locked(path):
        current = read_object(path)
        present = current.get(key) if current is not None else None
        if isinstance(present, int) and present > value[key]:
            return False
        write_json(path, value)
        return True


def run_beside(
    app: FastAPI,
    task: Callable[[], Coroutine[Any, Any, None]],
    first: Callable[[], Awaitable[None]] | None = None,
    last: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run `task` while the app serves: `first` once after its startup, `task` in the
    background, `last` once when it stops."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            if first is not None:
                await first()
            running = asyncio.create_task(task(), name=getattr(task, "__qualname__", "task"))
            try:
                yield state
            finally:
                await stop(running)
                if last is not None:
                    await last()

    app.router.lifespan_context = lifespan
