"""The slice of Rocket.Chat's REST API the bot needs: log in as the bot user, post messages.

Logs in once, keeps the auth token, and logs in again when a call answers 401 (token
expired or revoked). One pooled HTTP client, keeping no cookie; each call bounded as a whole
by `timeout`, and not tried again after it: `chat.postMessage` is not idempotent, and a post
that was only slow would show twice. A call that could not connect (nothing was sent) is
tried again, twice, after a short back-off, within the same `timeout`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, NamedTuple
from urllib.parse import urljoin

import httpx

from server.dialogue.http_endpoint import told
from server.errors import ResponseTooLarge, first_line
from server.http_bodies import ACCEPT_ENCODING, DEFAULT_MAX_RESPONSE_BYTES, read_within
from server.http_clients import (
    async_client_off_loop,
    cookie_jar_keeping_none,
    per_conversation_limits,
    retrying_connect_failures,
)
from server.urls import safe_url

logger = logging.getLogger(__name__)


class RocketChatError(Exception):
    """Rocket.Chat refused a call or could not be reached."""


class RocketChatUnavailable(RocketChatError):
    """Rocket.Chat takes no call for now (down, too slow, or rate-limiting the bot user): the
    next ones would fail the same way, each after its wait."""


# What Rocket.Chat's API rate limiter answers (429) a user without the api-bypass-rate-limit
# permission, which its `bot` role has: the user's calls to the method are refused until then.
RATE_LIMITED = (
    "the bot user '{user}' is rate-limited ({detail}); give it Rocket.Chat's `bot` role (or "
    "the api-bypass-rate-limit permission), which lifts the limit"
)


class Answer(NamedTuple):
    """Rocket.Chat's answer to a call: its status and body (decompressed, bounded)."""

    status_code: int
    content: bytes
    location: str | None = None  # where a redirect leads (not followed), made absolute


