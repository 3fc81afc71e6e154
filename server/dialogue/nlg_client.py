"""The client of an external NLG server (`nlg:` in endpoints.yml), with Rasa's request format.

A failure (down, slow, HTTP error, not a message) raises `ActionError`, like a failed action.
"""

from __future__ import annotations

from typing import Any

import httpx

from server.dialogue.http_endpoint import DEFAULT_TIMEOUT, HttpEndpoint, json_content
from server.dialogue.nlg import message_problem
from server.errors import ActionError, InvalidConfig, ResponseTooLarge, first_line
from server.http_clients import retrying_connect_failures
from server.trackers.factory import section_type


def nlg_client_for(config: dict[str, Any] | None) -> NLGClient | None:
    """The client for an `nlg:` section, by its `type` (or `store_type`) as Rasa reads it:
    `callback` (the default) asks the server at `url`; `response` answers from the domain
    (None here, whatever the url). A custom generator class, which Rasa imports, is refused."""
    if not config:
        return None
    config = dict(config)
    section_type(config)  # `store_type` read as `type`, as Rasa reads it
    kind = config.get("type")
    kind = "callback" if kind is None else str(kind)
    if kind.lower() == "response":
        return None
    if kind.lower() != "callback":
        raise InvalidConfig(
            f"type '{kind}' is a custom NLG class, which botserver does not load; use "
            "'callback' (an NLG server at 'url') or 'response' (the domain's responses)"
        )
    if not config.get("url"):
        if "type" in config:
            raise InvalidConfig(f"type '{kind}' needs the NLG server's 'url'")
        return None
    return NLGClient(config)


def nlg_request_body(
    response: str, tracker_state: dict[str, Any], output_channel: str, /, **kwargs: Any
) -> dict[str, Any]:
    """The JSON Rasa POSTs to an NLG server; a `response_id` keyword becomes `id`."""
    response_id = kwargs.pop("response_id", None)
    return {
        "response": response,
        "id": response_id,
        "arguments": kwargs,
        "tracker": tracker_state,
        "channel": {"name": output_channel},
    }


class NLGClient:
    """Asks an external server to write the bot's message for a response name."""

    def __init__(
        self, config: dict[str, Any], *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """Builds the client from `nlg:` (url, token, token_name, headers, basic_auth, timeout)."""
        self.endpoint = HttpEndpoint.from_config(
            config, timeout=DEFAULT_TIMEOUT, transport=transport
        )

    async def generate(
        self, response: str, tracker_state: dict[str, Any], output_channel: str, /, **kwargs: Any
    ) -> dict[str, Any] | None:
        """The message for `response`, or None when the server answers with an empty body."""
        body = nlg_request_body(response, tracker_state, output_channel, **kwargs)
        where = self.endpoint.safe_url
        try:
            # Tried again within `timeout` when it could not connect (a server restarting).
            content = await json_content(body)  # once, whatever the tries
            answer = await retrying_connect_failures(
                lambda: self.endpoint.post(content),
                timeout=self.endpoint.timeout,
                what=f"NLG server: {response} at {where}",
            )
        except (TimeoutError, httpx.TimeoutException):
            raise ActionError(
                f"NLG for '{response}': the NLG server at {where} did not answer within "
                f"{self.endpoint.timeout:g} s"
            ) from None
        except httpx.HTTPError as e:
            reason = first_line(e, limit=200)
            if isinstance(e, httpx.TransportError):  # refused, reset, no such host
                failure = f"cannot reach the NLG server at {where}"
            else:  # an answer encoded in a way it was not asked for
                failure = f"the answer of the NLG server at {where} could not be read"
            raise ActionError(f"NLG for '{response}': {failure} ({reason})") from None
        except ResponseTooLarge as e:
            raise ActionError(f"NLG for '{response}': the NLG server at {where}: {e}") from None
        if answer.status_code >= 300:
            raise ActionError(
                f"NLG for '{response}': the NLG server at {where} answered {await answer.failure()}"
            )
        if not answer.content.strip():
            return None
        try:
            message = await answer.json()
        except ValueError as e:
            raise ActionError(
                f"NLG for '{response}': the NLG server at {where} answered something that is "
                f"not JSON ({e})"
            ) from None
        if message is None:
            return None
        try:
            _check_message(response, message)
        except ActionError as e:
            # Without the frames that hold the answer: it is freed off the loop instead.
            refused = e.with_traceback(None)
        else:
            return message
        answer.let_go_of(message)
        del message
        raise refused

    async def aclose(self) -> None:
        """Closes the pooled HTTP client."""
        await self.endpoint.aclose()


def _check_message(response: str, message: Any) -> None:
    problem = message_problem(message)
    if problem is not None:
        raise ActionError(f"NLG for '{response}': the NLG server answered {problem}")
