"""What enters a turn (a user message) and where the bot's replies go (an output channel)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from server.errors import MessageTooLong

if TYPE_CHECKING:
    import asyncio

# The longest user text a turn, POST /conversations/{id}/messages or POST /model/parse reads.
# Tokenizing and featurizing hold the GIL in C calls, so the event loop, even from a thread:
# a 1.2 MB text held every other conversation 0.26 s, then its 4.8 MB answer 0.1 s more.
# 100,000 characters hold it about 0.03 s.
MAX_TEXT_CHARS = 100_000


def check_text_length(text: str | None) -> None:
    """Raises `MessageTooLong` for a text over `MAX_TEXT_CHARS`, saying both lengths."""
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise MessageTooLong(
            f"The message is {len(text):,} characters long; at most {MAX_TEXT_CHARS:,} are read."
        )


class ClientWatch:
    """Whether the client of a request has gone, watched only from the moment its message has
    to wait for the conversation's lock: a message that takes the lock at once, the usual
    case, starts no task. With the body read, the request's next `receive()` answers when the
    client disconnects (or once the response is sent)."""

    __slots__ = ("_receive", "_task")

    def __init__(self, receive: Callable[[], Awaitable[Any]]) -> None:
        self._receive = receive
        self._task: asyncio.Future[Any] | None = None

    def start(self) -> None:
        import asyncio

        if self._task is None:
            self._task = asyncio.ensure_future(self._receive())

    @property
    def gone(self) -> bool:
        task = self._task
        return task is not None and task.done() and not task.cancelled()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class OutputChannel(Protocol):
    """Delivers bot messages to the user; each channel implements this."""

    name: str

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        """Sends one bot message (text, buttons, image, attachment, elements, custom...)."""
        ...


class CollectingOutputChannel:
    """Keeps the bot's messages so a request/response channel can return them.

    A turn given an empty one (the REST webhook's) uses it as its own output: its `messages`
    are the turn's messages, and `context` keeps the turn's actions' context (see
    `Processor.handle_message`): no second object and list per turn, no copy of each part.
    """

    __slots__ = ("messages", "context")

    name = "collector"
    # A custom channel's output built on it collects too: `execute` and `trigger_intent`
    # answer its messages, as in Rasa (see `OutputChoice`).
    collects = True

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.context: Any = None  # the turn's `ActionContext`, see `Processor._context`

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        self.collect(recipient_id, message)

    def collect(self, recipient_id: str, message: dict[str, Any]) -> bool:
        """`send_response` without a coroutine (always True: every message is kept)."""
        messages = self.messages
        for part in split_message(message, collecting=True):
            messages.append({"recipient_id": recipient_id, **part})
        return True


def split_message(message: dict[str, Any], collecting: bool = False) -> list[dict[str, Any]]:
    """Splits one bot message into the parts Rasa's channels send one by one.

    Text (with its buttons or quick replies) comes first, split on blank lines when it has
    neither; then custom JSON, image, attachment and elements, each as its own part.
    `collecting`: the parts of Rasa's collecting channel (the REST and callback channels'
    messages), which has no quick replies or elements of its own: quick replies come as
    `buttons`, and each element as a text `"<title> : <subtitle>"` with its buttons.
    """
    parts: list[dict[str, Any]] = []
    text = message.get("text")
    choices = message.get("quick_replies")
    if choices:
        key = "buttons" if collecting else "quick_replies"
        parts.append({"text": text, key: choices} if text is not None else {key: choices})
    elif message.get("buttons"):
        buttons = message["buttons"]
        parts.append(
            {"text": text, "buttons": buttons} if text is not None else {"buttons": buttons}
        )
    elif text:
        text = text.strip()
        if "\n\n" in text:
            parts.extend({"text": piece} for piece in text.split("\n\n"))
        else:
            parts.append({"text": text})
    if message.get("custom"):
        parts.append({"custom": message["custom"]})
    if message.get("image"):
        parts.append({"image": message["image"]})
    if message.get("attachment"):
        parts.append({"attachment": message["attachment"]})
    elements = message.get("elements")
    if elements:
        if collecting:
            parts.extend(_element_texts(elements))
        else:
            parts.append({"elements": elements})
    return parts


def _element_texts(elements: Any) -> list[dict[str, Any]]:
    """Elements as Rasa's collecting channel sends them: one text each, with its buttons."""
    texts: list[dict[str, Any]] = []
    for element in elements if isinstance(elements, list) else [elements]:
        if not isinstance(element, dict):
            element = {"title": element}
        text = f"{element.get('title', '')} : {element.get('subtitle', '')}"
        part: dict[str, Any] = {"text": text}
        buttons = element.get("buttons", [])
        if buttons is not None:  # (null buttons: no key, as Rasa's message drops None values)
            part["buttons"] = buttons
        texts.append(part)
    return texts


def new_message_id() -> str:
    """A random id in `uuid.uuid4().hex`'s format (version 4, RFC 4122 variant).

    From the `random` module (reseeded after a fork): os.urandom, behind uuid4, releases the
    GIL, and the event loop then waits for the store thread to hand it back. `bytes.hex`
    writes the 32 digits in half the time of a `:032x` format.
    """
    return (random.getrandbits(128) & _UUID4_KEPT | _UUID4_SET).to_bytes(16).hex()


# uuid4's version (4) and variant (RFC 4122) bits: the bits kept from the random number and
# the bits set, as `(bits & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)`.
_UUID4_KEPT = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


@dataclass(slots=True)  # slots: a smaller object, made every turn
class UserMessage:
    """One incoming message from a channel."""

    text: str | None
    sender_id: str = "default"
    input_channel: str | None = None
    metadata: dict[str, Any] | None = None
    message_id: str = field(default_factory=new_message_id)
    output_channel: OutputChannel | None = None
    parse_data: dict[str, Any] | None = None
    # True when `message_id` is the channel's own id of the message (the same on a retry of
    # its delivery): a conversation already holding it does not take it again, whichever
    # process the retry reaches.
    once: bool = False
    # The ASGI `receive` of the request that brought it (the REST webhook): its client is
    # watched (`client`) from the moment the message has to wait for its conversation's
    # lock, and a message whose client has gone then is not handled (as Rasa, whose Sanic
    # cancels it).
    receive: Callable[[], Awaitable[Any]] | None = None
    # Made by `watch_client`, only when the message waits (not at every turn).
    client: ClientWatch | None = None

    def watch_client(self) -> None:
        """From now on, whether the client of `receive` goes (the message has to wait for
        its conversation's lock; perhaps called more than once)."""
        if self.client is None:
            if self.receive is None:
                return
            self.client = ClientWatch(self.receive)
        self.client.start()
