"""The tracker JSON a conversation route answers with, written in a thread when it is long."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from server.dialogue.policies.featurization import cached_lists
from server.trackers.events import EVENTS_PER_PIECE, OFF_LOOP_EVENTS
from server.trackers.freeing import empty_in_pieces
from server.trackers.tracker import EventVerbosity, Tracker, chosen_events

# (Events are encoded EVENTS_PER_PIECE per call of the C encoder, which holds the GIL until
# it returns: 15 MB of events in one call held the loop 0.4 s even from a thread.)

R = TypeVar("R", bound=Response)


def around_prediction(
    scores: dict[str, Any], tracker: Tracker
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A predict route's body around the tracker's state: as Rasa's, the prediction takes up
    a pending followup action (in the domain or not), so the state it answers with has none;
    the conversation itself keeps it (it is an event), and the next turn runs it."""
    taken = bool(tracker.followup_action)

    def around(state: dict[str, Any]) -> dict[str, Any]:
        if taken:
            state["followup_action"] = None
        return {**scores, "tracker": state}

    return around


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
        chosen = chosen_events(events, verbosity)
        # The body around the events, with a placeholder no value can hold, then the events
        # spliced in: the same bytes as JSONResponse writes, in pieces. Each piece's dicts
        # are freed before the next is made: 100,000 event dicts freed at once held the GIL
        # 17 ms, and one 10 MB string encoded at once as long.
        placeholder = f"\x00events {uuid.uuid4().hex}"
        state["events"] = placeholder
        head, tail = _dumps(state if around is None else around(state)).split(
            _dumps(placeholder), 1
        )
        pieces = [head.encode("utf-8"), b"["]
        for start in range(0, len(chosen), EVENTS_PER_PIECE):
            if start:
                pieces.append(b",")
            dicts = [e.as_dict() for e in chosen[start : start + EVENTS_PER_PIECE]]
            pieces.append(_dumps(dicts)[1:-1].encode("utf-8"))
        pieces += [b"]", tail.encode("utf-8")]
        # The copy taken on the loop may hold the last references to the events (a tracker
        # of the request's own, whose list `freed_after_sending` empties): emptied here, they
        # are not all freed at once on the loop when the request ends (33 ms).
        empty_in_pieces(events)
        return _Written(b"".join(pieces))

    return await asyncio.to_thread(write)


def freed_after_sending(
    response: R, trackers: Iterable[Tracker] = (), lists: Iterable[list[Any]] = ()
) -> R:
    """`response`, which after it is sent frees these trackers' events and state caches and
    these lists (all garbage by then), a piece at a time in a thread: a request that dropped
    100,000 events and their parsed body on the loop held it 40-60 ms."""
    held = [held for tracker in trackers for held in (tracker.events, *cached_lists(tracker))]
    held += lists
    if sum(len(items) for items in held) > OFF_LOOP_EVENTS:
        response.background = BackgroundTask(empty_in_pieces, *held)
    return response


def _dumps(value: Any) -> str:
    """JSON as Starlette's JSONResponse writes it."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    )


class _Written(JSONResponse):
    """A JSON response whose body is already written."""

    def render(self, content: Any) -> bytes:
        return bytes(content)
