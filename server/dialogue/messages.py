"""What enters a turn (a user message) and where the bot's replies go (an output channel)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol


class OutputChannel(Protocol):
    """Delivers bot messages to the user; each channel implements this."""

    name: str

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        """Sends one bot message (text, buttons, image, attachment, elements, custom...)."""
        ...


class CollectingOutputChannel:
    """Keeps the bot's messages so a request/response channel can return them."""

    name = "collector"

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        out: dict[str, Any] = {"recipient_id": recipient_id}
        for key in ("text", "image", "buttons", "attachment", "elements", "quick_replies"):
            if message.get(key) is not None:
                out[key] = message[key]
        if message.get("custom") is not None:
            out["custom"] = message["custom"]
        self.messages.append(out)


@dataclass
class UserMessage:
    """One incoming message from a channel."""

    text: str | None
    sender_id: str = "default"
    input_channel: str | None = None
    metadata: dict[str, Any] | None = None
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    output_channel: OutputChannel | None = None
    parse_data: dict[str, Any] | None = None
