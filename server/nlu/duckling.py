"""DucklingEntityExtractor: asks a Duckling server for dates, numbers, amounts...
An unreachable or failing Duckling gives no entities and a warning, never an error."""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from server.errors import InvalidConfig, ResponseTooLarge, first_line
from server.http_bodies import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_RESPONSE_BYTES,
    read_within_sync,
)
from server.json_values import loads_untrusted
from server.nlu.message import Message
from server.nlu.params import MAX_SYNC_TIMEOUT_SECONDS, number
from server.urls import safe_url, url_as_rasa_reads

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

_WARN_EVERY_SECONDS = 60.0
# After a failure, skip Duckling for a while so a dead server cannot slow every parse.
_RETRY_AFTER_SECONDS = 5.0
# The largest answer read, decompressed (a message's matches take a few kilobytes).
MAX_ANSWER_BYTES = DEFAULT_MAX_RESPONSE_BYTES


def _value(match: dict[str, Any]) -> Any:
    value = match["value"]
    if value.get("type") == "interval":
        return {
            "to": (value.get("to") or {}).get("value"),
            "from": (value.get("from") or {}).get("value"),
        }
    return value.get("value")


def _match_problem(match: Any, text: str) -> str | None:
    """Why `match` is not a match of Duckling's shape for `text` (Rasa reads `dim`, `start`,
    `end` and the `value` object of each), or None. Before, a `value` that was no object
    failed the parse, and the turn of every message with it."""
    if not isinstance(match, dict):
        return f"a match is {type(match).__name__}, not an object"
    if not isinstance(match.get("dim"), str):
        return "a match has no dimension name ('dim')"
    start, end = match.get("start"), match.get("end")
    if not _is_position(start) or not _is_position(end):
        return "a match's 'start' and 'end' are not character positions"
    if not 0 <= start <= end <= len(text):
        return f"a match's 'start' and 'end' ({start}, {end}) are not within the text"
    body = match.get("body", match.get("text"))
    if body is not None and not isinstance(body, str):
        return "a match's 'body' is not text"
    value = match.get("value")
    if not isinstance(value, dict):
        return "a match's 'value' is not an object"
    if value.get("type") == "interval" and not all(
        isinstance(value.get(side), dict | None) for side in ("to", "from")
    ):
        return "an interval's 'to' or 'from' is not an object"
    return None


def _is_position(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class DucklingEntityExtractor:
    def __init__(
        self, config: dict[str, Any], name: str = "DucklingEntityExtractor", language: str = "en"
    ):
        self.config = config
        self.name = name
        # As Rasa's requests reads it: `${DUCKLING_URL}` from a file ending in a line break.
        url = url_as_rasa_reads(str(config.get("url") or "http://localhost:8000"))
        self.url = url.rstrip("/")
        # As the log shows it: no password, no query (a token).
        self.safe_url = safe_url(self.url, tolerant=True)
        dimensions = config.get("dimensions")
        if isinstance(dimensions, str):  # `dimensions: time`, which Rasa matches too
            dimensions = [dimensions]
        if dimensions is not None and (
            not isinstance(dimensions, list) or not all(isinstance(d, str) for d in dimensions)
        ):
            raise InvalidConfig(
                f"{name}: 'dimensions' must be a list of Duckling dimension names such as "
                f"[time, number], not {dimensions!r}"
            )
        self.dimensions: set[str] | None = set(dimensions) if dimensions else None
        self.timezone = config.get("timezone")
        self.locale = config.get("locale") or f"{language}_{language.upper()}"
        self.timeout = number(
            config, "timeout", 3, name, minimum=0, maximum=MAX_SYNC_TIMEOUT_SECONDS
        )
        self._client: httpx.Client | None = None
        # Two threads' first parses would each build a client, one of them never closed.
        self._client_lock = threading.Lock()
        self._last_warning = 0.0
        self._skip_until = 0.0

    def _http(self) -> httpx.Client:
        client = self._client
        if client is not None:
            return client
        with self._client_lock:
            if self._client is None:
                # httpx and the clients' module (asyncio) with the first parse: `data
                # validate` builds the extractor, and sends nothing.
                from server.http_clients import cookie_jar_keeping_none, sync_client

                self._client = sync_client(
                    timeout=self.timeout,
                    headers={"Accept-Encoding": ACCEPT_ENCODING},
                    cookies=cookie_jar_keeping_none(),  # none sent back, as Rasa's per call
                )
                # Closed with the extractor (a model replaced, PUT /model): the client sits
                # in reference cycles, its connections otherwise open until a collection.
                weakref.finalize(self, self._client.close)
            return self._client

    def train(self, messages: list[Message], data: Any) -> None:
        """Duckling is pretrained; nothing to learn (and no call during training)."""

    def process(self, message: Message) -> None:
        if time.monotonic() < self._skip_until:
            return
        payload = {
            "text": message.text,
            "locale": self.locale,
            "reftime": str(int(time.time() * 1000)),
        }
        if self.timezone:
            payload["tz"] = str(self.timezone)
        if self.dimensions is not None:
            # As Rasa: Duckling parses only these, so a wider match of another dimension
            # ("at 5", a time) does not hide the one asked for (the number 5).
            payload["dims"] = json.dumps(sorted(self.dimensions))
        import httpx  # (see `_http`)

        from server.http_clients import within

        try:
            # Built before the time limit starts: on a loaded host the first parse's client
            # (its certificates read) took past a 0.5 s limit, and Duckling was never asked.
            client = self._http()
            with (
                within(self.timeout) as deadline,
                client.stream("POST", f"{self.url}/parse", data=payload) as response,
            ):
                if not response.is_success:
                    raise ValueError(f"HTTP {response.status_code}")
                raw = read_within_sync(response, MAX_ANSWER_BYTES, deadline)
            matches = loads_untrusted(raw)
            if not isinstance(matches, list):
                raise ValueError("Duckling did not answer a list")
        except httpx.TimeoutException:
            self._failed(f"no whole answer within {self.timeout:g} s")
            return
        except (httpx.HTTPError, ValueError, ResponseTooLarge) as e:
            # Its text is ours or the socket's, or httpx's naming a scheme: never the URL.
            self._failed(first_line(e, limit=200))
            return
        except httpx.InvalidURL:  # its text may quote a password holding a '/' as the port
            self._failed("its url is not a URL httpx can read")
            return
        for match in matches:
            problem = _match_problem(match, message.text)
            if problem is not None:
                self._warn(f"answered what is not Duckling's: {problem}; it is left out")
                continue
            if self.dimensions is not None and match.get("dim") not in self.dimensions:
                continue
            message.entities.append(
                {
                    "start": match.get("start"),
                    "end": match.get("end"),
                    "text": match.get("body", match.get("text")),
                    "value": _value(match),
                    "confidence": 1.0,
                    "additional_info": match.get("value"),
                    "entity": match.get("dim"),
                    "extractor": self.name,
                }
            )

    def _failed(self, reason: str) -> None:
        self._skip_until = time.monotonic() + _RETRY_AFTER_SECONDS
        self._warn(f"failed ({reason[:200]}); continuing without its entities")

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.warning("Duckling at %s %s", self.safe_url, what[:300])  # one short line

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {"locale": self.locale}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> DucklingEntityExtractor:
        extractor = cls(config, name)
        if isinstance(state.get("locale"), str):
            extractor.locale = state["locale"]
        return extractor
