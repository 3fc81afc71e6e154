"""The client of a custom action server (`action_endpoint:`), speaking Rasa's webhook protocol.

Every failure becomes `ActionError` (or `ActionRejected` for an HTTP 400 naming the action),
with a one-line message and no token in it; the processor decides what the user sees.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import httpx

from server.dialogue.http_endpoint import Answer, HttpEndpoint, json_content, one_line, told
from server.dialogue.nlg import message_problem
from server.errors import (
    ActionError,
    ActionRejected,
    InvalidEvent,
    ResponseTooLarge,
    first_line,
    how_many,
)
from server.http_clients import retrying_connect_failures
from server.trackers.events import BotUttered, event_sent
from server.trackers.incoming import check_incoming_events

logger = logging.getLogger(__name__)

# The Rasa version we speak for; rasa-sdk warns when it does not recognise it.
RASA_PROTOCOL_VERSION = "3.6.21"
DEFAULT_ACTION_TIMEOUT = 10.0
# rasa-sdk's "domain missing" status: the action needs a domain it has not cached.
DOMAIN_MISSING = 449
# The most events, and the most responses, one answer may hold: each is checked, applied and
# sent on the event loop (100,000 held every other conversation up for about a second).
MAX_ANSWER_ITEMS = 1_000


def domain_digest(domain: dict[str, Any]) -> str:
    """A stable fingerprint of the domain, so an action server can cache it."""
    canonical = json.dumps(domain, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_action_result(action_name: str, result: Any) -> dict[str, list[dict[str, Any]]]:
    """Checks an action server's answer has Rasa's shape and returns its events and responses."""
    if not isinstance(result, dict):
        raise ActionError(
            f"Custom action '{action_name}': the action server answered "
            f"{type(result).__name__}, not a JSON object with 'events' and 'responses'"
        )
    # null is none, as a missing key is (Rasa's schema refuses it); {}, false or 0 is a mistake
    events = _listed(action_name, result, "events")
    responses = _listed(action_name, result, "responses")
    if len(events) > MAX_ANSWER_ITEMS or len(responses) > MAX_ANSWER_ITEMS:
        raise ActionError(
            f"Custom action '{action_name}': the action server answered "
            f"{how_many(len(events), 'event')} and {how_many(len(responses), 'response')}, "
            f"more than the {MAX_ANSWER_ITEMS} of each a turn takes"
        )
    if any(isinstance(event, dict) and event.get("event") == "topic" for event in events):
        # Rasa 1's TopicSet: Rasa reads a stored one as nothing, with a warning (from an
        # action server, its answer schema refuses it and the action fails).
        logger.warning(
            "Custom action '%s' returned a 'topic' event, a Rasa 1 event that no longer "
            "means anything: ignored",
            action_name,
        )
        events = [e for e in events if not (isinstance(e, dict) and e.get("event") == "topic")]
    for index, event in enumerate(events):
        try:
            # Its NLU data too: an entity without a value would be stored, and every later
            # answer about the conversation would break Rasa's schema.
            parsed = event_sent(event)
            check_incoming_events([parsed])
        except InvalidEvent as e:
            raise ActionError(
                f"Custom action '{action_name}': event {index} is invalid: {e}"
            ) from None
        problem = message_problem(parsed.message()) if isinstance(parsed, BotUttered) else None
        if problem is not None:
            raise ActionError(
                f"Custom action '{action_name}': event {index} is a bot message whose {problem}"
            )
    for index, response in enumerate(responses):
        problem = _response_problem(response)
        if problem is not None:
            raise ActionError(f"Custom action '{action_name}': response {index} is {problem}")
    return {"events": events, "responses": responses}


def _listed(action_name: str, result: dict[str, Any], key: str) -> list[Any]:
    """The answer's list under `key`: none when it is missing or null."""
    value = result.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ActionError(
            f"Custom action '{action_name}': '{key}' must be a list, not {type(value).__name__}"
        )
    return value


def _response_problem(response: Any) -> str | None:
    """Why a `responses` entry is no bot message (a message, or a domain response's name
    with its template arguments), or None."""
    if not isinstance(response, dict):
        return "not a JSON object"
    for key in ("response", "template"):
        name = response.get(key)
        if name is not None and not isinstance(name, str):
            return f"invalid: '{key}' must be the name of a response, not {type(name).__name__}"
    problem = message_problem(response)
    return None if problem is None else f"invalid: {problem}"


