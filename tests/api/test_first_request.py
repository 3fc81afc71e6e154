"""The first request after startup costs the event loop no more than the next ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.loop_lag import loop_hold


@pytest.mark.timing
async def test_the_first_request_after_startup_does_not_hold_the_loop(
    make_client: Callable[..., Any],
) -> None:
    """Before, FastAPI worked out every route's parameters and dependencies at the first
    request the app served (its first turn after a restart, whatever the conversation):
    19 ms of the loop thread's CPU (moodbot's routes), every other conversation waiting.
    Now that is done in a thread at startup."""
    client = await make_client()
    async with loop_hold() as hold:
        response = await client.post(
            "/webhooks/rest/webhook", json={"sender": "alice", "message": "hello"}
        )
    assert response.status_code == 200 and response.json()
    assert hold.loop_busiest < 0.009 * hold.slowness, (
        hold.loop_busiest
    )  # 19 ms before; now 2.6-2.9 ms
