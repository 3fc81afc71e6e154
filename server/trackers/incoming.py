"""Events arriving from outside (an HTTP client's events or message, an action server's
events): the checks beyond `event_from_dict` that keep a conversation within Rasa's schema.

Without them, an entity without a `value` or a `parse_data.text` that is an object was
stored, and every later answer about the conversation broke the schema; a reminder with a
`date_time` that is not a date was stored and never fired. They run where the data arrives,
never on stored events: a conversation already stored must stay loadable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from server.errors import InvalidNluData
from server.trackers.events import (
    ActionExecuted,
    EntitiesAdded,
    Event,
    ReminderScheduled,
    UserUttered,
)
from server.trackers.store import NAME_COLUMN_LENGTH


def check_incoming_events(events: list[Event]) -> None:
    """The NLU data of these events (user messages, added entities), reminders' dates, names
    and entities, and actions' confidences."""
    for event in events:
        if isinstance(event, UserUttered):
            check_parse_data(event.parse_data)
        elif isinstance(event, EntitiesAdded):
            check_entities(event.entities, "entities", "entities")
        elif isinstance(event, ReminderScheduled):
            try:
                datetime.fromisoformat(event.trigger_date_time)
            except ValueError:
                raise InvalidNluData(
                    f"a reminder's 'date_time' must be an ISO 8601 date and time, not "
                    f"{event.trigger_date_time[:60]!r}",
                    "date_time",
                ) from None
            # A process keys its reminders by name (Rasa hashes it): a list or an object
            # would fail there, after the event was stored.
            if isinstance(event.name, (list, dict)):
                raise InvalidNluData(
                    "a reminder's 'name' must be a string, not a list or an object", "name"
                )
            # They become the entities of the user message the reminder triggers.
            if not isinstance(event.entities, dict):
                check_entities(event.entities, "entities", "entities")
        elif isinstance(event, ActionExecuted) and isinstance(event.confidence, bool):
            # (Read when stored: Rasa's `execute` stores any confidence it is given.)
            raise InvalidNluData(
                "'confidence' of an 'action' event must be a number or null", "confidence"
            )


def check_parse_data(parse_data: Any, where: str = "parse_data") -> None:
    """Refuses NLU data a store or a policy cannot use, or that would make every later answer
    about the conversation break the API's schema."""
    if parse_data is None:
        return
    if not isinstance(parse_data, dict):
        raise InvalidNluData(f"'{where}' must be a JSON object.", where)
    text = parse_data.get("text")
    if text is not None and not isinstance(text, str):
        raise InvalidNluData(f"'{where}.text' must be a string or null.", where)
    intent = parse_data.get("intent")
    if intent is not None and not _is_intent(intent):
        raise InvalidNluData(
            f"'{where}.intent' must be an object with a 'name' (a string of at most "
            f"{NAME_COLUMN_LENGTH} characters) and a numeric 'confidence'.",
            where,
        )
    ranking = parse_data.get("intent_ranking", [])
    if not (isinstance(ranking, list) and all(_is_intent(item) for item in ranking)):
        raise InvalidNluData(
            f"'{where}.intent_ranking' must be a list of intents, each an object with a "
            "'name' and a numeric 'confidence'.",
            where,
        )
    check_entities(parse_data.get("entities"), f"{where}.entities", where)
    for key, kind, what in (("message_id", str, "a string"), ("metadata", dict, "an object")):
        value = parse_data.get(key)
        if value is not None and not isinstance(value, kind):
            raise InvalidNluData(f"'{where}.{key}' must be {what} or null.", where)
    if "text_tokens" in parse_data and not _are_offsets(parse_data["text_tokens"]):
        raise InvalidNluData(
            f"'{where}.text_tokens' must be a list of [start, end] integer pairs.", where
        )
    if "response_selector" in parse_data and not isinstance(parse_data["response_selector"], dict):
        raise InvalidNluData(f"'{where}.response_selector' must be an object.", where)


def _are_offsets(tokens: Any) -> bool:
    return isinstance(tokens, list) and all(
        isinstance(pair, list) and len(pair) == 2 and all(_is_integer(n) for n in pair)
        for pair in tokens
    )


def _is_intent(intent: Any) -> bool:
    """A name (null only for "no intent", as Rasa parses an empty message) and, where the
    key is present, a numeric confidence."""
    if not isinstance(intent, dict):
        return False
    name = intent.get("name")
    if "confidence" in intent and not _is_number(intent["confidence"]):
        return False
    return name is None or (isinstance(name, str) and len(name) <= NAME_COLUMN_LENGTH)


def check_entities(entities: Any, where: str, parameter: str) -> None:
    """Entities as Rasa writes them: objects naming their 'entity' and giving its 'value',
    with integer offsets and a numeric confidence where they have them."""
    if entities is None:
        return
    if isinstance(entities, list) and all(_is_entity(e) for e in entities):
        return
    raise InvalidNluData(
        f"'{where}' must be a list of objects, each with an 'entity' name and a 'value' "
        "('start' and 'end', if given, integers; 'confidence', a number; 'extractor', "
        "'role' and 'group', strings or null).",
        parameter,
    )


def _is_entity(entity: Any) -> bool:
    if not isinstance(entity, dict) or not isinstance(entity.get("entity"), str):
        return False
    if "value" not in entity:
        return False
    # Rasa's schema: integer offsets and a numeric confidence where the keys are present.
    for offset in ("start", "end"):
        if offset in entity and not _is_integer(entity[offset]):
            return False
    if "confidence" in entity and not _is_number(entity["confidence"]):
        return False
    return (
        entity.get("confidence_entity") is None or _is_number(entity["confidence_entity"])
    ) and all(
        entity.get(key) is None or isinstance(entity[key], str)
        for key in ("extractor", "role", "group")
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
