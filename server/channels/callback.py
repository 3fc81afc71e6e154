"""The callback channel: takes REST-shaped messages, POSTs each bot reply to a configured URL."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse

from server import setting_values as settings
from server.auth.log_redaction import keep_endpoint_secrets_out_of_logs
from server.channels.channel import (
    InputChannel,
    OnNewMessage,
    health_router,
    log_failed_turn,
    turn_to_its_end,
)
from server.channels.rest import message_from_rest_body, read_json_object
from server.dialogue.http_endpoint import HttpEndpoint, json_content
from server.dialogue.messages import check_text_length, split_message
from server.errors import (
    InvalidConfig,
    InvalidConversationId,
    LockTimeout,
    NoModelLoaded,
    StoreError,
    first_line,
    how_many,
)
from server.http_clients import retrying_connect_failures

logger = logging.getLogger(__name__)


class Deliveries:
    """The bot messages posted to the callback URL, per conversation in the order the turns
    sent them: one conversation's POSTs run one after another, in tasks of their own, so a
    slow callback URL does not hold the conversation's lock (its next message is handled
    while the replies of the last one are still on their way)."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Future[None]] = {}  # per conversation

    def post_after_the_last(
        self, recipient_id: str, post: Callable[[], Awaitable[None]]
    ) -> asyncio.Future[None]:
        previous = self._last.get(recipient_id)
        delivery = asyncio.ensure_future(_after(previous, post))
        self._last[recipient_id] = delivery

        def forget(done: asyncio.Future[None]) -> None:
            if self._last.get(recipient_id) is done:
                del self._last[recipient_id]

        delivery.add_done_callback(forget)
        return delivery

    async def finish(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the POSTs under way (at shutdown); cancel the
        rest."""
        pending = set(self._last.values())
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for delivery in late:
            delivery.cancel()
        if late:
            logger.error(
                "callback: the bot messages of %s were still being posted at "
                "shutdown and are not delivered",
                how_many(len(late), "conversation"),
            )


async def _after(
    previous: asyncio.Future[None] | None, post: Callable[[], Awaitable[None]]
) -> None:
    if previous is not None:
        await asyncio.wait((previous,))  # its outcome is its own
    await post()


class CallbackOutput:
    """POSTs every bot message part, as the REST channel would return it, to the callback URL.

    The POSTs of one conversation go in order (`Deliveries`), outside the conversation's
    lock: the turn goes on while they are under way, and the webhook answers `success` once
    its turn's POSTs were made (as in Rasa, where they are made under the lock). Each is
    bounded as a whole by the endpoint's `timeout` (httpx's is per read, which a trickling
    answer never reaches); one that could not connect (nothing was sent) is tried again
    after a short back-off, within the same timeout, never one that went out. Once one timed
    out or could not connect, the rest of the output's messages are not tried: each would
    wait the timeout again. An output serves one turn (or one pushed message).
    """

    name = "callback"
    # It collects what it sends, as Rasa's: `execute` and `trigger_intent` answer the
    # messages too (see `OutputChoice`).
    collects = True

    def __init__(
        self, endpoint: HttpEndpoint, deliveries: Deliveries, in_webhook: bool = False
    ) -> None:
        self.endpoint = endpoint
        self.deliveries = deliveries
        # In the webhook, the webhook waits for the POSTs (`delivered`) after the turn;
        # otherwise (a pushed message, a reminder) each send waits for its own.
        self.in_webhook = in_webhook
        self._unreachable: str | None = None  # why the URL was given up on, once it was
        self._sent: list[asyncio.Future[None]] = []
        self._skipped = 0
        self._recipient = ""

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        self._recipient = recipient_id
        posts = [
            self.deliveries.post_after_the_last(
                recipient_id, functools.partial(self._post, recipient_id, part)
            )
            for part in split_message(message, collecting=True)
        ]
        if self.in_webhook:
            self._sent += posts
        else:
            await self._wait(posts)

    async def delivered(self) -> None:
        """Wait until the POSTs of this output were made (or given up)."""
        await self._wait(self._sent)
        self._sent = []

    async def _wait(self, posts: list[asyncio.Future[None]]) -> None:
        if posts:
            await asyncio.wait(posts)  # a cancelled wait leaves them to finish
        if self._skipped:
            logger.error(
                "callback: %d more bot message%s to %s not sent: the callback URL %s %s",
                self._skipped,
                "" if self._skipped == 1 else "s",
                self._recipient,
                self.endpoint.safe_url,
                self._unreachable,
            )
            self._skipped = 0

    async def _post(self, recipient_id: str, part: dict[str, Any]) -> None:
        if self._unreachable is not None:
            self._skipped += 1
            return
        body = {"recipient_id": recipient_id, **part}
        timeout = self.endpoint.timeout
        try:
            content = await json_content(body)  # once, whatever the tries
            answer = await retrying_connect_failures(
                lambda: self.endpoint.post(content),
                timeout=timeout,
                what=f"callback: a bot message to {recipient_id} at {self.endpoint.safe_url}",
            )
        except (TimeoutError, httpx.TimeoutException, httpx.ConnectError) as e:
            if isinstance(e, httpx.ConnectError):  # down, or its TLS certificate not trusted
                self._unreachable = f"cannot be reached ({first_line(e, limit=200)})"
            else:
                self._unreachable = f"did not answer within {timeout:g} s"
            logger.error(
                "callback: could not deliver a bot message to %s at %s: it %s",
                recipient_id,
                self.endpoint.safe_url,
                self._unreachable,
            )
            return
        except Exception as e:  # any failure: the turn's other messages go on
            reason, name = first_line(e, limit=200), type(e).__name__
            logger.error(
                "callback: could not deliver a bot message to %s at %s: %s",
                recipient_id,
                self.endpoint.safe_url,
                name if reason == name else f"{name}: {reason}",
            )
            return
        if answer.status_code >= 300:
            # A redirect is not followed (it could lead anywhere): the message is lost too.
            redirect = answer.redirect
            if redirect:
                outcome = f"{redirect}: the message was not delivered"
            else:  # what the receiver said, as Rasa logs it: why it refused the message
                detail = await answer.error_detail()
                outcome = "which was not delivered" + (f": {detail}" if detail else "")
            logger.error(
                "callback: %s answered HTTP %s to a bot message to %s, %s",
                self.endpoint.safe_url,
                answer.status_code,
                recipient_id,
                outcome,
            )


class CallbackInput(InputChannel):
    """Rasa's `callback` channel: credentials are an endpoint (url, headers, token, basic_auth)."""

    name = "callback"
    settings_keys = HttpEndpoint.SETTINGS_KEYS

    def __init__(self, endpoint: HttpEndpoint) -> None:
        self.endpoint = endpoint
        self.deliveries = Deliveries()

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> CallbackInput:
        if not credentials or not credentials.get("url"):
            raise InvalidConfig(
                "needs the URL to post replies to: `callback: {url: http://host:port/bot}`"
            )
        settings.http_url(credentials, "url")
        cafile = settings.text(credentials, "cafile")
        if cafile is not None and not Path(cafile).is_file():
            # Found out at the first reply otherwise, and every reply would fail.
            raise InvalidConfig(f"'cafile' {cafile}: no such file")
        endpoint = HttpEndpoint.from_config(credentials)
        keep_endpoint_secrets_out_of_logs(credentials)
        return cls(endpoint)

    def router(self, on_new_message: OnNewMessage) -> APIRouter:
        router = health_router(self.url_prefix())

        async def receive(request: Request) -> PlainTextResponse:
            body = await read_json_object(request)
            if not isinstance(body.get("metadata"), dict):
                # Rasa's callback channel reads no metadata: what is no object is ignored, as
                # there, not refused as by the REST channel.
                body.pop("metadata", None)
            message = message_from_rest_body(body, self.name, read_input_channel=False)
            if message.text is None:
                # "success" would say a message was taken, and its sender would wait for
                # replies that never come (Rasa's turn fails on it: a 500).
                raise HTTPException(400, "The request body has no 'message': nothing was handled.")
            check_text_length(message.text)  # a 400, as the REST channel answers
            output = CallbackOutput(self.endpoint, self.deliveries, in_webhook=True)
            message.output_channel = output  # this turn's own
            try:
                await turn_to_its_end(logger, "callback", on_new_message, message)
            except (StoreError, LockTimeout, InvalidConversationId, NoModelLoaded):
                # A 503, 500, 400 or 409, as the REST channel (streamed) and the API
                # answer: not a message taken, which "success" would say.
                raise
            except Exception as e:
                log_failed_turn(logger, "callback", message.sender_id, e)
            finally:
                await output.delivered()  # what the turn sent before it failed, too
            return PlainTextResponse("success")

        router.add_api_route("/webhook", receive, methods=["POST"], include_in_schema=False)
        return router

    def get_output_channel(self) -> CallbackOutput:
        return CallbackOutput(self.endpoint, self.deliveries)

    async def aclose(self) -> None:
        # POSTs whose webhook no longer waits (cut by the response timeout) or that a
        # pushed message started: each is bounded by the endpoint's timeout.
        await self.deliveries.finish(self.endpoint.timeout)
        await self.endpoint.aclose()
