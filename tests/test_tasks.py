"""Stopping background tasks at shutdown: `server.tasks.stop`."""

from __future__ import annotations

import asyncio

import pytest

from server.tasks import stop


async def test_a_task_that_never_ends_is_left_with_a_warning_not_waited_for_for_ever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, stop() cancelled such a task every 0.1 s for ever: the server's stop hung."""
    released = asyncio.Event()

    async def deaf() -> None:
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                pass  # (a task that outlives every cancel)

    task = asyncio.create_task(deaf(), name="deaf listener")
    await asyncio.sleep(0)
    try:
        stopping = asyncio.create_task(stop(task, give_up_after=0.3))
        done, _ = await asyncio.wait([stopping], timeout=5)
        assert done, "stop() waits for ever"
        assert not task.done()
        assert "Task 'deaf listener' still runs 0.3 s after it was cancelled" in caplog.text
    finally:
        released.set()
        await asyncio.wait([task])
        if not stopping.done():
            stopping.cancel()
            await asyncio.wait([stopping])


async def test_a_task_that_ends_its_own_way_raises_what_it_raised() -> None:
    async def failing() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await stop(task)
