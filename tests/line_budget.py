"""Counting the Python lines a piece of work runs in one module: a bound on work done that
does not depend on the host's speed, and that stops work which would never end."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any


class LineBudgetExceeded(AssertionError):
    """The work ran more lines of the module than its budget allows."""


def lines_run_in(module_file: str, work: Callable[[], Any], budget: int | None = None) -> int:
    """How many lines of `module_file` run while `work()` runs (on this thread); past
    `budget` lines the work is stopped with LineBudgetExceeded. Work that runs none is an
    AssertionError (`module_file` is not the path its code was compiled from: no bound would
    ever fail). A tracer set before (coverage's, a debugger's) is set again after."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if frame.f_code.co_filename != module_file:
            return None
        if event == "line":
            count += 1
            if budget is not None and count > budget:
                raise LineBudgetExceeded(f"more than {budget:,} lines of {module_file} ran")
        return trace

    before = sys.gettrace()
    sys.settrace(trace)
    try:
        work()
    finally:
        sys.settrace(before)
    if count == 0:
        raise AssertionError(f"no line of {module_file} ran: is it the module's own path?")
    return count
