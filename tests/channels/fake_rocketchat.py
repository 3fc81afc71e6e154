"""A fake Rocket.Chat server: the REST calls the bot makes, and the webhooks Rocket.Chat sends.

Speaks `POST /api/v1/login` and `POST /api/v1/chat.postMessage` as Rocket.Chat 6 does, and
builds outgoing-webhook and livechat payloads with the fields Rocket.Chat sends.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

NOT_LOGGED_IN = {"status": "error", "message": "You must be logged in to do this."}
# The keys chat.postMessage takes since Rocket.Chat 7.4, which refuses any other
# (`additionalProperties: false`); `tmid` only with `roomId`, and never both room keys.
POST_MESSAGE_KEYS = {"text", "alias", "emoji", "avatar", "attachments", "customFields", "parseUrls"}
TOO_MANY_REQUESTS = (
    "Error, too many requests. Please slow down. You must wait {} seconds before trying this "
    "endpoint again. [error-too-many-requests]"
)


class FakeRocketChat:
    """Users, rooms and what the bot posted, with tokens that can be made to expire."""

    def __init__(self, bot_user: str, bot_password: str, site_url: str = "") -> None:
        self.bot_user = bot_user
        self.bot_password = bot_password
        self.bot_id = "BotUserId0000001"
        self.bot_email = f"{bot_user}@example.test"
        self.site_url = site_url
        self.tokens: set[str] = set()
        self.logins = 0
        self.login_calls = 0  # logins tried, refused ones too
        # When set, the bot user has two-factor authentication on: a login needs a code.
        self.two_factor = False
        self.unauthorized = 0
        self.posted: list[dict[str, Any]] = []
        self.post_calls = 0  # chat.postMessage calls, answered or not
        # When set, chat.postMessage waits this long before answering, as a server in trouble;
        # `login_stall` the same for logins.
        self.stall: float | None = None
        self.login_stall: float | None = None
        # When set, the posts allowed a minute, as Rocket.Chat's API rate limiter for a user
        # without the `api-bypass-rate-limit` permission (the `bot` role has it).
        self.posts_per_minute: int | None = None
        # When set, chat.postMessage answers this (status, HTML body), as a proxy in trouble.
        self.failure: tuple[int, str] | None = None
        self.max_message_size = 5000  # Rocket.Chat's Message_MaxAllowedSize default
        # When set, every answer sets this cookie (`name=value`), as a load balancer's sticky
        # session does; `cookies_sent`: the Cookie header of each chat.postMessage call.
        self.set_cookie: str | None = None
        self.cookies_sent: list[str | None] = []
        self.app = FastAPI()
        self.app.add_api_route("/api/v1/login", self.login, methods=["POST"])
        self.app.add_api_route("/api/v1/chat.postMessage", self.post_message, methods=["POST"])

    # -- Rocket.Chat's REST API ----------------------------------------------------------------
    async def login(self, request: Request) -> JSONResponse:
        self.login_calls += 1
        if self.login_stall is not None:
            await asyncio.sleep(self.login_stall)
        body = await request.json()
        # Rocket.Chat takes the user name or the e-mail address.
        if body.get("user") not in (self.bot_user, self.bot_email) or (
            body.get("password") != self.bot_password
        ):
            return JSONResponse(
                {"status": "error", "error": "Unauthorized", "message": "Unauthorized"}, 401
            )
        if self.two_factor and not body.get("code"):
            return JSONResponse(
                {
                    "status": "error",
                    "error": "totp-required",
                    "message": "TOTP Required",
                    "details": {"method": "email", "availableMethods": ["email"]},
                },
                401,
            )
        self.logins += 1
        token = secrets.token_urlsafe(16)
        self.tokens.add(token)
        return self._with_cookie(
            {
                "status": "success",
                "data": {
                    "userId": self.bot_id,
                    "authToken": token,
                    "me": {"_id": self.bot_id, "username": self.bot_user, "active": True},
                },
            }
        )

    def _with_cookie(self, body: dict[str, Any]) -> JSONResponse:
        answer = JSONResponse(body)
        if self.set_cookie is not None:
            answer.headers["set-cookie"] = f"{self.set_cookie}; Path=/"
        return answer

    async def post_message(self, request: Request) -> Response:
        self.post_calls += 1
        self.cookies_sent.append(request.headers.get("cookie"))
        if self.stall is not None:
            await asyncio.sleep(self.stall)
        if self.failure is not None:
            status, body = self.failure
            return HTMLResponse(body, status)
        token = request.headers.get("X-Auth-Token")
        if token not in self.tokens or request.headers.get("X-User-Id") != self.bot_id:
            self.unauthorized += 1
            return JSONResponse(NOT_LOGGED_IN, 401)
        if self.posts_per_minute is not None and len(self.posted) >= self.posts_per_minute:
            reset = int(time.time() * 1000) + 42_000
            return JSONResponse(
                {"success": False, "error": TOO_MANY_REQUESTS.format(42)},
                429,
                headers={
                    "X-RateLimit-Limit": str(self.posts_per_minute),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset),
                },
            )
        body = await request.json()
        room_key = "channel" if "channel" in body else "roomId"
        allowed = POST_MESSAGE_KEYS | {room_key} | ({"tmid"} if room_key == "roomId" else set())
        if set(body) - allowed:
            return JSONResponse(
                {
                    "success": False,
                    "error": "must NOT have additional properties [invalid-params]",
                    "errorType": "invalid-params",
                },
                400,
            )
        if not body.get("roomId") and not body.get("channel"):
            return JSONResponse(
                {"success": False, "error": "[invalid-channel]", "errorType": "invalid-channel"},
                400,
            )
        if len(str(body.get("text") or "").encode("utf-16-le")) // 2 > self.max_message_size:
            return JSONResponse({"success": False, "error": "error-message-size-exceeded"}, 400)
        self.posted.append(body)
        message = {
            "_id": secrets.token_hex(8),
            "rid": body.get("roomId") or "GENERAL",
            "msg": body.get("text") or "",
            "u": {"_id": self.bot_id, "username": self.bot_user},
            "ts": _now(),
        }
        return self._with_cookie(
            {"ts": 1, "channel": message["rid"], "message": message, "success": True}
        )

    def expire_logins(self) -> None:
        """Every token stops working, as when a login expires or is revoked."""
        self.tokens.clear()

    def texts_in(self, room_id: str) -> list[str | None]:
        """The text of each post in the room, in order; None for a post of attachments only."""
        return [p.get("text") for p in self.posted if p.get("roomId") == room_id]

    # -- what Rocket.Chat sends to the bot ----------------------------------------------------
    def outgoing_payload(
        self,
        *,
        token: str,
        user_id: str,
        user_name: str,
        text: str,
        room_id: str = "GENERAL",
        room_name: str = "general",
        bot: Any = False,
        thread: str | None = None,
    ) -> dict[str, Any]:
        """An outgoing-webhook integration's POST body, field for field; `thread`: the id of
        the thread's first message, for a message written in a thread (Rocket.Chat's `tmid`,
        sent only then)."""
        payload = {
            "token": token,
            "bot": bot,
            "channel_id": room_id,
            "channel_name": room_name,
            "message_id": secrets.token_hex(8),
            "timestamp": _now(),
            "user_id": user_id,
            "user_name": user_name,
            "text": text,
            "siteUrl": self.site_url,
        }
        if thread is not None:
            payload["tmid"] = thread
        return payload

    def livechat_payload(
        self,
        *,
        room_id: str,
        visitor_id: str,
        visitor_name: str,
        messages: list[dict[str, Any]],
        kind: str = "Message",
    ) -> dict[str, Any]:
        """A livechat webhook body: the room, its visitor, the new messages (type Message) or,
        on "Send request on chat close", the whole transcript (type LivechatSession)."""
        return {
            "_id": room_id,
            "label": visitor_name,
            "createdAt": _now(),
            "lastMessageAt": _now(),
            "tags": [],
            "visitor": {
                "_id": visitor_id,
                "token": secrets.token_hex(8),
                "name": visitor_name,
                "username": visitor_name,
                "email": None,
                "phone": None,
            },
            "agent": {"_id": self.bot_id, "username": self.bot_user, "name": "Bot"},
            "type": kind,
            "messages": messages,
        }

    @staticmethod
    def livechat_message(
        stored: dict[str, Any], visitor: dict[str, Any], kind: str | None = None
    ) -> dict[str, Any]:
        """A message of a livechat webhook body, built from the stored message as Rocket.Chat 6
        builds it (sendToCRM): `agentId` whenever its author is not the visitor (an agent, or
        rocket.cat, who writes the page views), `navigation` for a page view (stored with type
        `livechat_navigation_history`), `closingMessage` for the chat's closing comment
        (`livechat-close`, written by whoever closed the chat)."""
        author = stored["u"]
        item = {
            "_id": stored["_id"],
            "username": author["username"],
            "msg": stored["msg"],
            "ts": _now(),
            "rid": stored.get("rid"),
            "u": author,
        }
        if author["username"] != visitor["username"]:
            item["agentId"] = author["_id"]
        if kind == "livechat_navigation_history":
            item["navigation"] = stored["navigation"]
        if kind == "livechat-close":
            item["closingMessage"] = True
        return item

    @staticmethod
    def page_view(room_id: str, title: str, url: str) -> dict[str, Any]:
        """The message Rocket.Chat stores for a page the visitor opens ("Livechat_Visitor_
        navigation_as_a_message"): written by rocket.cat, `<title> - <url>`."""
        return {
            "_id": secrets.token_hex(8),
            "rid": room_id,
            "u": {"_id": "rocket.cat", "username": "rocket.cat"},
            "msg": f"{title} - {url}",
            "navigation": {
                "page": {"change": "url", "title": title, "location": {"href": url}},
                "token": secrets.token_hex(8),
            },
        }

    @staticmethod
    def outgoing_outcome(answer: httpx.Response) -> str:
        """What Rocket.Chat 6 does with an outgoing webhook's answer (triggerHandler): "retried"
        (with "Retry failed URL calls", on by default) when it is empty or not 200, 201 or
        202, but for a 500 with a body ("failed", logged only) and a 410 with a body
        ("disabled": the integration is turned off); "posted" (as a message in the room) when
        it is JSON holding `text` or `attachments`; else "done"."""
        if not answer.content or answer.status_code not in (200, 201, 202):
            if answer.content and answer.status_code in (410, 500):
                return "disabled" if answer.status_code == 410 else "failed"
            return "retried"
        content_type = answer.headers.get("content-type", "").split(";")[0]
        if content_type in (
            "application/json",
            "text/javascript",
            "application/javascript",
            "application/x-javascript",
        ):
            try:
                data = answer.json()
            except ValueError:
                data = None
            if isinstance(data, dict) and (data.get("text") or data.get("attachments")):
                return "posted"
        return "done"

    async def send(
        self, webhook_url: str, payload: dict[str, Any] | bytes, **headers: str
    ) -> httpx.Response:
        """POSTs `payload` as JSON (bytes as they are) to the bot's webhook."""
        async with httpx.AsyncClient(timeout=15) as client:
            if isinstance(payload, bytes):
                return await client.post(webhook_url, content=payload, headers=headers)
            return await client.post(webhook_url, json=payload, headers=headers)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
