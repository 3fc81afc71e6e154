"""The tracker JSON a conversation route answers with, written in a thread when it is long."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from server.trackers.events import OFF_LOOP_EVENTS
from server.trackers.tracker import EventVerbosity, Tracker, event_dicts

# Events encoded per call of the C encoder, which holds the GIL (so the event loop) until it
# returns: 15 MB of events in one call held the loop 0.4 s even from a thread.
_EVENTS_PER_DUMP = 500


async def tracker_response(
    tracker: Tracker,
    verbosity: EventVerbosity,
    around: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> JSONResponse:
    """`tracker.current_state(verbosity)` as a response; `around` puts it in a larger body.

    The tracker may be a hot one that other requests change on the loop meanwhile: the
    thread gets the state without events and a copy of the event list taken on the loop."""
    if verbosity is EventVerbosity.NONE or len(tracker.events) <= OFF_LOOP_EVENTS:
        state = tracker.current_state(verbosity)
        return JSONResponse(state if around is None else around(state))
    state = tracker.current_state(EventVerbosity.NONE)
    events = list(tracker.events)

    def write() -> JSONResponse:
        dicts = event_dicts(events, verbosity)
        # The body around the events, with a placeholder no value can hold, then the events
        # spliced in: the same bytes as JSONResponse writes, in pieces.
        placeholder = f"\x00events {uuid.uuid4().hex}"
        state["events"] = placeholder
        head, tail = _dumps(state if around is None else around(state)).split(
            _dumps(placeholder), 1
        )
        pieces = [head, "["]
        for start in range(0, len(dicts), _EVENTS_PER_DUMP):
            if start:
                pieces.append(",")
            pieces.append(_dumps(dicts[start : start + _EVENTS_PER_DUMP])[1:-1])
        pieces += ["]", tail]
        return _Written("".join(pieces).encode("utf-8"))

    return await asyncio.to_thread(write)


def _dumps(value: Any) -> str:
    """JSON as Starlette's JSONResponse writes it."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    )


class _Written(JSONResponse):
    """A JSON response whose body is already written."""

    def render(self, content: Any) -> bytes:
        return bytes(content)
