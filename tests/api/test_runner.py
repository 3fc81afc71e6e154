"""The server's life in one process (`server.api.runner`): what its stop says about the
turns still running."""

from __future__ import annotations

import asyncio

import pytest

from server.api import runner
from server.api.shutdown import TurnsInFlight


class Turns:
    """Stands in for the processor: its turns wait until cancelled, counted as it counts."""

    def __init__(self) -> None:
        self.turns_in_flight = 0
        self.on_turns_idle = lambda: None

    async def handle_message(self) -> None:
        self.turns_in_flight += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.turns_in_flight -= 1


async def test_a_stop_with_no_time_left_does_not_say_it_waits_0_s_for_the_turns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Uvicorn's wait for the requests used the graceful period. Before: "Waiting up to 0 s
    for 2 turns in flight to finish", a wait that was none."""
    monkeypatch.setattr(runner, "GRACEFUL_SHUTDOWN_SECONDS", 0.3)
    processor = Turns()
    turns = TurnsInFlight()
    turns.track(processor)
    running = [asyncio.create_task(processor.handle_message()) for _ in range(2)]
    await asyncio.sleep(0)
    with caplog.at_level("INFO", logger="server.api.runner"):
        await runner._finish_turns(turns)
    assert all(task.cancelled() for task in running)
    said = [r.getMessage() for r in caplog.records if r.name == "server.api.runner"]
    assert said[0] == (
        "No time left of the graceful period for 2 turns in flight: they are cancelled"
    ), said
    assert said[1].startswith("2 turns still running at the end of the graceful"), said
