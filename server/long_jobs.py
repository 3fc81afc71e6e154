"""Long blocking jobs (a training, an evaluation), on a pool of their own.

`asyncio.to_thread` shares the loop's default pool, `os.cpu_count() + 4` threads, with
every request's short off-loop work: jobs of minutes filling it held up every parse. Their
own pool is as large, and no larger: a hundred trainings asked at once run six at a time on
2 cores (the others wait their turn), not a hundred threads each holding its training's
memory on two cores.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# Long jobs running at once, as many as asyncio's default pool has threads.
MAX_RUNNING = min(32, (os.cpu_count() or 1) + 4)
_POOL = ThreadPoolExecutor(max_workers=MAX_RUNNING, thread_name_prefix="long-job")


async def run_long_job(name: str, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`func(*args, **kwargs)` on a thread of the long jobs' pool, named `name` meanwhile; its
    result (or error) awaited. Past `MAX_RUNNING` jobs, it waits for one to end.

    As with `asyncio.to_thread`, the thread sees the caller's context variables. A wait
    cancelled before the job starts drops it; once started, it runs to its end, and the
    interpreter waits for it before it exits (the archive a training writes is never cut
    short)."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()

    def work() -> T:
        thread = threading.current_thread()
        idle_name, thread.name = thread.name, name
        try:
            return context.run(func, *args, **kwargs)
        finally:
            thread.name = idle_name

    return await loop.run_in_executor(_POOL, work)
