"""Rasa's query-parameter conventions: `include_events`, booleans and numbers.

Only `true` (any case) is true, as in Rasa, and a value neither true nor false is a 400; an
unparsable number falls back to the default rather than failing the request; a bad
`include_events` is Rasa's 400 with details.
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


# What Rasa reads as false and a client may mean so; Rasa reads anything but `true` as false.
_FALSE_WORDS = frozenset({"false", "0", "no", "off", ""})


def bool_arg(name: str, value: str | None, default: bool = False) -> bool:
    """A boolean query parameter as Rasa reads it: `true` (any case) is true, `false`, `0`,
    `no`, `off` and an empty value are false.

    Rasa reads every other value as false too; here it is a 400 naming the parameter: a
    client sending `?all_sessions=1` or `?stream=yes` means true, and silently reading false
    would answer something else (one session, no stream, no side effects, no training).
    """
    if value is None:
        return default
    word = value.strip().lower()
    if word == "true":
        return True
    if word in _FALSE_WORDS:
        return False
    raise bad_request(
        f"Invalid parameter value for '{name}'. Should be true or false.", name, "query"
    )


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