class ActionServerClient:
    """Runs custom actions on a remote action server (rasa-sdk or anything speaking its API)."""

    def __init__(
        self, config: dict[str, Any], *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """Builds the client from the `action_endpoint:` section of endpoints.yml.

        Keys: url, token, token_name, params, headers, basic_auth, cafile, timeout (seconds,
        default 10) and enable_selective_domain.
        """
        self.endpoint = HttpEndpoint.from_config(
            config, timeout=DEFAULT_ACTION_TIMEOUT, transport=transport
        )
        self.enable_selective_domain = bool(config.get("enable_selective_domain"))
        # The last domain digested, and its digest: a model's domain JSON is one object that
        # does not change (`Domain.as_dict`), and writing it out sorted to digest it took
        # 11 ms of the event loop at each call for a 190 KB domain.
        self._digested: tuple[dict[str, Any], str] | None = None

    def request_body(
        self,
        action_name: str,
        sender_id: str,
        tracker_state: dict[str, Any],
        domain: dict[str, Any] | None,
        action_properties: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON Rasa sends for one action call."""
        body: dict[str, Any] = {
            "next_action": action_name,
            "sender_id": sender_id,
            "tracker": tracker_state,
        }
        send_domain = not self.enable_selective_domain or bool(
            (action_properties or {}).get("send_domain")
        )
        if send_domain and domain is not None:
            body["domain"] = domain
        if self.enable_selective_domain and domain is not None:
            # rasa-sdk >= 3.7 caches the domain by this digest instead of needing it each call.
            body["domain_digest"] = self._digest(domain)
        body["version"] = RASA_PROTOCOL_VERSION
        return body

    def _digest(self, domain: dict[str, Any]) -> str:
        if self._digested is None or self._digested[0] is not domain:
            self._digested = (domain, domain_digest(domain))
        return self._digested[1]

    async def run(
        self,
        action_name: str,
        sender_id: str,
        tracker_state: dict[str, Any],
        domain: dict[str, Any] | None,
        action_properties: dict[str, Any] | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Runs `action_name` and returns `{"events": [...], "responses": [...]}`.

        Raises ActionRejected on an HTTP 400 naming the action, ActionError on anything else.
        """
        body = self.request_body(action_name, sender_id, tracker_state, domain, action_properties)
        # One deadline for the call, the request a caching rasa-sdk asks for again included.
        deadline = asyncio.get_running_loop().time() + self.endpoint.timeout
        response = await self._post(action_name, body, deadline)
        if response.status_code == DOMAIN_MISSING and domain is not None and "domain" not in body:
            # A newer rasa-sdk without the domain in its cache: it asks once for the domain.
            response = await self._post(action_name, {**body, "domain": domain}, deadline)
        return await self._read(action_name, response)

    async def _post(self, action_name: str, body: dict[str, Any], deadline: float) -> Answer:
        where = self.endpoint.safe_url
        timeout = self.endpoint.timeout
        try:
            # httpx's timeout is per phase; this bounds the whole call, trickling bodies
            # included, and its tries when the server could not be reached (nothing was sent:
            # the action does not run twice).
            content = await json_content(body)  # once, whatever the tries
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            response = await retrying_connect_failures(
                lambda: self.endpoint.post(content),
                timeout=left,
                what=f"action server: {action_name} at {where}",
            )
        except (TimeoutError, httpx.TimeoutException):
            raise ActionError(
                f"Custom action '{action_name}': the action server at {where} "
                f"did not answer within {timeout:g} s"
            ) from None
        except httpx.ConnectError as e:
            raise ActionError(
                f"Custom action '{action_name}': cannot reach the action server at {where} "
                f"({first_line(e, limit=200)})"
            ) from None
        except httpx.HTTPError as e:
            raise ActionError(
                f"Custom action '{action_name}': request to the action server at {where} "
                f"failed ({first_line(e, limit=200)})"
            ) from None
        except ResponseTooLarge as e:
            raise ActionError(
                f"Custom action '{action_name}': the action server at {where}: {e}"
            ) from None
        return response

    async def _read(self, action_name: str, response: Answer) -> dict[str, list[dict[str, Any]]]:
        where = self.endpoint.safe_url
        if response.status_code == 400:
            body = await response.json_or_none()
            if isinstance(body, dict) and body.get("action_name"):
                error = body.get("error")
                rejected = ActionRejected(
                    one_line(told(body["action_name"])), one_line(told(error)) if error else None
                )
                response.let_go_of(body)
                del body
                raise rejected
            response.let_go_of(body)
            del body
        if response.status_code == 404:
            raise ActionError(
                f"Custom action '{action_name}': the action server at {where} has no such "
                f"action ({await response.failure()})"
            )
        if response.status_code >= 300:
            raise ActionError(
                f"Custom action '{action_name}': the action server at {where} answered "
                f"{await response.failure()}"
            )
        try:
            result = await response.json()
        except ValueError as e:
            raise ActionError(
                f"Custom action '{action_name}': the action server at {where} answered "
                f"something that is not JSON ({first_line(e, limit=200)})"
            ) from None
        try:
            return validate_action_result(action_name, result)
        except ActionError as e:
            # Without the frames that hold the answer (its own, and those of an error it
            # was raised for, `from None`): the answer is freed off the loop instead.
            refused = e.with_traceback(None)
            refused.__context__ = None
        response.let_go_of(result)
        del result
        raise refused

    async def aclose(self) -> None:
        """Closes the pooled HTTP client."""
        await self.endpoint.aclose()
