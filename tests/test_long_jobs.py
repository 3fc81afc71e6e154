"""A long job runs on a thread of its own, as `asyncio.to_thread` would, but off its pool."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading

import pytest

from server.long_jobs import run_long_job

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


async def test_a_job_sees_the_callers_context_and_its_error_comes_back() -> None:
    request_id.set("r1")

    def job(n: int) -> tuple[str, str, int]:
        return threading.current_thread().name, request_id.get(), n * 2

    assert await run_long_job("training", job, 21) == ("training", "r1", 42)

    def failing() -> None:
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        await run_long_job("training", failing)


async def test_a_job_runs_while_the_loops_pool_is_full() -> None:
    """Every thread of asyncio's pool held: a long job still starts."""
    released = threading.Event()
    loop = asyncio.get_running_loop()
    pool_size = min(32, (os.cpu_count() or 1) + 4)
    holders = [loop.run_in_executor(None, released.wait, 30) for _ in range(pool_size)]
    try:
        assert await asyncio.wait_for(run_long_job("job", lambda: 7), 10) == 7
    finally:
        released.set()
        await asyncio.gather(*holders)


async def test_jobs_past_the_limit_wait_for_a_running_one_to_end() -> None:
    """At most `MAX_RUNNING` jobs at once (asyncio's own pool size: 6 on 2 cores); others wait
    their turn. Before, a hundred POST /model/train at once ran a hundred trainings side by
    side: a hundred threads, each holding its training's memory, sharing two cores."""
    from server.long_jobs import MAX_RUNNING

    released = threading.Event()
    running: list[int] = []
    most = 0
    lock = threading.Lock()

    def job(n: int) -> int:
        nonlocal most
        with lock:
            running.append(n)
            most = max(most, len(running))
        released.wait(30)
        with lock:
            running.remove(n)
        return n

    jobs = [asyncio.create_task(run_long_job("job", job, n)) for n in range(MAX_RUNNING + 3)]
    try:
        for _ in range(100):
            if len(running) >= MAX_RUNNING:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # room for any job past the limit to start
        assert most == MAX_RUNNING
    finally:
        released.set()
    assert await asyncio.gather(*jobs) == list(range(MAX_RUNNING + 3))
    assert most == MAX_RUNNING
