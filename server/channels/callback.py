"""The callback channel: takes REST-shaped messages, POSTs each bot reply to a configured URL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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
    """POSTs every bot message part, as the REST channel would return it, to the callback URL."""

    name = "callback"

    def __init__(self, endpoint: HttpEndpoint) -> None:
        self.endpoint = endpoint

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        for part in split_message(message):
            body = {"recipient_id": recipient_id, **part}
            try:
                answer = await self.endpoint.post_json(body)
            except Exception as e:  # any failure: a raise would fail the turn, left unstored
                logger.error(
                    "callback: could not deliver a message to %s: %s",
                    self.endpoint.safe_url,
                    type(e).__name__,
                )
                continue
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
        self.output = CallbackOutput(endpoint)

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
                message.output_channel = self.output
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
        return self.output

    async def aclose(self) -> None:
        await self.endpoint.aclose()
