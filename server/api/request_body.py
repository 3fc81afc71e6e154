"""Reading a raw JSON request body with Rasa's 400 for empty or malformed input.

For routes that take free-form JSON (events, parse, predict...) instead of a pydantic model,
which also keeps body parsing after the auth dependency.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request

from server.api.errors import ApiError

# Parsing a body this large takes long enough to hold up other requests.
_PARSE_OFF_LOOP_BYTES = 256 * 1024


def parse_json(raw: bytes) -> Any:
    """Parse `raw` as JSON or raise ApiError 400 (never a 500, never FastAPI's 422)."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            400,
            "BadRequest",
            f"Failed when parsing body as json: {exc}",
            {"in": "body"},
        ) from None
    except RecursionError:
        raise ApiError(400, "BadRequest", "The JSON body is nested too deeply.") from None


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
    if len(raw) > _PARSE_OFF_LOOP_BYTES:
        return await asyncio.to_thread(parse_json, raw)
    return parse_json(raw)
