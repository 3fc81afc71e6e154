"""Long blocking jobs (a training, an evaluation), each on a thread of its own.

`asyncio.to_thread` shares the loop's default pool, `os.cpu_count() + 4` threads, with
every request's short off-loop work: jobs of minutes filling it held up every parse.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def run_long_job(name: str, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`func(*args, **kwargs)` on a new thread named `name`, its result (or error) awaited.

    As with `asyncio.to_thread`, the thread sees the caller's context variables, and a
    cancelled wait does not stop it: it runs to its end, and the interpreter waits for it
    before it exits (the archive a training writes is never cut short)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = context.run(func, *args, **kwargs)
        except BaseException as exc:  # raised again where the job is awaited
            error = exc
        try:
            loop.call_soon_threadsafe(_settle, done, result, error)
        except RuntimeError:  # the loop closed meanwhile: no one awaits the job any more
            pass

    threading.Thread(target=work, name=name).start()
    return await done


def _settle(done: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)  # type: ignore[arg-type]
