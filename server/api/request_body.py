"""Reading a raw JSON request body with Rasa's 400 for empty or malformed input.

For routes that take free-form JSON (events, parse, predict...) instead of a pydantic model,
which also keeps body parsing after the auth dependency.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from server.api.errors import ApiError, bad_request
from server.json_values import OFF_LOOP_JSON_BYTES, TooDeep, loads_untrusted

# For a `Content-Encoding: gzip` and for a .tar.gz sent as the body alike: the body cannot
# tell which (a model archive uploaded to PUT /model needs no "send it uncompressed").
COMPRESSED_MESSAGE = (
    "The request body is gzip-compressed: no route decodes a Content-Encoding or reads an "
    "archive. Send the JSON or YAML itself, uncompressed; a model archive is loaded with "
    "PUT /model naming its path on the server ('model_file') or its URL ('model_server')."
)


# JSON nested deeper than `MAX_DEPTH` is valid JSON the server does not read: said as such,
# not as a syntax error.
TOO_DEEP_MESSAGE = "The JSON body is nested too deeply."


def refuse_compressed(raw: bytes) -> None:
    """ApiError 415 when `raw` is gzip-compressed (its first two bytes), which no route
    decodes, nor does Rasa; for a body that did not read, so that the client hears why
    rather than which byte did not decode."""
    if raw.startswith(b"\x1f\x8b"):
        raise ApiError(415, "UnsupportedMediaType", COMPRESSED_MESSAGE)


def parse_json(raw: bytes) -> Any:
    """Parse `raw` as JSON or raise ApiError 400 (never a 500, never FastAPI's 422); 415 for
    a compressed body."""
    try:
        return loads_untrusted(raw)
    except TooDeep:
        raise ApiError(400, "BadRequest", TOO_DEEP_MESSAGE) from None
    except ValueError as exc:  # UnicodeDecodeError included
        refuse_compressed(raw)
        raise ApiError(
            400,
            "BadRequest",
            f"Failed when parsing body as json: {exc}",
            {"in": "body"},
        ) from None


async def read_json_body(request: Request, empty_message: str | None = None) -> Any:
    """The request's JSON body, or None when it is empty and `empty_message` is None.

    With `empty_message`, an empty body is a 400 `BadRequest` with that message, as Rasa's
    `validate_request_body` answers.
    """
    raw = await request.body()
    if not raw.strip():
        if empty_message is not None:
            raise ApiError(400, "BadRequest", empty_message)
        return None
    return await parse_json_off_loop(raw)


async def parse_json_off_loop(raw: bytes) -> Any:
    """`parse_json`, in a worker thread when `raw` is large enough to hold up the loop."""
    if len(raw) > OFF_LOOP_JSON_BYTES:
        return await asyncio.to_thread(parse_json, raw)
    return parse_json(raw)


async def read_json_object(request: Request, empty_message: str) -> dict[str, Any]:
    """The request's JSON body, which must be an object: otherwise a 400 `BadRequest`."""
    body = await read_json_body(request, empty_message)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", "body", "body")
    return body
