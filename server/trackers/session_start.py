"""Where a conversation's current session begins, computed on Rasa event dicts.

The rule matches `Tracker.current_session_events`: a session begins at the last
`action_session_start` action, or at a `session_started` event not directly preceded by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ACTION_SESSION_START = "action_session_start"


def is_session_start_action(event: dict[str, Any]) -> bool:
    return event.get("event") == "action" and event.get("name") == ACTION_SESSION_START


def latest_session_start(events: Sequence[dict[str, Any]], search_from: int = 0) -> int | None:
    """Index of the last session start at or after `search_from`, or None if there is none.

    Only `events[search_from:]` is scanned (from the end), so callers that keep a session
    in memory can look at just the events they have not seen yet.
    """
    for i in range(len(events) - 1, search_from - 1, -1):
        event = events[i]
        kind = event.get("event")  # read once: this runs on every event a turn appends
        if kind == "action":
            if event.get("name") == ACTION_SESSION_START:
                return i
        elif kind == "session_started":
            if i > 0 and is_session_start_action(events[i - 1]):
                return i - 1
            return i
    return None


def session_start_after(
    events: Sequence[dict[str, Any]], before: int, found: int | None
) -> int | None:
    """`latest_session_start(events, before)`, given `found`: the same search over
    `events[before:]` alone (made before, in a thread, on the new events only)."""
    if found is None:
        return None
    if (
        found == 0
        and before > 0
        and events[before].get("event") == "session_started"
        and is_session_start_action(events[before - 1])
    ):
        return before - 1
    return before + found
