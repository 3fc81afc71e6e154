"""The callback channel: takes REST-shaped messages, POSTs each bot reply to a configured URL."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from server.channels import settings
from server.channels.channel import InputChannel, OnNewMessage, health_router, log_failed_turn
from server.channels.rest import message_from_rest_body, read_json_object
from server.dialogue.http_endpoint import HttpEndpoint
from server.dialogue.messages import check_text_length, split_message
from server.errors import InvalidConfig, InvalidConversationId, LockTimeout, StoreError

logger = logging.getLogger(__name__)


class CallbackOutput:
    """POSTs every bot message part, as the REST channel would return it, to the callback URL.

    The POSTs run inside the turn, under the conversation's lock, as in Rasa (the webhook's
    `success` means they were made). Each is bounded as a whole by the endpoint's `timeout`
    (httpx's is per read, which a trickling answer never reaches), and once one timed out or
    could not connect, the rest of the output's messages are not tried: each would hold the
    conversation the timeout again. An output serves one turn (or one pushed message).
    """

    name = "callback"

    def __init__(self, endpoint: HttpEndpoint) -> None:
        self.endpoint = endpoint
        self._unreachable: str | None = None  # why the URL was given up on, once it was

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        parts = split_message(message, collecting=True)
        for index, part in enumerate(parts):
            if self._unreachable is not None:
                logger.error(
                    "callback: %d more bot message%s to %s not sent: the callback URL %s %s",
                    len(parts) - index,
                    "" if len(parts) - index == 1 else "s",
                    recipient_id,
                    self.endpoint.safe_url,
                    self._unreachable,
                )
                return
            await self._post(recipient_id, part)

    async def _post(self, recipient_id: str, part: dict[str, Any]) -> None:
        body = {"recipient_id": recipient_id, **part}
        timeout = self.endpoint.timeout
        try:
            answer = await asyncio.wait_for(self.endpoint.post_json(body), timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException, httpx.ConnectError) as e:
            timed_out = not isinstance(e, httpx.ConnectError)
            self._unreachable = (
                f"did not answer within {timeout:g} s" if timed_out else "cannot be reached"
            )
            logger.error(
                "callback: could not deliver a message to %s: it %s",
                self.endpoint.safe_url,
                self._unreachable,
            )
            return
        except Exception as e:  # any failure: a raise would fail the turn, left unstored
            logger.error(
                "callback: could not deliver a message to %s: %s",
                self.endpoint.safe_url,
                type(e).__name__,
            )
            return
        if answer.status_code >= 300:
            # A redirect is not followed (it could lead anywhere): the message is lost too.
            logger.error(
                "callback: %s answered HTTP %s to a bot message, which was not delivered",
                self.endpoint.safe_url,
                answer.status_code,
            )


class CallbackInput(InputChannel):
    """Rasa's `callback` channel: credentials are an endpoint (url, headers, token, basic_auth)."""

    name = "callback"

    def __init__(self, endpoint: HttpEndpoint) -> None:
        self.endpoint = endpoint

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
        return cls(HttpEndpoint.from_config(credentials))

    def router(self, on_new_message: OnNewMessage) -> APIRouter:
        router = health_router(self.url_prefix())

        async def receive(request: Request) -> PlainTextResponse:
            message = message_from_rest_body(
                await read_json_object(request), self.name, read_input_channel=False
            )
            if message.text is not None:
                check_text_length(message.text)  # a 400, as the REST channel answers
                message.output_channel = CallbackOutput(self.endpoint)  # this turn's own
                try:
                    await on_new_message(message)
                except (StoreError, LockTimeout, InvalidConversationId):
                    raise  # a 503, 500 or 400, as the REST channel answers: not a lost message
                except Exception as e:
                    log_failed_turn(logger, "callback", message.sender_id, e)
            return PlainTextResponse("success")

        router.add_api_route("/webhook", receive, methods=["POST"], include_in_schema=False)
        return router

    def get_output_channel(self) -> CallbackOutput:
        return CallbackOutput(self.endpoint)

    async def aclose(self) -> None:
        await self.endpoint.aclose()
