"""RepeatsCounted: a line's repeats within its window are counted, not logged again."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.outages import RepeatsCounted

logger = logging.getLogger("tests.repeats_counted")


def test_a_window_whose_loop_closed_ends_at_the_next_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop that was to close a window may stop first (a command's `asyncio.run`, a
    test's loop): before, its key stayed for good, and each later line of it was only
    counted, never logged."""
    repeats = RepeatsCounted(logger, 60.0)
    caplog.set_level(logging.WARNING, logger=logger.name)

    async def twice() -> list[bool]:
        return [repeats.log("busy", "busy: %s", "a"), repeats.log("busy", "busy: %s", "b")]

    assert asyncio.run(twice()) == [True, False]
    assert asyncio.run(twice()) == [True, False]
    assert [r.getMessage() for r in caplog.records] == [
        "busy: a",
        "1 more time in the last 60 s: busy",
        "busy: a",
    ]
