"""The REST channel: `POST /webhooks/rest/webhook` answers with the bot's messages as JSON.

The webhook is every turn's entry point, so it is a bare ASGI endpoint (no dependency
solving, no Request object) reading and writing JSON with orjson.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from server.api.query import bool_arg
from server.api.request_body import TOO_DEEP_MESSAGE, refuse_compressed
from server.channels.channel import (
    InputChannel,
    OnNewMessage,
    health_router,
    log_failed_turn,
    turn_to_its_end,
)
from server.dialogue.messages import (
    MAX_TEXT_CHARS,
    CollectingOutputChannel,
    UserMessage,
    check_text_length,
    split_message,
)
from server.errors import (
    InvalidConversationId,
    LockTimeout,
    MessageTooLong,
    NoModelLoaded,
    StoreError,
)
from server.json_values import TooDeep, loads_untrusted
from server.outages import RepeatsCounted
from server.trackers.store import check_conversation_id

logger = logging.getLogger(__name__)

# Messages answered `[]` while no model is loaded (as Rasa answers them): one warning, then a
# count a minute, not an ERROR line per message while a model server is slow to answer.
NO_MODEL = RepeatsCounted(logger, 60.0)
NO_MODEL_LINE = "rest: a message answered [] (nothing handled): no model is loaded"


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, read as the REST webhook reads it, or Rasa's 400
    error body (NaN, nesting too deep for the decoder, anything that is not a JSON object)."""
    return _json_object(await request.body())


def message_from_rest_body(
    body: dict[str, Any],
    input_channel: str,
    read_input_channel: bool = True,
    other_channels: frozenset[str] = frozenset(),
) -> UserMessage:
    """Rasa's reading of a REST body: sender (default "default"), stripped message, metadata.

    A `message` that is not a string, or a `sender` that is neither a string nor a number,
    is a 400: before, such a message was dropped with a 200 `[]`, and an object as sender
    became a conversation named after its Python text (`{'a': 1}`). So is `metadata` that is
    not an object, an `input_channel` that is not a string, and one naming one of the
    server's `other_channels` (those with an output channel of their own): the
    conversation's channel is where its reminders and `output_channel=latest` pushes go, and
    a REST client would have them sent through a channel it does not speak through (posted
    into the Rocket.Chat room its sender id names).
    """
    sender = body.get("sender")
    text = body.get("message")
    # `type(...) is not str` first: the usual body is decided without an isinstance call.
    if type(text) is not str and text is not None and not isinstance(text, str):
        raise HTTPException(400, "The 'message' must be a string.")
    if (
        type(sender) is not str
        and sender is not None
        and (isinstance(sender, bool) or not isinstance(sender, (str, int, float)))
    ):
        raise HTTPException(400, "The 'sender' must be a string or a number.")
    metadata = body.get("metadata")
    if metadata is not None and type(metadata) is not dict:
        # Dropped without a word before (Rasa fails such a turn and answers `[]`).
        raise HTTPException(400, "The 'metadata' must be a JSON object.")
    channel = body.get("input_channel") if read_input_channel else None
    if channel is not None and type(channel) is not str:
        # Taken for `rest` without a word before (Rasa stores it as the channel's name).
        raise HTTPException(400, "The 'input_channel' must be a string.")
    if channel is not None and channel in other_channels:
        raise HTTPException(
            400,
            f"The 'input_channel' '{channel}' names another channel of this server, which a "
            "REST message cannot come through (that channel would get its conversation's "
            "pushed messages); leave it out or use another name.",
        )
    return UserMessage(  # by position: keywords cost some 2,000 instructions more
        None if text is None else text.strip(),  # text
        "default" if sender is None else str(sender),  # sender_id
        channel or input_channel,  # input_channel
        metadata,  # metadata
    )


class QueueOutputChannel:
    """Hands each bot message part to a queue as soon as it is sent (for `?stream=true`).
    Named `queue` as in Rasa: the name response variations' `channel` is matched against."""

    name = "queue"

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        for part in split_message(message, collecting=True):
            await self.queue.put({"recipient_id": recipient_id, **part})


