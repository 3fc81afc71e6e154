"""The input channel contract: a named webhook router, built from its credentials.yml entry.

A channel turns its platform's payloads into `UserMessage`s and hands them to
`on_new_message` (the agent); its output channel sends the bot's replies back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from fastapi import APIRouter
from starlette.types import ASGIApp

from server.api.query import FirstValueRoute
from server.dialogue.messages import OutputChannel, UserMessage, check_text_length
from server.errors import BotServerError, MessageTooLong, StoreUnavailable
from server.outages import OUTAGES
from server.tasks import said_when_ended, to_its_end

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]

WEBHOOKS_PREFIX = "/webhooks"


class InputChannel:
    """Base of every channel; subclasses set `name` and implement `router`."""

    name: ClassVar[str] = ""
    # The credentials.yml keys a built-in channel reads: any other is warned about at start
    # (a misspelt key is otherwise ignored without a word, as in Rasa).
    settings_keys: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> InputChannel:
        """Builds the channel from its credentials.yml entry (None when it has no keys)."""
        return cls()

    def url_prefix(self) -> str:
        """Where the router is mounted: `/webhooks/<name>`, as in Rasa."""
        return f"{WEBHOOKS_PREFIX}/{self.name}"

    def router(self, on_new_message: OnNewMessage) -> APIRouter:
        """The channel's routes, already carrying `url_prefix()`."""
        raise NotImplementedError

    def asgi_mount(self, on_new_message: OnNewMessage) -> tuple[str, ASGIApp] | None:
        """A path and an ASGI app to mount beside the routes (socket.io), or None."""
        return None

    def use_endpoints(self, endpoints: dict[str, Any]) -> None:
        """Takes what the channel shares with the stores from endpoints.yml's sections (the
        socket.io channel: a Redis, for its rooms across workers and hosts); most need none."""
        return None

    def served_with(self, others: frozenset[str]) -> None:
        """Told the names of the server's other channels that push messages on their own
        (whose class defines `get_output_channel()`), once all are built (the REST channel: its
        messages may not claim to come through one of them); most need none."""
        return None

    def get_output_channel(self) -> OutputChannel | None:
        """Where messages the user did not ask for (reminders, trigger_intent) go, if anywhere."""
        return None

    async def aclose(self) -> None:
        """Releases HTTP clients and background work; called when the server stops."""
        return None


def reply_choices(part: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A message part's buttons or quick replies as objects with `title` and `payload`, or
    None when it has none. An action server may send bare strings (or anything else): each
    becomes a choice whose title and payload are its text, so no reply is lost to its shape."""
    choices = part.get("buttons") or part.get("quick_replies")
    if choices is None:
        return None
    if not isinstance(choices, list):
        choices = [choices]
    return [
        choice if isinstance(choice, dict) else {"title": str(choice), "payload": str(choice)}
        for choice in choices
    ]


def health_router(prefix: str) -> APIRouter:
    """A router with Rasa's `GET <prefix>/` health answer, for a channel to add routes to."""
    router = APIRouter(prefix=prefix, route_class=FirstValueRoute)

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    router.add_api_route("/", health, methods=["GET"], include_in_schema=False)
    return router


def log_failed_turn(logger: logging.Logger, channel: str, sender_id: Any, error: Exception) -> None:
    """A turn a channel could not finish: one line for a failure of ours that says it all,
    with the traceback for a bug (which nobody could mend from its message alone); a store
    that cannot be reached is counted in its outage's lines (`server.outages`) instead."""
    if counted_in_outage(logger, channel, sender_id, error, "as failed turns"):
        return
    logger.error(
        "%s: message from %s failed: %s: %s",
        channel,
        sender_id,
        type(error).__name__,
        error,
        exc_info=None if isinstance(error, BotServerError) else error,
    )


def turn_to_its_end(
    logger: logging.Logger, channel: str, on_new_message: OnNewMessage, message: UserMessage
) -> Awaitable[Any]:
    """`on_new_message(message)` for a webhook: when the response timeout cuts the request
    off (its client is answered 503), the turn runs on to its end under the conversation's
    lock and is stored whole, and how it ended is logged then. Before, it was cancelled:
    neither the message nor the bot's answer was stored."""
    sender_id = message.sender_id
    ended = said_when_ended(
        logger,
        lambda error: log_failed_turn(logger, channel, sender_id, error),
        "%s: the turn of a message from %s",
        channel,
        sender_id,
    )
    return to_its_end(on_new_message(message), ended)


def counted_in_outage(
    logger: logging.Logger, channel: str, sender_id: Any, error: Exception, answer: str
) -> bool:
    """Whether `error` is a store that cannot be reached, and so counted in its outage's log
    lines (one when it goes away, one a minute, one when it is back), not one line per
    message; the message's own line is at DEBUG. `answer`: what the users get."""
    if not isinstance(error, StoreUnavailable) or not error.dependency:
        return False
    OUTAGES.refused(error.dependency, error.reason, f"{answer} ({channel})")
    logger.debug("%s: message from %s failed: %s", channel, sender_id, error)
    return True


async def refused_as_too_long(message: UserMessage) -> bool:
    """Whether `message` is too long to read; if so the user is told so through its output
    channel, as a bot message (the only thing chat widgets show), and nothing is stored.

    For channels whose webhook cannot answer the user itself (socket.io, Rocket.Chat): the
    turn would refuse the text and the user, left without any reply, would wait.
    """
    try:
        check_text_length(message.text)
    except MessageTooLong as e:
        logger.warning(
            "%s: a message from %s was refused: %s", message.input_channel, message.sender_id, e
        )
        if message.output_channel is not None:
            await message.output_channel.send_response(message.sender_id, {"text": str(e)})
        return True
    return False
