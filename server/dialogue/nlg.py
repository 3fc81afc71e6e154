"""Response generation from the domain's responses: conditions, channels, variations, `{slot}`."""

from __future__ import annotations

import random
import re
from typing import Any

from server.dialogue.domain import Domain

_MESSAGE_KEYS = ("text", "image", "buttons", "attachment", "elements", "quick_replies", "custom")
_PLACEHOLDER = re.compile(r"\{([^{}\s]+)\}")
_IGNORED_KEYS = ("condition", "channel", "id")


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if "{" not in value:
            return value

        def replace(match: re.Match[str]) -> str:
            key = match.group(1)
            if key in values:
                v = values[key]
                return "None" if v is None else str(v)
            return match.group(0)

        return _PLACEHOLDER.sub(replace, value)
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


def _condition_met(variation: dict[str, Any], slots: dict[str, Any]) -> bool:
    for condition in variation.get("condition") or []:
        if condition.get("type", "slot") != "slot":
            continue
        if slots.get(condition.get("name")) != condition.get("value"):
            return False
    return True


def choose_variation(
    variations: list[dict[str, Any]], slots: dict[str, Any], channel: str | None
) -> dict[str, Any] | None:
    """Picks a variation as Rasa does: matching conditions first, then the channel, at random."""
    conditional = [v for v in variations if v.get("condition") and _condition_met(v, slots)]
    pool = conditional or [v for v in variations if not v.get("condition")]
    if not pool:
        return None
    for_channel = [v for v in pool if v.get("channel") == channel] if channel else []
    if for_channel:
        pool = for_channel
    else:
        pool = [v for v in pool if not v.get("channel")] or pool
    return random.choice(pool)


def render_response(
    domain: Domain,
    name: str,
    slots: dict[str, Any],
    channel: str | None = None,
    **kwargs: Any,
) -> dict[str, Any] | None:
    """The message for response `name`, or None if the domain has no usable variation."""
    variations = domain.responses.get(name)
    if not variations:
        return None
    variation = choose_variation(variations, slots, channel)
    if variation is None:
        return None
    values = {**slots, **kwargs}
    message = {k: _fill(v, values) for k, v in variation.items() if k not in _IGNORED_KEYS}
    if "response_ids" in message:
        message.pop("response_ids")
    return message


def bot_data(message: dict[str, Any]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Splits a rendered message into BotUttered text, data and metadata, as Rasa does."""
    text = message.get("text")
    data = {
        "elements": message.get("elements"),
        "quick_replies": message.get("quick_replies"),
        "buttons": message.get("buttons"),
        "attachment": message.get("attachment"),
        "image": message.get("image"),
        "custom": message.get("custom"),
    }
    if data["attachment"] is None and data["image"] is not None:
        data["attachment"] = data["image"]
    metadata = {k: v for k, v in message.items() if k not in _MESSAGE_KEYS and k != "template_name"}
    return text, data, metadata