class RestInput(InputChannel):
    """Rasa's `rest` channel; credentials take no keys."""

    name = "rest"
    settings_keys = frozenset()
    other_channels: frozenset[str] = frozenset()

    def served_with(self, others: frozenset[str]) -> None:
        self.other_channels = others

    def router(self, on_new_message: OnNewMessage) -> APIRouter:
        prefix = self.url_prefix()
        router = health_router(prefix)
        router.add_route(
            f"{prefix}/webhook",
            RestWebhook(self.name, on_new_message, self.other_channels),  # type: ignore[arg-type]
            methods=["POST"],
            include_in_schema=False,
        )
        return router


class RestWebhook:
    """`POST /webhooks/rest/webhook[?stream=true]` as an ASGI app.

    A turn that could not be recorded (store or lock unavailable) raises, and the API
    answers 503: a 200 would acknowledge a lost message (Rasa answers 200 with an empty
    list there); so does a sender id no store can hold, answered 400. Any other failure
    answers what the bot said before it, as Rasa does.
    It needs nothing from the router, so the API may call it directly (`direct_route`).
    """

    direct_route = True

    def __init__(
        self,
        channel_name: str,
        on_new_message: OnNewMessage,
        other_channels: frozenset[str] = frozenset(),
    ) -> None:
        self.channel_name = channel_name
        self.on_new_message = on_new_message
        self.other_channels = other_channels  # names its messages may not claim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = _stream_flag(scope.get("query_string", b""))
        first = await receive()
        if first.get("more_body", False):
            body = await _read_rest_of_body(first, receive)
        else:  # the whole body in one message: no coroutine to read the rest
            body = first.get("body", b"")
        message = message_from_rest_body(
            _json_object(body), self.channel_name, True, self.other_channels
        )
        if message.text is None:
            # Rasa answers an empty list when there is no message to handle; a stream is
            # empty (a `[]` line would read as a bot message).
            start, end = _response(b"", _STREAM_TYPE) if stream else _json_response([])
            await send(start)
            await send(end)
            return
        if len(message.text) > MAX_TEXT_CHARS:  # a 400 before the turn, and a stream's 200
            check_text_length(message.text)
        if stream:
            check_conversation_id(message.sender_id)  # a 400 before the stream's 200
            await _answer_streamed(message, self.on_new_message, scope, receive, send)
            return
        collector = CollectingOutputChannel()
        message.output_channel = collector
        message.receive = receive
        try:
            await turn_to_its_end(logger, self.channel_name, self.on_new_message, message)
        except _NOT_RECORDED:
            raise
        except NoModelLoaded:
            NO_MODEL.log(NO_MODEL_LINE, NO_MODEL_LINE)
        except Exception as e:  # the user gets what was collected, as in Rasa
            _log_failure(message, e)
        finally:
            if message.client is not None:  # it waited for the conversation's lock
                message.client.stop()
        start, end = _json_response(collector.messages)
        await send(start)
        await send(end)


def _stream_flag(query_string: bytes) -> bool:
    """`?stream=` read as every boolean query parameter is (`bool_arg`; the first value that
    is not empty)."""
    if not query_string:
        return False
    for key, value in parse_qsl(query_string.decode("latin-1")):
        if key == "stream":
            return bool_arg("stream", value)
    return False


