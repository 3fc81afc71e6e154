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
