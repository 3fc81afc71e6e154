"""Rasa's query-parameter conventions: `include_events`, booleans and numbers.

Only `true` (any case) is true, as in Rasa; an unparsable number falls back to the default
rather than failing the request; a bad `include_events` is Rasa's 400 with details.
"""

from __future__ import annotations

from server.api.errors import bad_request
from server.trackers.tracker import EventVerbosity

_VERBOSITIES = ", ".join(v.value for v in EventVerbosity)


def event_verbosity(
    value: str | None, default: EventVerbosity = EventVerbosity.AFTER_RESTART
) -> EventVerbosity:
    """`include_events` as an EventVerbosity; raises ApiError 400 for an unknown value."""
    if value is None:
        return default
    try:
        return EventVerbosity(value.strip().upper())
    except ValueError:
        raise bad_request(
            f"Invalid parameter value for 'include_events'. Should be one of {_VERBOSITIES}",
            "include_events",
            "query",
        ) from None


def bool_arg(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.strip().lower() == "true"


def float_arg(value: str | None, default: float | None = None) -> float | None:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    # NaN and infinities are not times or sizes; treat them as absent.
    return number if number == number and abs(number) != float("inf") else default


def int_arg(value: str | None, default: int | None = None) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default
