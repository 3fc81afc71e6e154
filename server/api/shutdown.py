"""Graceful shutdown: the stop is announced, and turns that run outside any request (a streamed
turn whose client left, a socket.io turn) finish before the stores close, within the period
uvicorn gives requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)

# When this process began to stop (time.monotonic()); None while it serves.
_stop_began: float | None = None


class GracefulServer(uvicorn.Server):
    """uvicorn's server, saying when it stops and noting the time for `TurnsInFlight.drain`."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        global _stop_began
        _stop_began = None
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        global _stop_began
        _stop_began = time.monotonic()
        logger.info(
            "Stopping: new connections are refused; requests in flight (%d) and running turns "
            "get up to %g s to finish",
            len(self.server_state.tasks),
            self.config.timeout_graceful_shutdown or 0,
        )
        await super().shutdown(sockets)


def seconds_left(graceful_seconds: float) -> float:
    """What is left of the graceful period since the stop began (all of it if unknown)."""
    if _stop_began is None:
        return graceful_seconds
    return max(0.0, graceful_seconds - (time.monotonic() - _stop_began))


Turn = Callable[..., Coroutine[Any, Any, Any]]


class TurnsInFlight:
    """The tasks running the processor's turns, so that the lifespan can wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None

    @property
    def count(self) -> int:
        return len(self._tasks)

    def track(self, processor: Any) -> None:
        """Wrap `processor.handle_message` (every channel's turn goes through it)."""
        handle: Turn = processor.handle_message
        tasks = self._tasks

        async def handle_message(message: Any, model: Any) -> Any:
            task = asyncio.current_task()
            tasks.add(task)  # type: ignore[arg-type]  # (always in a task)
            try:
                return await handle(message, model)
            finally:
                tasks.discard(task)  # type: ignore[arg-type]
                if not tasks and self._idle is not None:
                    self._idle.set()

        processor.handle_message = handle_message

    async def drain(self, timeout: float, unwind: float = 1.0) -> int:
        """Waits up to `timeout` seconds for the turns in progress to end, then cancels those
        still running and gives them `unwind` seconds to let go of their locks; returns how
        many were cancelled."""
        if self._tasks and timeout > 0:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._idle = None
        late = set(self._tasks)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=unwind)
        return len(late)