class RocketChatAPI:
    """A Rocket.Chat REST client authenticated as the bot user."""

    def __init__(
        self,
        server_url: str,
        user: str,
        password: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.user = user
        self._password = password
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._auth: dict[str, str] | None = None
        self._login_lock = asyncio.Lock()
        self._logins_ended = 0
        self._login_failure: RocketChatError | None = None  # of the last login tried
        self.user_id: str | None = None
        # Rocket.Chat's Message_MaxAllowedSize; longer bot texts are sent in pieces.
        self.max_message_length = 5000

    async def _http(self) -> httpx.AsyncClient:
        """The pooled client, first built in a thread (a client loads the CA bundle, 27-42 ms
        of CPU: the first login held every conversation that long)."""
        if self._client is None:
            client = await async_client_off_loop(
                base_url=self.server_url,
                timeout=self._timeout,
                transport=self._transport,
                limits=per_conversation_limits(),  # each conversation posts in turn
                # Rasa's client (requests, no session) sends none back; kept, the first
                # answer's (a load balancer's, a proxy's session) went with every later post.
                cookies=cookie_jar_keeping_none(),
                headers={"Accept-Encoding": ACCEPT_ENCODING},  # what `read_within` decodes
            )
            if self._client is None:
                self._client = client
            else:  # made by another call meanwhile
                await client.aclose()
        return self._client

    async def login(self) -> None:
        """Logs in as the bot user; raises RocketChatUnavailable when Rocket.Chat refuses."""
        credentials = {"user": self.user, "password": self._password}
        answer = await self._send("/api/v1/login", credentials, {})
        result = _json(answer)
        data = result.get("data") if answer.status_code == 200 else None
        if not isinstance(data, dict) or not data.get("authToken") or not data.get("userId"):
            detail = _detail(result)
            if result.get("error") == "totp-required":
                detail += ": turn two-factor authentication off for the bot user (it has no code)"
            if 300 <= answer.status_code < 400 and answer.location:
                detail = _redirect(answer.location)
            # Unavailable: each post of the turn would try again, and Rocket.Chat blocks a
            # user (by default 10 failures, for 5 minutes) whose logins keep failing.
            raise RocketChatUnavailable(
                f"Rocket.Chat refused the login of bot user '{self.user}' "
                f"(HTTP {answer.status_code}{' ' + detail if detail else ''})"
            )
        self._auth = {"X-Auth-Token": str(data["authToken"]), "X-User-Id": str(data["userId"])}
        self.user_id = str(data["userId"])
        logger.info("rocketchat: logged in as %s", self.user)

    async def ensure_login(self) -> None:
        """Logs in unless logged in already; raises RocketChatError when Rocket.Chat refuses."""
        await self._ensure_login()

    async def _ensure_login(self, stale: dict[str, str] | None = None) -> dict[str, str]:
        ended = self._logins_ended
        async with self._login_lock:
            # Another task may have logged in while this one waited.
            if self._auth is not None and self._auth is not stale:
                return self._auth
            failure = self._login_failure
            if failure is not None and self._logins_ended != ended:
                # A login tried while this call waited failed: its answer is this call's too.
                # Each waiting call tried one of its own before, in turn: the last of many
                # conversations waited as many timeouts, and each refusal counted towards
                # Rocket.Chat's block of the user.
                raise type(failure)(str(failure))
            try:
                await self.login()
                self._login_failure = None
            except RocketChatError as e:
                self._login_failure = e
                raise
            except BaseException:  # cancelled: no answer to share, the next waiter tries
                self._login_failure = None
                raise
            finally:
                self._logins_ended += 1
            assert self._auth is not None
            return self._auth

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POSTs to an authenticated REST method, logging in again once on a 401."""
        auth = self._auth or await self._ensure_login()
        answer = await self._send(path, body, auth)
        if answer.status_code == 401:
            logger.info("rocketchat: the login expired; logging in again")
            auth = await self._ensure_login(stale=auth)
            answer = await self._send(path, body, auth)
        result = _json(answer)
        if answer.status_code == 429:
            detail = _detail(result) or "HTTP 429"
            raise RocketChatUnavailable(
                f"Rocket.Chat refused {path}: " + RATE_LIMITED.format(user=self.user, detail=detail)
            )
        if answer.status_code >= 400 or result.get("success") is False:
            raise RocketChatError(
                f"Rocket.Chat {path} failed: HTTP {answer.status_code} {_detail(result)}"
            )
        if result.get("success") is not True:
            # Rocket.Chat says `"success": true` of every call it made; this is another's
            # answer (a proxy's maintenance or login page), and the call was not made.
            raise RocketChatError(
                f"Rocket.Chat {path} failed: HTTP {answer.status_code} without Rocket.Chat's "
                f"success (a proxy's answer?): {_body_start(answer)}"
            )
        return result

    async def _send(self, path: str, body: dict[str, Any], auth: dict[str, str]) -> Answer:
        """POSTs `body`, the whole exchange bounded by `timeout` (httpx's bounds each read, which
        an answer trickling in never reaches), the answer read up to 10 MB decompressed (as
        every outgoing client's: httpx inflated a gzip bomb whole)."""
        where = safe_url(self.server_url)
        try:
            client = await self._http()
            return await retrying_connect_failures(
                lambda: self._exchange(client, path, body, auth),
                timeout=self._timeout,
                what=f"rocketchat: {path} at {where}",
            )
        except ResponseTooLarge as e:
            raise RocketChatError(f"Rocket.Chat at {where} answered {path}: {e}") from None
        except (TimeoutError, httpx.TimeoutException):
            raise RocketChatUnavailable(
                f"Rocket.Chat at {where} did not answer within {self._timeout:g} s"
            ) from None
        except httpx.ConnectError as e:  # down, or its TLS certificate not trusted: say which
            raise RocketChatUnavailable(
                f"cannot reach Rocket.Chat at {where}: {first_line(e, limit=200)}"
            ) from None
        except httpx.HTTPError as e:
            reason = first_line(e, limit=200)
            raise RocketChatError(f"cannot reach Rocket.Chat at {where}: {reason}") from None

    @staticmethod
    async def _exchange(
        client: httpx.AsyncClient, path: str, body: dict[str, Any], auth: dict[str, str]
    ) -> Answer:
        async with client.stream("POST", path, json=body, headers=auth) as response:
            content = await read_within(response, DEFAULT_MAX_RESPONSE_BYTES)
            location = response.headers.get("location")
            if location is not None:
                location = urljoin(str(response.url), location)
            return Answer(response.status_code, content, location)

    async def post_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """`chat.postMessage` with `roomId` or `channel`, `text` and `attachments`."""
        return await self.call("/api/v1/chat.postMessage", message)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _detail(result: dict[str, Any]) -> str:
    """What Rocket.Chat said of a refusal, on one line."""
    detail = result.get("error") or result.get("message") or ""
    return " ".join(told(detail)[:1000].split())[:300]


def _redirect(location: str) -> str:
    """What a login's redirect says: where it leads, and the server_url that would reach it
    (the password is not sent on to wherever a redirect leads)."""
    shown = safe_url(location, tolerant=True)
    base = shown.removesuffix("/api/v1/login")
    meant = f", {base}" if base != shown else ""
    return f"redirecting to {shown}, not followed: set server_url to where it leads{meant}"


def _body_start(answer: Answer) -> str:
    """The start of an answer's body, on one line."""
    text = answer.content[:200].decode("utf-8", "replace")
    return " ".join(text.split()) or "an empty body"


def _json(answer: Answer) -> dict[str, Any]:
    try:
        body = json.loads(answer.content)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to read
        return {}
    return body if isinstance(body, dict) else {}
