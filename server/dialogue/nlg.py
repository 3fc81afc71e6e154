"""Response generation from the domain's responses: conditions, channels, variations, `{slot}`."""

from __future__ import annotations

import random
import re
from typing import Any

import orjson

from server.dialogue.domain import Domain

# A message's parts: what a bot event holds as its text and data, and what placeholders are
# filled in (Rasa's, and `elements`). Every other key of a variation or an NLG server's
# answer (`id`, `condition`, `channel`, `metadata`...) goes to the bot event's metadata as
# written, as in Rasa: a prompt template's `{{current_input}}` in `metadata` stays so.
_PARTS = frozenset(
    ("text", "image", "buttons", "attachment", "elements", "quick_replies", "custom")
)
# `{slot}`, and `{{` / `}}` for a brace (Rasa's `str.format` escapes, as in a button payload
# `/inform{{"city": "Paris"}}`). As in Rasa, a slot's name is anything but braces and a line
# break (`{first name}`).
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}\n]+)\}")
_NOT_SAID = ("response_ids",)
# What a bot event holds of a message: text, data and metadata (see `bot_data`).
Said = tuple[str | None, dict[str, Any], dict[str, Any]]
# The JSON types Rasa's NLG response schema accepts for each message key.
_MESSAGE_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "buttons": (list,),
    "elements": (list,),
    "attachment": (dict, list, str),
    "image": (str,),
    "custom": (dict,),
    "quick_replies": (list,),
}


def message_problem(message: Any) -> str | None:
    """What keeps `message` (from an NLG or action server) from being a bot message that
    every channel can send, or None: it must be an object, its keys of the right types."""
    if not isinstance(message, dict):
        return f"{type(message).__name__}, not a message object"
    for key, types in _MESSAGE_TYPES.items():
        value = message.get(key)
        if value is not None and not isinstance(value, types):
            return f"'{key}' has the wrong type ({type(value).__name__})"
    return None


def _no_braces(text: str) -> bool:
    """Whether filling in leaves `text` as it is."""
    return "{" not in text and "}" not in text


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if _no_braces(value):
            return value

        def replace(match: re.Match[str]) -> str:
            key = match.group(1)
            if key is None:
                return match.group(0)[0]
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


def _copied(value: Any) -> Any:
    """`value` with new lists and objects (a key of a variation that is not filled in)."""
    if isinstance(value, list):
        return [_copied(v) for v in value]
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    return value


def _is_literal(key: str, value: Any) -> bool:
    """Whether the variation's `key` is said as `value` itself (nothing to fill, nor copy)."""
    if isinstance(value, str):
        return key not in _PARTS or _no_braces(value)
    return value is None or isinstance(value, (bool, int, float))


def _fills_nothing(value: Any) -> bool:
    """Whether `_fill` gives `value` back unchanged, but for new lists and objects."""
    if isinstance(value, str):
        return _no_braces(value)
    if isinstance(value, list):
        return all(_fills_nothing(v) for v in value)
    if isinstance(value, dict):
        return all(_fills_nothing(v) for v in value.values())
    return True


def _json_copy(value: Any) -> bytes | None:
    """The value's JSON when reading it gives an equal value (not: tuples, non-string keys,
    integers over 64 bits, NaN or infinity)."""
    try:
        encoded = orjson.dumps(value)
    except TypeError:
        return None
    return encoded if orjson.loads(encoded) == value else None


def _condition_met(variation: dict[str, Any], slots: dict[str, Any]) -> bool:
    """Whether the slots hold every value the variation's condition names; text is compared
    without regard to case (`Gold` meets `gold`), as in Rasa, which reads no condition's
    `type` (`slot` is the only one)."""
    for condition in variation.get("condition") or []:
        name = condition.get("name")
        # (A name that is no slot's, a list say, in a model trained before training refused it.)
        value = slots.get(name) if isinstance(name, str) else None
        wanted = condition.get("value")
        if isinstance(value, str) and isinstance(wanted, str):
            if value.casefold() != wanted.casefold():
                return False
        elif value != wanted:
            return False
    return True


