"""Rasa's conversation events as plain, typed values.

The wire format is the data model: `as_dict()` yields exactly the JSON Rasa sends, in Rasa's
key order, and `event_from_dict()` reads it back. Timestamps are kept as given.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from server.errors import InvalidEvent, clipped

# A list of more events than this (a long conversation, a bulk PUT or POST of events) is
# converted, folded, written out or read in a thread, wherever that happens: 100,000 events
# are 0.2-1 s of Python that would hold every other conversation and /health.
OFF_LOOP_EVENTS = 1_000
# Off the loop, such a list's work that runs in C and holds the GIL for a whole call (JSON
# writing, freeing) is done this many events per call, so the loop gets the GIL in between.
EVENTS_PER_PIECE = 500

T = TypeVar("T")


async def off_loop_if_long(work: Callable[..., T], items: Sequence[Any], *args: Any) -> T:
    """`work(items, *args)`: in a thread when `items` are more than OFF_LOOP_EVENTS, else
    here (a short list's work costs less than the hop)."""
    return await off_loop_for(items, work, items, *args)


async def off_loop_for(items: Sequence[Any], work: Callable[..., T], *args: Any) -> T:
    """`work(*args)`: in a thread when `items` (the events it walks) are more than
    OFF_LOOP_EVENTS, else here."""
    if len(items) > OFF_LOOP_EVENTS:
        import asyncio  # (not at import: the CLI's data commands read events without a loop)

        return await asyncio.to_thread(work, *args)
    return work(*args)


ACTION_LISTEN = "action_listen"
ACTION_SESSION_START = "action_session_start"


@dataclass(eq=False)
class Event:
    """Base of every event: a type name, a timestamp and optional metadata."""

    type_name: ClassVar[str] = ""
    # Whether as_dict includes `metadata` even when it is empty (user and bot do). Rasa then
    # writes it after the event's own keys, so an empty one comes last.
    always_metadata: ClassVar[bool] = False

    # `time.time` itself (not a function calling it): one Python call less per event.
    timestamp: float = field(default_factory=time.time, kw_only=True)
    metadata: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def _fields(self) -> dict[str, Any]:
        return {}

    def as_dict(self) -> dict[str, Any]:
        # Built afresh on every call, never cached: the processor stamps `metadata` (model_id)
        # after the event is applied and before it is saved.
        metadata = self.metadata
        d: dict[str, Any] = {"event": self.type_name, "timestamp": self.timestamp}
        if metadata:
            d["metadata"] = metadata
        d.update(self._fields())
        if self.always_metadata and "metadata" not in d:
            d["metadata"] = metadata
        return d

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        a, b = self.as_dict(), other.as_dict()
        a.pop("timestamp", None)
        b.pop("timestamp", None)
        return a == b

    def __hash__(self) -> int:
        return hash((self.type_name, repr(sorted(self._fields().items(), key=str))))


def _str_or_none(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidEvent(f"'{key}' of a '{d.get('event')}' event must be a string or null")
    return value


@dataclass(eq=False)
class UserUttered(Event):
    """The user said something; parse_data holds the NLU result."""

    type_name: ClassVar[str] = "user"
    always_metadata: ClassVar[bool] = True

    text: str | None = None
    parse_data: dict[str, Any] = field(default_factory=dict)
    input_channel: str | None = None
    message_id: str | None = None

    def __post_init__(self) -> None:
        # As in Rasa, the NLU data holds the message's metadata as it was when the event was
        # made: the model_id and assistant_id stamped on the event later stay out of it (and
        # so out of `latest_message`).
        if "metadata" not in self.parse_data:
            self.parse_data = {**self.parse_data, "metadata": dict(self.metadata)}

    @property
    def intent(self) -> dict[str, Any]:
        return self.parse_data.get("intent") or {}

    @property
    def intent_name(self) -> str | None:
        return self.intent.get("name")

    @property
    def entities(self) -> list[dict[str, Any]]:
        return self.parse_data.get("entities") or []

    def full_parse_data(self) -> dict[str, Any]:
        """parse_data with Rasa's leading keys, as stored and as `latest_message`."""
        pd = self.parse_data
        out: dict[str, Any] = {
            "intent": {},
            "entities": [],
            "text": self.text,
            "message_id": self.message_id,
            "metadata": self.metadata,
        }
        # One C-level update instead of a loop: the leading keys keep their places and take
        # parse_data's values where it has them; the other keys follow in its order.
        out.update(pd)
        if out["intent"] is None:
            out["intent"] = {}
        if out["entities"] is None:
            out["entities"] = []
        return out

    def _fields(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "parse_data": self.full_parse_data(),
            "input_channel": self.input_channel,
            "message_id": self.message_id,
        }

    def as_dict(self) -> dict[str, Any]:
        # Event.as_dict's keys in one literal (a user event is saved and sent every turn);
        # an empty metadata comes last, as Rasa writes it.
        metadata = self.metadata
        d: dict[str, Any] = {"event": "user", "timestamp": self.timestamp}
        if metadata:
            d["metadata"] = metadata
        d["text"] = self.text
        d["parse_data"] = self.full_parse_data()
        d["input_channel"] = self.input_channel
        d["message_id"] = self.message_id
        if not metadata:
            d["metadata"] = metadata
        return d

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        parse_data = d.get("parse_data")
        if parse_data is None:
            # Rasa crashes here; a user event without NLU data is an unparsed message.
            parse_data = {}
        if not isinstance(parse_data, dict):
            raise InvalidEvent("'parse_data' of a 'user' event must be an object")
        parse_data = dict(parse_data)
        message_id = d.get("message_id", parse_data.get("message_id"))
        if message_id is not None and not isinstance(message_id, str):
            raise InvalidEvent("'message_id' of a 'user' event must be a string or null")
        if "entities" in parse_data and not isinstance(parse_data["entities"], list):
            raise InvalidEvent("'entities' in 'parse_data' must be a list")
        return {
            "text": _str_or_none(d, "text"),
            "parse_data": parse_data,
            "input_channel": _str_or_none(d, "input_channel"),
            "message_id": message_id,
        }


@dataclass(eq=False)
class DefinePrevUserUtteredFeaturization(Event):
    """Records whether the last user message was featurized from text or intent."""

    type_name: ClassVar[str] = "user_featurization"

    use_text_for_featurization: bool = False

    def _fields(self) -> dict[str, Any]:
        return {"use_text_for_featurization": self.use_text_for_featurization}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {"use_text_for_featurization": bool(d.get("use_text_for_featurization", False))}


@dataclass(eq=False)
class EntitiesAdded(Event):
    """Entities appended to the latest user message."""

    type_name: ClassVar[str] = "entities"

    entities: list[dict[str, Any]] = field(default_factory=list)

    def _fields(self) -> dict[str, Any]:
        return {"entities": self.entities}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        entities = d.get("entities")
        if not isinstance(entities, list):
            raise InvalidEvent("an 'entities' event needs a list of 'entities'")
        return {"entities": entities}


@dataclass(eq=False)
class BotUttered(Event):
    """The bot said something; `data` holds buttons, images and custom payloads."""

    type_name: ClassVar[str] = "bot"
    always_metadata: ClassVar[bool] = True

    text: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def _fields(self) -> dict[str, Any]:
        return {"text": self.text, "data": self.data}

    def as_dict(self) -> dict[str, Any]:
        # Event.as_dict in one literal (every turn saves a bot event or two); an empty
        # metadata comes last, as Rasa writes it.
        metadata = self.metadata
        if metadata:
            return {
                "event": "bot",
                "timestamp": self.timestamp,
                "metadata": metadata,
                "text": self.text,
                "data": self.data,
            }
        return {
            "event": "bot",
            "timestamp": self.timestamp,
            "text": self.text,
            "data": self.data,
            "metadata": metadata,
        }

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        data = d.get("data") or {}
        if not isinstance(data, dict):
            raise InvalidEvent("'data' of a 'bot' event must be an object")
        return {"text": _str_or_none(d, "text"), "data": data}

    def message(self) -> dict[str, Any]:
        """What an output channel receives: data, text, timestamp and metadata."""
        m = dict(self.data)
        m["text"] = self.text
        m["timestamp"] = self.timestamp
        m.update(self.metadata)
        # Rasa stores an image as the attachment too; a channel must send it only once.
        if m.get("image") is not None and m.get("image") == m.get("attachment"):
            m["attachment"] = None
        return m


@dataclass(eq=False)
class SlotSet(Event):
    """A slot takes a value."""

    type_name: ClassVar[str] = "slot"

    key: str = ""
    value: Any = None

    def _fields(self) -> dict[str, Any]:
        return {"name": self.key, "value": self.value}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        name = d.get("name")
        if not isinstance(name, str) or "value" not in d:
            raise InvalidEvent("a 'slot' event needs a string 'name' and a 'value'")
        return {"key": name, "value": d["value"]}


@dataclass(eq=False)
class _Plain(Event):
    """An event that carries nothing but its type."""


@dataclass(eq=False)
class AllSlotsReset(_Plain):
    """Every slot goes back to its initial value."""

    type_name: ClassVar[str] = "reset_slots"


@dataclass(eq=False)
class Restarted(_Plain):
    """The conversation restarts: state is reset and a new session follows."""

    type_name: ClassVar[str] = "restart"


@dataclass(eq=False)
class SessionStarted(_Plain):
    """A new session starts: state is reset, earlier events are kept."""

    type_name: ClassVar[str] = "session_started"


@dataclass(eq=False)
class UserUtteranceReverted(_Plain):
    """Everything back to before the last user message is undone."""

    type_name: ClassVar[str] = "rewind"


@dataclass(eq=False)
class ActionReverted(_Plain):
    """Everything back to before the last action is undone."""

    type_name: ClassVar[str] = "undo"


@dataclass(eq=False)
class StoryExported(_Plain):
    """Asks for the conversation to be written out as a story."""

    type_name: ClassVar[str] = "export"

    path: str | None = None

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {"path": d.get("path")}


@dataclass(eq=False)
class ConversationPaused(_Plain):
    """The bot stops predicting until resumed."""

    type_name: ClassVar[str] = "pause"


@dataclass(eq=False)
class ConversationResumed(_Plain):
    """The bot predicts again."""

    type_name: ClassVar[str] = "resume"


@dataclass(eq=False)
class ActionExecuted(Event):
    """An action ran (or, in e2e stories, a bot text was said)."""

    type_name: ClassVar[str] = "action"

    action_name: str | None = None
    policy: str | None = None
    confidence: float | None = None
    action_text: str | None = None
    hide_rule_turn: bool = False

    def _fields(self) -> dict[str, Any]:
        return {
            "name": self.action_name,
            "policy": self.policy,
            "confidence": self.confidence,
            "action_text": self.action_text,
            "hide_rule_turn": self.hide_rule_turn,
        }

    def as_dict(self) -> dict[str, Any]:
        # Event.as_dict without the call and the dict of `_fields` (two or three a turn),
        # each case one literal: a dict made at its size, not grown key by key.
        metadata = self.metadata
        if metadata:
            return {
                "event": "action",
                "timestamp": self.timestamp,
                "metadata": metadata,
                "name": self.action_name,
                "policy": self.policy,
                "confidence": self.confidence,
                "action_text": self.action_text,
                "hide_rule_turn": self.hide_rule_turn,
            }
        return {
            "event": "action",
            "timestamp": self.timestamp,
            "name": self.action_name,
            "policy": self.policy,
            "confidence": self.confidence,
            "action_text": self.action_text,
            "hide_rule_turn": self.hide_rule_turn,
        }

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        name = _str_or_none(d, "name")
        text = _str_or_none(d, "action_text")
        if name is None and text is None:
            raise InvalidEvent("an 'action' event needs a 'name' or an 'action_text'")
        confidence = d.get("confidence")
        if confidence is not None and not isinstance(confidence, (int, float)):
            raise InvalidEvent("'confidence' of an 'action' event must be a number or null")
        return {
            "action_name": name,
            "policy": _str_or_none(d, "policy"),
            "confidence": confidence,
            "action_text": text,
            "hide_rule_turn": bool(d.get("hide_rule_turn", False)),
        }


@dataclass(eq=False)
class ActionExecutionRejected(Event):
    """An action refused to run (for example a form that cannot fill its slot)."""

    type_name: ClassVar[str] = "action_execution_rejected"

    # None when the sender did not say which action (Rasa and its spec allow that).
    action_name: str | None = None
    policy: str | None = None
    confidence: float | None = None

    def _fields(self) -> dict[str, Any]:
        return {"name": self.action_name, "policy": self.policy, "confidence": self.confidence}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {
            "action_name": _str_or_none(d, "name"),
            "policy": _str_or_none(d, "policy"),
            "confidence": d.get("confidence"),
        }


@dataclass(eq=False)
class FollowupAction(Event):
    """Forces the next action."""

    type_name: ClassVar[str] = "followup"

    action_name: str = ""

    def _fields(self) -> dict[str, Any]:
        return {"name": self.action_name}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        name = _str_or_none(d, "name")
        if not name:
            raise InvalidEvent("a 'followup' event needs a 'name'")
        return {"action_name": name}


@dataclass(eq=False)
class ActiveLoop(Event):
    """A loop (form) becomes active, or none is (name null)."""

    type_name: ClassVar[str] = "active_loop"

    name: str | None = None

    def _fields(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {"name": _str_or_none(d, "name")}


@dataclass(eq=False)
class LoopInterrupted(Event):
    """The active loop was interrupted by another action, or is no longer."""

    type_name: ClassVar[str] = "loop_interrupted"

    is_interrupted: bool = False

    def _fields(self) -> dict[str, Any]:
        return {"is_interrupted": self.is_interrupted}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {"is_interrupted": bool(d.get("is_interrupted", False))}


@dataclass(eq=False)
class ReminderScheduled(Event):
    """Asks for an intent to be triggered at a later time."""

    type_name: ClassVar[str] = "reminder"

    intent: str = ""
    trigger_date_time: str = ""
    entities: Any = None
    name: str = field(default_factory=lambda: str(uuid.uuid1()))
    kill_on_user_message: bool = True

    def _fields(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "date_time": self.trigger_date_time,
            "entities": self.entities,
            "name": self.name,
            "kill_on_user_msg": self.kill_on_user_message,
        }

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        intent, date_time = d.get("intent"), d.get("date_time")
        if not isinstance(intent, str) or not isinstance(date_time, str):
            raise InvalidEvent("a 'reminder' event needs an 'intent' and an ISO 'date_time'")
        return {
            "intent": intent,
            "trigger_date_time": _isoformat(date_time),
            "entities": d.get("entities"),
            "name": d.get("name") or str(uuid.uuid1()),
            "kill_on_user_message": bool(d.get("kill_on_user_msg", True)),
        }


def _isoformat(date_time: str) -> str:
    """An ISO 8601 date and time as Rasa writes it back (`datetime.isoformat()`: a `T`, seconds,
    `+00:00` for `Z`); any other text as it is (the API refuses it on arrival, and a stored
    event stays loadable)."""
    try:
        return datetime.fromisoformat(date_time).isoformat()
    except ValueError:
        return date_time


@dataclass(eq=False)
class ReminderCancelled(Event):
    """Cancels reminders matching a name, intent or entities (all when none is given).

    As in Rasa, the filters are read on input but not serialised.
    """

    type_name: ClassVar[str] = "cancel_reminder"

    name: str | None = None
    intent: str | None = None
    entities: Any = None

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {"name": d.get("name"), "intent": d.get("intent"), "entities": d.get("entities")}


@dataclass(eq=False)
class AgentUttered(Event):
    """A human agent or another bot said something."""

    type_name: ClassVar[str] = "agent"

    text: str | None = None
    data: Any = None

    def _fields(self) -> dict[str, Any]:
        return {"text": self.text, "data": self.data}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {"text": d.get("text"), "data": d.get("data")}


@dataclass(eq=False)
class StackUpdated(Event):
    """The dialogue stack changed (Rasa Pro's CALM); carried through unchanged."""

    type_name: ClassVar[str] = "stack"

    update: Any = None

    def _fields(self) -> dict[str, Any]:
        return {"update": self.update}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {"update": d.get("update")}


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type_name: cls
    for cls in (
        UserUttered,
        DefinePrevUserUtteredFeaturization,
        EntitiesAdded,
        BotUttered,
        SlotSet,
        AllSlotsReset,
        Restarted,
        SessionStarted,
        UserUtteranceReverted,
        ActionReverted,
        StoryExported,
        ConversationPaused,
        ConversationResumed,
        ActionExecuted,
        ActionExecutionRejected,
        FollowupAction,
        ActiveLoop,
        LoopInterrupted,
        ReminderScheduled,
        ReminderCancelled,
        AgentUttered,
        StackUpdated,
    )
}
# Legacy names Rasa still reads: `form` is an active_loop, `form_validation` a loop_interrupted.
_LEGACY = {"form": "active_loop", "form_validation": "loop_interrupted"}


def event_from_dict(d: Any) -> Event:
    """Builds an event from Rasa's JSON; raises InvalidEvent on anything malformed."""
    if not isinstance(d, dict):
        raise InvalidEvent(f"an event must be a JSON object, not {type(d).__name__}")
    type_name = d.get("event")
    if not isinstance(type_name, str):
        raise InvalidEvent("an event needs an 'event' key naming its type")
    if type_name in _LEGACY:
        d = dict(d)
        if type_name == "form_validation":
            d["is_interrupted"] = not d.get("validate", True)
        type_name = _LEGACY[type_name]
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise InvalidEvent(f"unknown event type '{clipped(type_name)}'")
    timestamp = d.get("timestamp")
    if timestamp is None:
        timestamp = time.time()
    elif not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        raise InvalidEvent("an event's 'timestamp' must be a number")
    metadata = d.get("metadata")
    if metadata is None:  # (null is none, as in Rasa's event schema; [], false or 0 is not)
        metadata = {}
    elif not isinstance(metadata, dict):
        raise InvalidEvent("an event's 'metadata' must be an object")
    return cls(timestamp=timestamp, metadata=dict(metadata), **cls._from_fields(d))


def left_out_by_rasa(d: Any) -> bool:
    """Whether a Rasa 3.6 server leaves this stored item out of a tracker it loads (and so
    out of `rasa export`): Rasa Core 0.x's `topic` events, and items without an `event`."""
    if not isinstance(d, dict):
        return False
    kind = d.get("event")
    return kind is None or kind == "topic"


def stored_events(dicts: Iterable[Any], left_out: list[Any]) -> Iterator[Event]:
    """The events of a stored conversation's items, those `left_out_by_rasa` put in
    `left_out` instead. Before, one such item made the conversation unloadable."""
    for d in dicts:
        if left_out_by_rasa(d):
            left_out.append(d)
        else:
            yield event_from_dict(d)


def events_from_list(items: Any) -> list[Event]:
    """Reads a list of event dicts (or one dict) as sent to the HTTP API."""
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise InvalidEvent("events must be a JSON object or a list of objects")
    return [event_sent(item) for item in items]


def event_sent(d: Any) -> Event:
    """An event that arrives from outside (an HTTP client, an action server): read as
    `event_from_dict` reads it, with what `_sent` refuses refused too."""
    return event_from_dict(_sent(d))


# The flags of each event type (its name, with its article) that are read as booleans. Sent
# as anything else (`"false"`, `1`), read by its truth value, `"false"` would act and be
# stored as true: an action hidden from the rules' history, a form interrupted, a reminder
# killed by the next message.
_FLAGS = {
    "action": ("an 'action'", ("hide_rule_turn",)),
    "loop_interrupted": ("a 'loop_interrupted'", ("is_interrupted",)),
    "form_validation": ("a 'form_validation'", ("validate",)),
    "user_featurization": ("a 'user_featurization'", ("use_text_for_featurization",)),
    "reminder": ("a 'reminder'", ("kill_on_user_msg",)),
}


def _sent(item: Any) -> Any:
    """An event a client sent, refused where reading it as stored ones are read would change
    its meaning (a stored event is read as it is: its conversation must stay loadable)."""
    type_name = item.get("event") if isinstance(item, dict) else None
    if isinstance(type_name, str) and type_name in _FLAGS:
        kind, flags = _FLAGS[type_name]
        for flag in flags:
            value = item.get(flag)
            if value is not None and not isinstance(value, bool):
                raise InvalidEvent(f"'{flag}' of {kind} event must be true or false")
    return item
