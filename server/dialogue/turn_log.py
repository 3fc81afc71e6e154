"""The debug lines of a turn (`botserver shell --debug`, `run -vv`): how the message was
read, and which policy chose each action, how surely, and what the action did."""

from __future__ import annotations

import logging
import reprlib
from typing import Any

from server.trackers.events import ActionExecuted, DefinePrevUserUtteredFeaturization, Event

# The processor's logger: these lines and its per-turn summary are one switch (`-vv`), asked
# once a turn by the processor.
logger = logging.getLogger("server.dialogue.processor")

# A value longer than this is cut in a debug line (a text slot holding a whole message).
VALUE_CHARS = 60


class _FromTheStart(reprlib.Repr):
    """reprlib's Repr, but a long string shows its start only (reprlib's shows its start and
    end, a text the value never held): its first characters, the rest cut with the line."""

    def repr_str(self, x: str, level: int) -> str:
        return repr(x[: self.maxstring + 1])


# Shows a value's first items and characters only: a slot holding a huge list or text costs
# a few dozen items' repr a line, not the whole value's (then cut to VALUE_CHARS).
_FIRST_ITEMS = _FromTheStart()
_FIRST_ITEMS.maxlevel = 3
_FIRST_ITEMS.maxlist = _FIRST_ITEMS.maxtuple = _FIRST_ITEMS.maxset = _FIRST_ITEMS.maxdict = 8
_FIRST_ITEMS.maxstring = _FIRST_ITEMS.maxlong = _FIRST_ITEMS.maxother = VALUE_CHARS


def log_message(sender_id: str, text: str | None, parse_data: dict[str, Any]) -> None:
    """`ana: message 'hi' is intent greet (confidence 0.98); entities: none`."""
    intent = parse_data.get("intent") or {}
    confidence = intent.get("confidence")
    sure = f" (confidence {confidence:.2f})" if isinstance(confidence, int | float) else ""
    entities = ", ".join(_entity(e) for e in parse_data.get("entities") or []) or "none"
    logger.debug(
        "%s: message %s is intent %s%s; entities: %s",
        sender_id,
        _short(text),
        intent.get("name"),
        sure,
        entities,
    )


def log_action(
    sender_id: str, action: str, policy: str | None, confidence: float | None, events: list[Event]
) -> None:
    """`ana: next action utter_greet by RulePolicy (confidence 1.00); events: bot` (the
    events the action logged besides its own `action` event)."""
    sure = f" (confidence {confidence:.2f})" if confidence is not None else ""
    done = ", ".join(_event(e) for e in events if not _is_run_of(e, action)) or "none"
    logger.debug(
        "%s: next action %s by %s%s; events: %s",
        sender_id,
        action,
        policy or "no policy",
        sure,
        done,
    )


def _is_run_of(event: Event, action: str) -> bool:
    """The action's own `action` event, or the featurization mark logged with it."""
    if isinstance(event, DefinePrevUserUtteredFeaturization):
        return True
    return isinstance(event, ActionExecuted) and event.action_name == action


def _entity(entity: dict[str, Any]) -> str:
    name = entity.get("entity")
    for part in ("role", "group"):
        if entity.get(part) is not None:
            name = f"{name}#{entity[part]}"
    return f"{name}={_short(entity.get('value'))}"


def _event(event: Event) -> str:
    """The event's type, with the slot, action or loop it names (`slot cuisine='italian'`,
    `action action_listen`, `active_loop restaurant_form`)."""
    body = event.as_dict()
    kind = body.get("event")
    name = body.get("name")
    if kind == "slot":
        return f"slot {name}={_short(body.get('value'))}"
    if kind == "action":
        return f"action {body.get('name')}"
    if kind in ("active_loop", "followup", "reminder", "cancel_reminder") and name:
        return f"{kind} {name}"
    return str(kind)


def _short(value: Any) -> str:
    shown = _FIRST_ITEMS.repr(value)
    return shown if len(shown) <= VALUE_CHARS else shown[: VALUE_CHARS - 3] + "..."