class ResponseVariations:
    """A response's variations, sorted once by what picks among them (conditions, channel).

    `choose` picks at random as Rasa does, from the first of: the channel's own variations
    whose conditions the slots meet, the channel's own without a condition, those for no
    channel whose conditions the slots meet, those for no channel without a condition; and
    (unlike Rasa, which says nothing) the unconditional ones of other channels. The
    unconditional ones are sorted once, not filtered on every utterance.
    """

    __slots__ = (
        "source",
        "conditional",
        "unconditional",
        "default",
        "by_channel",
        "said",
        "said_copied",
    )

    def __init__(self, variations: list[dict[str, Any]], response: str) -> None:
        self.source = variations
        self.conditional = [v for v in variations if v.get("condition")]
        self.unconditional = [v for v in variations if not v.get("condition")]
        # For a channel without variations of its own: those for no channel, else any.
        self.default = [v for v in self.unconditional if not v.get("channel")] or list(
            self.unconditional
        )
        # None when a channel is not a string (then filtered per call, as always).
        self.by_channel: dict[str, list[dict[str, Any]]] | None = {}
        for variation in self.unconditional:
            name = variation.get("channel")
            if not name:
                continue
            if not isinstance(name, str):
                self.by_channel = None
                break
            self.by_channel.setdefault(name, []).append(variation)
        # What a bot event uttering `response` holds (`uttered`: text, data and metadata)
        # for the variations with nothing to fill in, split once, by the variation's id
        # (`source` keeps it alive): in `said` when there is nothing to copy but its two
        # dicts (numbers, booleans, nulls, strings: without `{` in a message's parts); else,
        # as JSON, in `said_copied` (buttons, custom payloads without `{`, metadata: reading
        # it is the copy `_filled` would make, in C).
        self.said: dict[int, Said] = {}
        self.said_copied: dict[int, bytes] = {}
        for variation in variations:
            message = {k: v for k, v in variation.items() if k not in _NOT_SAID}
            if all(_is_literal(key, value) for key, value in message.items()):
                self.said[id(variation)] = _said(response, message)
            elif all(_fills_nothing(message[key]) for key in message.keys() & _PARTS):
                encoded = _json_copy(list(_said(response, message)))
                if encoded is not None:
                    self.said_copied[id(variation)] = encoded

    def choose(self, slots: dict[str, Any], channel: str | None) -> dict[str, Any] | None:
        by_channel = self.by_channel
        if self.conditional or by_channel is None:
            pool = self.eligible(slots, channel)
        elif channel and by_channel:
            # What `eligible` gives without conditions, without its lists: the channel's own
            # variations (never an empty list), else the default ones.
            pool = by_channel.get(channel) or self.default
        else:
            pool = self.default
        if not pool:
            return None
        # One variation (the usual response) is the one `random.choice` would pick.
        return pool[0] if len(pool) == 1 else random.choice(pool)

    def eligible(self, slots: dict[str, Any], channel: str | None) -> list[dict[str, Any]]:
        """The variations `choose` picks among (do not modify the list)."""
        met = [v for v in self.conditional if _condition_met(v, slots)] if self.conditional else []
        if channel:
            own_met = [v for v in met if v.get("channel") == channel]
            if own_met:
                return own_met
            own = self._own(channel)
            if own:
                return own
        return [v for v in met if not v.get("channel")] or self.default

    def _own(self, channel: str) -> list[dict[str, Any]]:
        """The channel's own unconditional variations."""
        if self.by_channel is None:
            return [v for v in self.unconditional if v.get("channel") == channel]
        return self.by_channel.get(channel, [])


def response_variations(domain: Domain, name: str) -> ResponseVariations | None:
    """The sorted variations of response `name` (None: the domain has none), kept on the
    domain while its list is the same."""
    variations = domain.responses.get(name)
    if not variations:
        return None
    sorted_variations = domain.response_variations.get(name)
    if sorted_variations is None or sorted_variations.source is not variations:
        sorted_variations = ResponseVariations(variations, name)
        domain.response_variations[name] = sorted_variations
    return sorted_variations


def response_id(
    domain: Domain, name: str, slots: dict[str, Any], channel: str | None
) -> str | None:
    """The `id` Rasa sends an NLG server for response `name`: that of the first variation the
    slots and channel allow (None when ids repeat among those)."""
    variations = response_variations(domain, name)
    pool = variations.eligible(slots, channel) if variations is not None else []
    ids = [v["id"] for v in pool if v.get("id")]
    if not pool or len(ids) != len(set(ids)):
        return None
    return pool[0].get("id")


def _chosen(
    domain: Domain, name: str, slots: dict[str, Any], channel: str | None
) -> tuple[ResponseVariations, dict[str, Any]] | None:
    """The sorted variations of response `name` and the one chosen, or None if the domain
    has no usable variation."""
    variations = response_variations(domain, name)
    if variations is None:
        return None
    variation = variations.choose(slots, channel)
    return None if variation is None else (variations, variation)


def render_response(
    domain: Domain,
    name: str,
    slots: dict[str, Any],
    channel: str | None = None,
    /,
    **kwargs: Any,
) -> dict[str, Any] | None:
    """The message for response `name`, or None if the domain has no usable variation."""
    chosen = _chosen(domain, name, slots, channel)
    if chosen is None:
        return None
    return _filled(chosen[1], slots, kwargs)


def _filled(
    variation: dict[str, Any], slots: dict[str, Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The message of `variation` with the slots' and `kwargs`' values filled in (in its
    parts; its other keys as written), in new lists and objects."""
    values = {**slots, **kwargs}
    message = {
        k: _fill(v, values) if k in _PARTS else _copied(v)
        for k, v in variation.items()
        if k != "response_ids"
    }
    return message


def uttered(
    domain: Domain,
    name: str,
    slots: dict[str, Any],
    channel: str | None = None,
    /,
    **kwargs: Any,
) -> Said | None:
    """What the bot event uttering response `name` holds (text, data, and metadata naming
    the response), all the caller's own; None if the domain has no usable variation. As
    `bot_data` of `render_response`, split once for a variation with nothing to fill in."""
    chosen = _chosen(domain, name, slots, channel)
    if chosen is None:
        return None
    variations, variation = chosen
    said = variations.said.get(id(variation))
    if said is not None:
        text, data, metadata = said
        return text, dict(data), dict(metadata)  # (their values are immutable)
    copied = variations.said_copied.get(id(variation))
    if copied is not None:
        text, data, metadata = orjson.loads(copied)
        return text, data, metadata
    return _said(name, _filled(variation, slots, kwargs))


def _said(name: str, message: dict[str, Any]) -> Said:
    """`bot_data` of a message of response `name`, the name in its metadata (after the
    variation's own keys, as Rasa adds it: the same JSON)."""
    text, data, metadata = bot_data(message)
    return text, data, {**metadata, "utter_action": name}


def bot_data(message: dict[str, Any]) -> Said:
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
    if not data["attachment"]:  # an empty one too, as in Rasa (which reads `or`)
        data["attachment"] = data["image"]
    if message.keys() <= _PARTS:  # the usual message: no comprehension to run
        return text, data, {}
    metadata = {k: v for k, v in message.items() if k not in _PARTS}
    return text, data, metadata
