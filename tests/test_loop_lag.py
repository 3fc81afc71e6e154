"""The loop-hold probe itself (tests/loop_lag.py): what it leaves out must not hide a hold."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.loop_lag import _CoreWait, loop_hold

HAS_SCHEDSTAT = os.path.exists("/proc/thread-self/schedstat")


def _held(calls: int) -> float:
    """One C call that keeps the GIL the whole time (sum over a range checks for no switch
    request), and its CPU seconds."""
    started = time.thread_time()
    sum(range(calls))
    return time.thread_time() - started


async def test_a_thread_holding_the_gil_in_one_c_call_is_counted_whole() -> None:
    async with loop_hold() as hold:
        held = await asyncio.to_thread(_held, 10_000_000)
    assert held > 0.02, held  # a hold worth measuring on this machine
    # Counted less only the time the loop thread waited for a core meanwhile: a few ms on a
    # busy machine, not the hold.
    assert hold.busiest >= held * 0.6, (held, hold)
    assert hold.loop_busiest < held / 2, hold  # the hold was not the loop's own work


@pytest.mark.skipif(not HAS_SCHEDSTAT, reason="the kernel has no /proc/thread-self/schedstat")
def test_the_wait_for_a_core_is_read_from_the_scheduler() -> None:
    """A thread sharing its one core with a process that never sleeps waits for it about half
    the time; the reading says so, and says nothing of a thread that ran alone."""
    hog = subprocess.Popen(
        [sys.executable, "-c", "import os\nos.sched_setaffinity(0, {0})\nwhile True: pass"]
    )
    waits: list[float] = []

    def spin_on_core_zero() -> None:
        os.sched_setaffinity(0, {0})  # this thread only
        core_wait = _CoreWait()
        try:
            before = core_wait.seconds()
            end = time.perf_counter() + 0.4
            while time.perf_counter() < end:
                pass
            waits.append(core_wait.seconds() - before)
        finally:
            core_wait.close()

    try:
        time.sleep(0.1)  # the hog on its core
        thread = threading.Thread(target=spin_on_core_zero)
        thread.start()
        thread.join()
    finally:
        hog.kill()
        hog.wait()
    assert 0.08 < waits[0] < 0.4, waits
