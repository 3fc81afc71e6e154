"""An event loop of its own, in a daemon thread, for the stores' one-off set-up (the SQL
tracker store's schema migration, the SQL event broker's table): its CPU stays off the loop
that serves, and a set-up stuck on a silent database never holds the process's stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_starting = threading.Lock()


def _setup_loop() -> asyncio.AbstractEventLoop:
    """Started on first use, and never closed: a daemon thread, which the interpreter does not
    wait for at exit (it joins the default executor's threads, and asyncio.run waits for
    them first: a migration waiting on a silent database held the stop for ever)."""
    global _loop
    with _starting:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="botserver-setup", daemon=True).start()
            _loop = loop
        return _loop


async def on_setup_loop(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """What `work()` returns, run on the set-up loop; cancelling the caller cancels it there
    (SQLAlchemy then drops the connection rather than wait on it)."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work(), _setup_loop()))
