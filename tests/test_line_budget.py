"""The line counter itself (tests/line_budget.py): a bound that cannot fail is no bound."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import pytest

from tests import line_budget
from tests.line_budget import LineBudgetExceeded, lines_run_in


def _loop(times: int) -> int:
    total = 0
    for i in range(times):
        total += i
    return total


def test_a_budget_stops_work_that_would_not_end() -> None:
    with pytest.raises(LineBudgetExceeded):
        lines_run_in(__file__, lambda: _loop(10**12), 1_000)


def test_lines_are_counted_in_proportion_to_the_work() -> None:
    assert lines_run_in(__file__, lambda: _loop(100)) > lines_run_in(__file__, lambda: _loop(10))


def test_work_that_runs_no_line_of_the_module_is_an_error() -> None:
    # A module path that is not the one its code was compiled from (a symlink, a copy) counts
    # no line: a budget, or `many == few`, would hold whatever the work did. Before, 0.
    with pytest.raises(AssertionError, match="no line of"):
        lines_run_in(line_budget.__file__ + "-elsewhere.py", lambda: _loop(10**3))


def test_the_tracer_that_ran_before_runs_after() -> None:
    # coverage (or a debugger) traces with sys.settrace: before, counting lines switched it
    # off for the rest of the session.
    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        return None

    before = sys.gettrace()
    sys.settrace(tracer)
    try:
        lines_run_in(__file__, lambda: _loop(10))
        assert sys.gettrace() is tracer
        with pytest.raises(LineBudgetExceeded):
            lines_run_in(__file__, lambda: _loop(10**12), 100)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(before)
