"""The server's life in one process (`server.api.runner`): what its stop says about the
turns still running."""

from __future__ import annotations

import asyncio

import pytest

from server.api import runner
from server.api.shutdown import TurnsInFlight


class Turns:
    """Stands in for the processor: its turns last `seconds` (or until cancelled), counted
    as it counts them."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds
        self.turns_in_flight = 0
        self.on_turns_idle = lambda: None

    async def handle_message(self) -> None:
        self.turns_in_flight += 1
        try:
            if self.seconds is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(self.seconds)
        finally:
            self.turns_in_flight -= 1
            if not self.turns_in_flight:
                self.on_turns_idle()


async def finish_turns(processor: Turns, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Two turns running as the stop's lifespan ends; what the runner said."""
    turns = TurnsInFlight()
    turns.track(processor)
    running = [asyncio.create_task(processor.handle_message()) for _ in range(2)]
    await asyncio.sleep(0)
    with caplog.at_level("INFO", logger="server.api.runner"):
        await runner._finish_turns(turns)
    await asyncio.wait(running)
    return [r.getMessage() for r in caplog.records if r.name == "server.api.runner"]


async def test_a_stop_with_no_time_left_does_not_say_it_waits_0_s_for_the_turns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Uvicorn's wait for the requests used the graceful period. Before: "Waiting up to 0 s
    for 2 turns in flight to finish", a wait that was none."""
    monkeypatch.setattr(runner, "GRACEFUL_SHUTDOWN_SECONDS", 0.0)
    said = await finish_turns(Turns(), caplog)
    assert said[0] == (
        "No time left of the graceful period for 2 turns in flight: they are cancelled"
    ), said
    assert said[1].startswith("2 turns still running at the end of the graceful"), said


async def test_turns_get_what_is_left_of_the_period_under_a_second_too(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """0.3 s left: the turns (0.05 s) finish in it, and are stored. Before, the wait was said
    as "Waiting up to 0 s"."""
    monkeypatch.setattr(runner, "GRACEFUL_SHUTDOWN_SECONDS", 0.3)
    said = await finish_turns(Turns(seconds=0.05), caplog)
    assert said == ["Waiting up to 300 ms for 2 turns in flight to finish"], said


async def test_half_a_second_left_is_said_in_ms_not_as_0_s(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ "%.0f" rounds 0.5 to even: before, "Waiting up to 0 s" for the half second left."""
    monkeypatch.setattr(runner, "GRACEFUL_SHUTDOWN_SECONDS", 0.5)
    said = await finish_turns(Turns(seconds=0.05), caplog)
    assert said == ["Waiting up to 500 ms for 2 turns in flight to finish"], said
