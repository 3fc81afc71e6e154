"""The slice of Rocket.Chat's REST API the bot needs: log in as the bot user, post messages.

Logs in once, keeps the auth token, and logs in again when a call answers 401 (token
expired or revoked). One pooled HTTP client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from server.dialogue.http_endpoint import safe_url
from server.http_clients import async_client_off_loop

logger = logging.getLogger(__name__)


class RocketChatError(Exception):
    """Rocket.Chat refused a call or could not be reached."""


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
        self.user_id: str | None = None
        # Rocket.Chat's Message_MaxAllowedSize; longer bot texts are sent in pieces.
        self.max_message_length = 5000

    async def _http(self) -> httpx.AsyncClient:
        """The pooled client, first built in a thread (a client loads the CA bundle, 27-42 ms
        of CPU: the first login held every conversation that long)."""
        if self._client is None:
            client = await async_client_off_loop(
                base_url=self.server_url, timeout=self._timeout, transport=self._transport
            )
            if self._client is None:
                self._client = client
            else:  # made by another call meanwhile
                await client.aclose()
        return self._client

    async def login(self) -> None:
        """Logs in as the bot user; raises RocketChatError when Rocket.Chat refuses."""
        try:
            answer = await (await self._http()).post(
                "/api/v1/login", json={"user": self.user, "password": self._password}
            )
        except httpx.HTTPError as e:
            raise RocketChatError(
                f"cannot reach Rocket.Chat at {safe_url(self.server_url)}: {type(e).__name__}"
            ) from None
        data = _json(answer).get("data") if answer.status_code == 200 else None
        if not isinstance(data, dict) or not data.get("authToken") or not data.get("userId"):
            raise RocketChatError(
                f"Rocket.Chat refused the login of bot user '{self.user}' "
                f"(HTTP {answer.status_code})"
            )
        self._auth = {"X-Auth-Token": str(data["authToken"]), "X-User-Id": str(data["userId"])}
        self.user_id = str(data["userId"])
        logger.info("rocketchat: logged in as %s", self.user)

    async def ensure_login(self) -> None:
        """Logs in unless logged in already; raises RocketChatError when Rocket.Chat refuses."""
        await self._ensure_login()

    async def _ensure_login(self, stale: dict[str, str] | None = None) -> dict[str, str]:
        async with self._login_lock:
            # Another task may have logged in while this one waited.
            if self._auth is None or self._auth is stale:
                await self.login()
            assert self._auth is not None
            return self._auth

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POSTs to an authenticated REST method, logging in again once on a 401."""
        auth = self._auth or await self._ensure_login()
        answer = await self._post(path, body, auth)
        if answer.status_code == 401:
            logger.info("rocketchat: the login expired; logging in again")
            auth = await self._ensure_login(stale=auth)
            answer = await self._post(path, body, auth)
        result = _json(answer)
        if answer.status_code >= 400 or result.get("success") is False:
            detail = result.get("error") or result.get("message") or ""
            raise RocketChatError(f"Rocket.Chat {path} failed: HTTP {answer.status_code} {detail}")
        return result

    async def _post(self, path: str, body: dict[str, Any], auth: dict[str, str]) -> httpx.Response:
        try:
            return await (await self._http()).post(path, json=body, headers=auth)
        except httpx.HTTPError as e:
            raise RocketChatError(
                f"cannot reach Rocket.Chat at {safe_url(self.server_url)}: {type(e).__name__}"
            ) from None

    async def post_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """`chat.postMessage` with `roomId` or `channel`, `text` and `attachments`."""
        return await self.call("/api/v1/chat.postMessage", message)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
