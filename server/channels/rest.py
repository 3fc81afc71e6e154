"""The REST channel: `POST /webhooks/rest/webhook` answers with the bot's messages as JSON."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from server.channels.channel import InputChannel, OnNewMessage, health_router
from server.dialogue.messages import CollectingOutputChannel, UserMessage, split_message
from server.errors import LockTimeout, StoreUnavailable

logger = logging.getLogger(__name__)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or Rasa's 400 error body."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "The request body must be a JSON object.")
    return body


def message_from_rest_body(
    body: dict[str, Any], input_channel: str, read_input_channel: bool = True
) -> UserMessage:
    """Rasa's reading of a REST body: sender (default "default"), stripped message, metadata."""
    sender = body.get("sender")
    text = body.get("message")
    metadata = body.get("metadata")
    channel = body.get("input_channel") if read_input_channel else None
    return UserMessage(
        text=text.strip() if isinstance(text, str) else None,
        sender_id="default" if sender is None else str(sender),
        input_channel=channel if isinstance(channel, str) and channel else input_channel,
        metadata=metadata if isinstance(metadata, dict) else None,
    )


class QueueOutputChannel:
    """Hands each bot message part to a queue as soon as it is sent (for `?stream=true`)."""

    name = "rest"

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        for part in split_message(message):
            await self.queue.put({"recipient_id": recipient_id, **part})


class RestInput(InputChannel):
    """Rasa's `rest` channel; credentials take no keys."""

    name = "rest"

    def router(self, on_new_message: OnNewMessage) -> APIRouter:
        router = health_router(self.url_prefix())
        channel_name = self.name

        async def receive(request: Request, stream: bool = False) -> Any:
            message = message_from_rest_body(await read_json_object(request), channel_name)
            if message.text is None:
                # Rasa answers an empty list when there is no message to handle.
                return JSONResponse([])
            if stream:
                return StreamingResponse(
                    _stream(message, on_new_message), media_type="text/event-stream"
                )
            collector = CollectingOutputChannel()
            message.output_channel = collector
            try:
                await on_new_message(message)
            except (StoreUnavailable, LockTimeout):
                # The turn was not recorded: a 200 would acknowledge a message that is lost
                # (Rasa answers 200 with an empty list here). The API answers 503.
                raise
            except Exception as e:  # the user gets what was collected, as in Rasa
                logger.error(
                    "rest: message from %s failed: %s: %s", message.sender_id, type(e).__name__, e
                )
            return JSONResponse(collector.messages)

        router.add_api_route("/webhook", receive, methods=["POST"], include_in_schema=False)
        return router


async def _stream(message: UserMessage, on_new_message: OnNewMessage) -> AsyncIterator[bytes]:
    """Rasa's `stream=true` body: one JSON message per line (NDJSON) as the turn runs."""
    output = QueueOutputChannel()
    message.output_channel = output

    async def run() -> None:
        try:
            await on_new_message(message)
        except Exception as e:
            logger.error(
                "rest: message from %s failed: %s: %s", message.sender_id, type(e).__name__, e
            )
        finally:
            await output.queue.put(None)

    task = asyncio.create_task(run())
    try:
        while (part := await output.queue.get()) is not None:
            yield (json.dumps(part) + "\n").encode()
    finally:
        if not task.done():
            task.cancel()