async def _read_rest_of_body(message: Message, receive: Receive) -> bytes:
    """The body whose first message is `message` (which says more comes)."""
    chunks = [message.get("body", b"")]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        # Unpaired surrogates refused too: a message holding one was stored, and every later
        # answer about the conversation (and every action server call) failed to encode it.
        parsed = loads_untrusted(body)
    except TooDeep:
        raise HTTPException(400, TOO_DEEP_MESSAGE) from None
    except ValueError:  # UnicodeDecodeError included
        refuse_compressed(body)
        raise HTTPException(400, "The request body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise HTTPException(400, "The request body must be a JSON object.")
    return parsed


def _json_bytes(content: Any) -> bytes:
    try:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson cannot encode (integers over 64 bits)
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _json_response(content: Any) -> tuple[Message, Message]:
    """The two ASGI messages of a 200 answer with `content` as JSON."""
    return _response(_json_bytes(content), b"application/json")


def _response(body: bytes, content_type: bytes) -> tuple[Message, Message]:
    """The two ASGI messages of a 200 answer with `body`."""
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", content_type),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


# A streamed answer's content type, as `StreamingResponse` writes it (Rasa's, for NDJSON).
_STREAM_TYPE = b"text/event-stream; charset=utf-8"


# A turn that raises one of these was not recorded: answered with its status (503, 400), not
# as a 200 acknowledging a lost message.
_NOT_RECORDED = (StoreError, LockTimeout, InvalidConversationId, MessageTooLong)

# Streamed turns still running, held so that none is collected before it ends.
_STREAMED_TURNS: set[asyncio.Future[Any]] = set()


def _log_failure(message: UserMessage, error: BaseException) -> None:
    if isinstance(error, Exception):
        log_failed_turn(logger, "rest", message.sender_id, error)
    else:  # the turn's task cancelled (shutdown)
        logger.error("rest: message from %s failed: %s", message.sender_id, type(error).__name__)


async def _answer_streamed(
    message: UserMessage, on_new_message: OnNewMessage, scope: Scope, receive: Receive, send: Send
) -> None:
    """Rasa's `stream=true` answer: one JSON message per line (NDJSON) as the turn runs.

    The 200 waits for the turn's first message: a turn that could not be recorded before it
    said anything (the conversation busy, the store down) is answered 503 as without
    `stream`, where Rasa answers an empty 200. The turn runs in a task of its own: a client
    that leaves mid-stream does not cut it short (it is stored as without `stream`); one
    that left while the message waited for the conversation's lock has it not handled.
    """
    output = QueueOutputChannel()
    message.output_channel = output
    # Until the turn has the conversation's lock (and so before its first message): a
    # client gone meanwhile means the message is not handled, as without `stream`.
    message.receive = receive
    turn: asyncio.Future[Any] = asyncio.ensure_future(on_new_message(message))
    _STREAMED_TURNS.add(turn)
    turn.add_done_callback(_STREAMED_TURNS.discard)
    turn.add_done_callback(lambda _: output.queue.put_nowait(None))
    try:
        first = await output.queue.get()
    except asyncio.CancelledError:  # the response timeout: the turn goes on, as below
        turn.add_done_callback(lambda ended: _log_outcome(message, ended))
        raise
    finally:
        if message.client is not None:  # the response watches the client from here on
            message.client.stop()
    if first is None:
        error = None if turn.cancelled() else turn.exception()
        if isinstance(error, _NOT_RECORDED):
            raise error
        if error is not None:
            _log_failure(message, error)
    response = StreamingResponse(
        _lines(first, output, message, turn), media_type="text/event-stream"
    )
    await response(scope, receive, send)


def _log_outcome(message: UserMessage, turn: asyncio.Future[Any]) -> None:
    if not turn.cancelled() and (error := turn.exception()) is not None:
        _log_failure(message, error)


async def _lines(
    first: dict[str, Any] | None,
    output: QueueOutputChannel,
    message: UserMessage,
    turn: asyncio.Future[Any],
) -> AsyncIterator[bytes]:
    part = first
    try:
        while part is not None:
            yield (json.dumps(part) + "\n").encode()  # Rasa's own NDJSON spacing
            part = await output.queue.get()
    finally:
        # Ended, or the client left: the turn goes on and is stored; a failure is logged
        # when it ends. (Without a first message its outcome was dealt with already.)
        if first is not None:
            turn.add_done_callback(lambda ended: _log_outcome(message, ended))
