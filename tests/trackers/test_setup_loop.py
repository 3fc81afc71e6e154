"""The set-up loop (server.trackers.setup_loop): work given up by its caller is cancelled
there, and the caller waits for its clean-up only as long as the process's stop allows."""

from __future__ import annotations

import asyncio
import time

from server.trackers import setup_loop
from server.trackers.setup_loop import on_setup_loop, stop_by


async def _given_up(cleaning: float, cleaned: list[bool]) -> None:
    """A caller that gives up on set-up work whose clean-up takes `cleaning` s."""
    started = asyncio.Event()
    caller = asyncio.get_running_loop()

    async def work() -> None:
        caller.call_soon_threadsafe(started.set)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(cleaning)  # (a connection closed, its session ended)
            cleaned.append(True)
            raise

    waiting = asyncio.create_task(on_setup_loop(work))
    await started.wait()
    waiting.cancel()
    try:
        await waiting
    except asyncio.CancelledError:
        pass


async def test_a_given_up_set_up_is_waited_for_until_it_has_cleaned_up() -> None:
    cleaned: list[bool] = []
    await _given_up(0.3, cleaned)
    assert cleaned == [True]


async def test_a_stop_with_no_time_left_does_not_wait_for_the_clean_up() -> None:
    """The stop's graceful period used up (a migration on a database fallen silent): the
    store's close returned CLEAN_UP_SECONDS (2 s) past the period, in vain (a silent
    database ends nothing). Now the wait is what is left of the period."""
    cleaned: list[bool] = []
    stop_by(time.monotonic() - 1)
    try:
        await _given_up(setup_loop.CLEAN_UP_SECONDS / 4, cleaned)
        assert cleaned == []  # returned before the clean-up ended
    finally:
        stop_by(None)
    # The clean-up goes on, on the set-up loop: waited for (its 0.5 s pause can end later on a
    # loaded host than any fixed pause here allows).
    for _ in range(600):
        if cleaned:
            break
        await asyncio.sleep(0.05)
    assert cleaned == [True]
