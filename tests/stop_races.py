"""Landing a stop just as a background task's asyncio.wait_for hears its awaitable ended:
Python 3.11's wait_for swallows such a cancel, and the task goes on."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

wait_for_swallows_a_cancel = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="Python 3.11's asyncio.wait_for swallows the cancel"
)


class StopRace:
    """Within `with`, a task factory: the first task started by a task `started_by` accepts
    (what wait_for awaits, a task of its own) gets, before wait_for's own callback, one that
    starts `stop()`, which cancels the background task before wait_for wakes."""

    def __init__(
        self,
        started_by: Callable[[asyncio.Task[Any]], bool],
        stop: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self.started_by, self.stop = started_by, stop
        self.stopping: list[asyncio.Task[None]] = []
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> StopRace:
        self._loop.set_task_factory(self._task)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.set_task_factory(None)

    def _task(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        starter = asyncio.current_task(loop)
        if not self.stopping and starter is not None and self.started_by(starter):
            task.add_done_callback(lambda _: self.stopping.append(loop.create_task(self.stop())))
        return task

    async def started(self, nothing: str) -> None:
        """Waits (up to 10 s) for the stop to start; else fails saying `nothing`."""
        for _ in range(1000):
            if self.stopping:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(nothing)

    async def ended(self) -> bool:
        """Whether the stop ended within 10 s."""
        done, _ = await asyncio.wait(self.stopping, timeout=10)
        return bool(done)

    async def abandon(self) -> bool:
        """Cancels the stop (which ends one that waits for ever); False if none started."""
        if not self.stopping:
            return False
        self.stopping[0].cancel()
        await asyncio.wait(self.stopping)
        return True
