"""An event loop of its own, in a daemon thread, for the stores' one-off set-up (the SQL
tracker store's schema migration, the SQL event broker's table): its CPU stays off the loop
that serves, and a set-up stuck on a silent database never holds the process's stop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
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


# How long a caller that gives up waits for the set-up's clean-up on the set-up loop (its
# connection closed, its locks released with it): milliseconds on a database that answers;
# one fallen silent is not waited for longer (the process's stop is not held).
CLEAN_UP_SECONDS = 2.0
# When the process's stop must be over (time.monotonic()), set by the stop: the wait above
# is no longer than what is left (none, once its graceful period is used up).
_stop_by: float | None = None


def stop_by(deadline: float | None) -> None:
    """Clean-ups of given-up set-ups are waited for until `deadline` at most (None: up to
    CLEAN_UP_SECONDS each)."""
    global _stop_by
    _stop_by = deadline


def clean_up_seconds() -> float:
    """How long a clean-up that may meet a silent database is waited for now: CLEAN_UP_SECONDS,
    less when the stop has less left (none once its graceful period is used up)."""
    if _stop_by is None:
        return CLEAN_UP_SECONDS
    return max(0.0, min(CLEAN_UP_SECONDS, _stop_by - time.monotonic()))


async def on_setup_loop(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """What `work()` returns, run on the set-up loop; cancelling the caller cancels it there
    (SQLAlchemy then drops the connection rather than wait on it), and waits for it to end,
    up to CLEAN_UP_SECONDS (less when the stop has less left, `stop_by`): before, the caller
    went on at once, and its connection (a migration's session, waiting for or holding its
    lock) outlived the store's `close()`."""
    caller = asyncio.get_running_loop()
    setup = _setup_loop()
    ended: asyncio.Future[T] = caller.create_future()
    # (An error no one waits for any more is not logged as never retrieved.)
    ended.add_done_callback(lambda done: done.cancelled() or done.exception())
    running: list[asyncio.Task[T]] = []

    def settle(task: asyncio.Task[T]) -> None:
        if ended.done():
            return
        if task.cancelled():
            ended.cancel()
        elif (exc := task.exception()) is not None:
            ended.set_exception(exc)
        else:
            ended.set_result(task.result())

    def start() -> None:
        task = setup.create_task(work())
        running.append(task)
        task.add_done_callback(lambda done: _call_soon(caller, settle, done))

    def cancel() -> None:
        for task in running:
            task.cancel()

    setup.call_soon_threadsafe(start)
    try:
        return await asyncio.shield(ended)
    except asyncio.CancelledError:
        setup.call_soon_threadsafe(cancel)  # (after `start`: calls run in order)
        if seconds := clean_up_seconds():
            await asyncio.wait([ended], timeout=seconds)
        raise


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """`callback(*args)` on `loop` from another thread; nothing once that loop is closed (a
    set-up that ended after its caller's `asyncio.run`)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
