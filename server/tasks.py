"""Stopping background tasks at shutdown, and saying how long the stop waits for what runs;
a long command stopping at its next batch once asked to; work that runs on to its end when
the request that started it is cut off."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# `stop` cancels a task again this often until it ends...
RECANCEL_SECONDS = 0.1
# ...and gives up on one still running this long after, with a warning.
GIVE_UP_SECONDS = 5.0


def time_left(seconds: float) -> str:
    """A wait of `seconds` (more than none) as a log line says it: "12 s", or in ms up to
    half a second ("300 ms"), where "%.0f s" said "0 s" (0.5 too: it rounds to even)."""
    return f"{seconds:.0f} s" if seconds > 0.5 else f"{max(1, round(seconds * 1000))} ms"


def waits_in_grace(
    log: logging.Logger, seconds: float, what: str, given_up: str, until: str = ""
) -> bool:
    """Says whether the stop waits for `what` in the `seconds` left of the graceful period:
    "Waiting up to N s for `what``until`" (`time_left`), or, with none left, "No time left
    of the graceful period for `what`: `given_up`" (and there is no wait)."""
    if seconds <= 0:
        log.info("No time left of the graceful period for %s: %s", what, given_up)
        return False
    log.info("Waiting up to %s for %s%s", time_left(seconds), what, until)
    return True


async def stop(task: asyncio.Task[Any], give_up_after: float = GIVE_UP_SECONDS) -> None:
    """Cancels `task` until it ends, for up to `give_up_after` seconds; raises what it raised
    (other than its cancellation). Once was not enough: libraries wait under asyncio.wait_for
    (redis-py's writes, aio-pika's connect, httpx...), which in Python 3.11 swallows a cancel
    that lands as what it waits for ends. The task then went on (a listener waiting for a
    message, a retry loop), and the server's stop waited for it for ever. A task that
    outlives `give_up_after` (it catches every cancel) is left running, with a warning: the
    stop goes on. A cleanup of its own that takes over `RECANCEL_SECONDS` is cut short."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + give_up_after
    while not task.done():
        left = ends - loop.time()
        if left <= 0:
            logger.warning(
                "Task '%s' still runs %g s after it was cancelled: stopping without it",
                task.get_name(),
                give_up_after,
            )
            return
        task.cancel()
        await asyncio.wait([task], timeout=min(RECANCEL_SECONDS, left))
    with suppress(asyncio.CancelledError):
        task.result()


def stop_if_cancelled() -> None:
    """CancelledError if the running task was asked to stop (SIGTERM, Ctrl-C) and went on:
    on Python 3.11 `asyncio.wait_for` drops a cancellation that comes as its awaited call
    ends, and the Redis client wraps each command's send in one (with socket_timeout). A
    long command (a prune, an export) calls this between its batches; before, such a stop
    was lost and the command went on to its end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# Work that went on past its caller's cancellation (`to_its_end`), held until it ends so
# that none is collected before.
_RUNNING_ON: set[asyncio.Future[Any]] = set()


# At most this many run on at once; a turn cut off past it is cancelled (nothing stored).
MOST_RUNNING_ON = 1000

# The tasks (requests) whose cancellation left their work running on (`to_its_end`).
_LEFT_RUNNING: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def left_running(task: asyncio.Task[Any]) -> bool:
    """Whether `task`, cancelled, left work running on to its end (`to_its_end`): the
    response timeout's log line says so rather than "cancelled"."""
    return task in _LEFT_RUNNING


async def to_its_end(work: Awaitable[T], when_cut: Callable[[asyncio.Future[T]], None]) -> T:
    """Awaits `work` in a task of its own, which the caller's cancellation (the response
    timeout) does not cancel: it runs on to its end (a turn under its conversation's lock,
    stored whole), and `when_cut` gets it then, to say how it ended (nobody awaits it any
    more). The caller's cancellation goes on as it came."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if len(_RUNNING_ON) >= MOST_RUNNING_ON:
            # A bound on what piles up (a stalled action server, clients sending again):
            # cancelled as before, under its lock, so nothing of it is stored.
            task.cancel()
            logger.warning(
                "%d turns cut off by the response timeout still run on: this one is "
                "cancelled, nothing of it stored",
                len(_RUNNING_ON),
            )
            raise
        caller = asyncio.current_task()
        if caller is not None:
            _LEFT_RUNNING.add(caller)
        _RUNNING_ON.add(task)
        task.add_done_callback(_RUNNING_ON.discard)
        task.add_done_callback(when_cut)
        raise


def running_on() -> int:
    """How many of the works `to_its_end` let run on still run, not already cancelled (a
    channel's turn that the stop's drain of turns in flight cancelled)."""
    return len(_still_running())


def _still_running() -> list[asyncio.Future[Any]]:
    return [
        work
        for work in _RUNNING_ON
        if not work.done() and not (isinstance(work, asyncio.Task) and work.cancelling())
    ]


async def finish_running_on(timeout: float, unwind: float = 1.0) -> int:
    """At the server's stop: waits up to `timeout` seconds for the work `to_its_end` let run
    on (a `trigger_intent` or `execute` cut off by the response timeout: no channel's turn
    count holds them), then cancels what still runs (under its lock, stored at its end: a
    cancelled one stores nothing) and gives it `unwind` seconds to let go of its lock;
    returns how many were cancelled. Before, the stores and clients closed under them."""
    running = _still_running()
    if running and timeout > 0:
        await asyncio.wait(running, timeout=timeout)
    late = [task for task in running if not task.done()]
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late, timeout=unwind)
    return len(late)


def said_when_ended(
    log: logging.Logger, failed: Callable[[Exception], None], what: str, *args: Any
) -> Callable[[asyncio.Future[Any]], None]:
    """A `when_cut` for `to_its_end` running a conversation's turn: one INFO line that the
    turn (`what % args`) ended and was stored, or `failed(error)`; nothing when the server's
    stop cancelled it."""

    def ended(turn: asyncio.Future[Any]) -> None:
        if turn.cancelled():
            return
        error = turn.exception()
        if error is None:
            log.info(f"{what}, cut off by the response timeout, ended and was stored", *args)
        elif isinstance(error, Exception):
            failed(error)

    return ended
