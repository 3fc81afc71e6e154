"""RemoteNLU: messages parsed by another server's `POST /model/parse` (`nlu:` in
endpoints.yml), as Rasa's HTTP interpreter does; the model's own pipeline is then unused."""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import httpx

from server.errors import InvalidConfig, InvalidNluData, ResponseTooLarge, first_line
from server.http_bodies import (
    ACCEPT_ENCODING,
    max_response_bytes,
    read_within_sync,
)
from server.http_clients import (
    cookie_jar_keeping_none,
    sync_client,
    within,
)
from server.json_values import loads_untrusted
from server.trackers.incoming import check_parse_data
from server.urls import safe_url, url_as_rasa_reads

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
_WARN_EVERY_SECONDS = 60.0


class RemoteNLU:
    """Parses with a remote Rasa-compatible NLU server. A failure logs an error and gives an
    unparsed message (no intent), never a failed turn."""

    # The HTTP call waits on the network: the processor runs it off the event loop.
    blocking = True
    # The model's own pipeline: what `POST /model/test/intents` evaluates, as in Rasa.
    own: Any = None
    # The keys of `nlu:` read (Rasa 3.6 reads `url` and `token` only; its NLU client sends no
    # `headers`, `basic_auth` or `params`).
    SETTINGS_KEYS = frozenset({"url", "token", "headers", "timeout", "max_response_bytes"})

    def __init__(self, config: dict[str, Any]) -> None:
        url = config.get("url")
        if not isinstance(url, str) or not url.strip():
            raise InvalidConfig("endpoints 'nlu' needs a 'url'")
        # As Rasa's aiohttp reads it: `${NLU_URL}` from a file ending in a line break.
        self.url = url_as_rasa_reads(url).rstrip("/") + "/model/parse"
        try:
            self.safe_url = safe_url(self.url)
        except ValueError as e:  # a port out of range, an unclosed bracket
            shown = safe_url(url, tolerant=True)
            raise InvalidConfig(f"endpoints 'nlu': url '{shown}' is not a URL: {e}") from None
        token = config.get("token")
        self.token = None if token is None else str(token)
        # In the query only when it is truthy, as every endpoint's token (Rasa's `if token`).
        self._query = {"token": str(token)} if token else None
        headers = config.get("headers") or {}
        if not isinstance(headers, dict):
            raise InvalidConfig("endpoints 'nlu': 'headers' must be a mapping")
        try:
            timeout = float(config.get("timeout", DEFAULT_TIMEOUT_SECONDS))
        except (TypeError, ValueError) as e:
            raise InvalidConfig(f"endpoints 'nlu': 'timeout' must be a number: {e}") from e
        self.timeout = timeout
        try:
            self.max_response_bytes = max_response_bytes(config)
        except InvalidConfig as e:
            raise InvalidConfig(f"endpoints 'nlu': {e}") from None
        self._client = sync_client(
            timeout=timeout,
            cookies=cookie_jar_keeping_none(),  # none sent back (Rasa's one session sends them)
            headers={
                "Accept-Encoding": ACCEPT_ENCODING,
                **{str(k): str(v) for k, v in headers.items()},
            },
        )
        self._last_warning = 0.0

    def for_model(self, own: Any) -> RemoteNLU:
        """This client (sharing its connections) in place of a model's own pipeline."""
        bound = copy.copy(self)
        bound.own = own
        return bound

    def parse(
        self, text: str, message_id: str | None = None, metadata: dict | None = None
    ) -> dict[str, Any]:
        # Rasa puts the token in the body only, which a server run with --auth-token refuses:
        # the query carries it too (an empty one is not sent, as no endpoint's is).
        body = {"token": self.token, "text": text, "message_id": message_id}
        try:
            with (
                within(self.timeout) as deadline,
                self._client.stream("POST", self.url, json=body, params=self._query) as response,
            ):
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                content = read_within_sync(response, self.max_response_bytes, deadline)
            parsed = loads_untrusted(content)
            if not isinstance(parsed, dict) or not isinstance(parsed.get("intent"), dict):
                raise ValueError("the answer is no parse result (no 'intent' object)")
            # As a message's parse data from a client is checked: an intent named by a list
            # failed the turn (the message lost), a confidence that is text was stored.
            check_parse_data(parsed, "answer")
        except httpx.DecodingError as e:  # ours: an encoding not read, its text names it
            self._warn(str(e)[:200])
            return _unparsed(text)
        except httpx.ConnectError as e:  # down, or its TLS certificate not trusted: say which
            self._warn(f"{type(e).__name__}: {first_line(e, limit=200)}")
            return _unparsed(text)
        except httpx.TimeoutException:
            self._warn(f"no whole answer within {self.timeout:g} s")
            return _unparsed(text)
        except httpx.HTTPError as e:  # its text may hold the URL, token and all
            self._warn(type(e).__name__)
            return _unparsed(text)
        except (ValueError, ResponseTooLarge, InvalidNluData) as e:
            self._warn(str(e)[:200])
            return _unparsed(text)
        parsed.setdefault("entities", [])
        return parsed

    def _warn(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.error(
                "The NLU server at %s failed (%s); the message is left without an intent",
                self.safe_url,
                reason,
            )


def _unparsed(text: str) -> dict[str, Any]:
    """A message no NLU could parse (Rasa stores an intent named "" instead)."""
    return {"text": text, "intent": {"name": None, "confidence": 0.0}, "entities": []}
