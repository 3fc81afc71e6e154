"""Rasa's query-parameter conventions: the first of repeated values (an empty one is absent),
`include_events`, booleans and numbers.

Only `true` (any case) is true, as in Rasa, and a value neither true nor false is a 400; so
is an `until` that is no number; an unparsable count falls back to the default with a warning,
as in Rasa; a bad `include_events` is Rasa's 400 with details.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams

from server.api.errors import bad_request
from server.trackers.tracker import EventVerbosity

logger = logging.getLogger(__name__)

_VERBOSITIES = ", ".join(v.value for v in EventVerbosity)


class _FirstValues(QueryParams):
    """Query parameters whose single value is the first given that is not empty, as Rasa
    reads them: Sanic's `request.args` drops blank values, so `?include_events=` is absent
    there (the default), and so is `?save_to_default_model_directory=` (true). Starlette's
    is the last value, blank or not. `getlist` still has them all."""

    def __init__(self, query_string: bytes) -> None:
        super().__init__(query_string)
        first: dict[str, str] = {}
        for key, value in self.multi_items():
            if value:
                first.setdefault(key, value)
        self._dict = first


class _FirstValuesRequest(Request):
    @property
    def query_params(self) -> QueryParams:
        if not hasattr(self, "_first_values"):
            self._first_values = _FirstValues(self.scope["query_string"])
        return self._first_values


class FirstValueRoute(APIRoute):
    """The route class of every router: `?all_sessions=true&all_sessions=false` is true,
    `?include_events=ALL&include_events=NONE` is ALL and `?include_events=` is absent, in the
    parameters FastAPI passes and in `request.query_params`, as in Rasa."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def first_values(request: Request) -> Response:
            return await handler(_FirstValuesRequest(request.scope, request.receive))

        return first_values


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


def time_arg(name: str, value: str | None) -> float | None:
    """A Unix timestamp query parameter (`until`); absent or empty is None.

    Rasa logs a warning for a value that is no number and answers as if it were absent: for
    `until`, today's tracker instead of the one asked for, which a client cannot tell apart.
    Here it is a 400 naming the parameter (NaN too: no event is before it, so it would answer
    an empty conversation). An infinity is a number, as in Rasa.
    """
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number != number:
        raise bad_request(
            f"Invalid parameter value for '{name}'. Should be a Unix timestamp in seconds, "
            "such as 1700000000.5.",
            name,
            "query",
        )
    return number


def int_arg(name: str, value: str | None, default: int | None = None) -> int | None:
    """An integer query parameter; a value that is no integer falls back to `default` with
    a warning in the log, as in Rasa."""
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        logger.warning(
            "Query parameter '%s': %r is not an integer; using the default (%s) instead.",
            name,
            value[:100],
            default,
        )
        return default
