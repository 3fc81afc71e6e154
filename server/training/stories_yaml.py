"""Read the `stories:` and `rules:` sections of Rasa 3 YAML files (training and test
stories) into StorySteps; every mistake names the file and line."""

from __future__ import annotations

import datetime
import itertools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.dialogue.story_steps import STORY_START, StoryStep
from server.errors import InvalidProjectFile, brief
from server.json_values import loads_untrusted
from server.nlu.entity_markup import parse_annotated_text
from server.trackers.events import (
    ActionExecuted,
    ActionReverted,
    ActiveLoop,
    AllSlotsReset,
    ConversationPaused,
    ConversationResumed,
    Event,
    Restarted,
    SessionStarted,
    SlotSet,
    StoryExported,
    UserUtteranceReverted,
    UserUttered,
)
from server.training.yaml_io import (
    LineDict,
    check_example_length,
    check_version,
    line_of,
    read_yaml_file,
)

logger = logging.getLogger(__name__)

# Text a bare `slot_was_set: - name` stands for, by slot type (as in Rasa).
FILLED_TEXT = "filled"
_BARE_SLOT_VALUES: dict[str, Any] = {"text": FILLED_TEXT, "list": [FILLED_TEXT]}
# `action: restart` and friends name an event, not an action, as in Rasa's story reader.
_EVENT_ACTIONS: dict[str, type[Event]] = {
    cls.type_name: cls
    for cls in (
        Restarted,
        SessionStarted,
        AllSlotsReset,
        UserUtteranceReverted,
        ActionReverted,
        ConversationPaused,
        ConversationResumed,
        StoryExported,
    )
}
# Allowed keys per kind of step, the kind being the first key found in this order.
_STEP_KEYS: dict[str, frozenset[str]] = {
    "intent": frozenset({"intent", "user", "entities", "metadata"}),
    "user": frozenset({"intent", "user", "entities", "metadata"}),
    "or": frozenset({"or"}),
    "action": frozenset({"action", "metadata"}),
    "bot": frozenset({"bot", "metadata"}),
    "checkpoint": frozenset({"checkpoint", "slot_was_set", "metadata"}),
    "slot_was_set": frozenset({"slot_was_set", "metadata"}),
    "active_loop": frozenset({"active_loop", "metadata"}),
}
_RULE_STEP_KINDS = frozenset({"intent", "user", "or", "action", "slot_was_set", "active_loop"})
_STORY_KEYS = frozenset({"story", "steps", "metadata"})
_RULE_KEYS = frozenset(
    {"rule", "steps", "metadata", "condition", "conversation_start", "wait_for_user_input"}
)
# `/intent@0.9{"entity": "value"}` typed as a user message.
_INTENT_MESSAGE = re.compile(r"^/(?P<intent>[^{@]+)(?P<confidence>@[0-9.]+)?(?P<entities>\{.+\})?")
# Bound on the steps a story's `or:` alternatives may expand to.
_MAX_EXPANSION = 1024


@dataclass
class _Part:
    """A story step under construction. `line`: where a part after an intermediate
    checkpoint starts (its first step); a story's first part is where the story starts."""

    events: list[Event] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    end: list[str] = field(default_factory=list)
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    line: int | None = None
    lines: list[int | None] = field(default_factory=list)


def read_story_file(
    path: str | Path,
    slot_types: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
) -> list[StoryStep]:
    """Reads the stories and rules of one YAML file (other sections are ignored).

    `slot_types` (slot name to type) gives bare `slot_was_set` names their value; warnings
    (things Rasa accepts with a warning) go to `warnings` when given, else to the log.
    """
    data = read_yaml_file(path)
    return read_story_data(data, str(path), slot_types, warnings)


def read_story_data(
    data: Any,
    filename: str,
    slot_types: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
) -> list[StoryStep]:
    """Reads stories and rules from a parsed (line-aware) YAML document."""
    if data is None:
        return []
    if not isinstance(data, dict):
        raise InvalidProjectFile("expected a mapping at the top level", filename, line_of(data))
    reader = _Reader(filename, dict(slot_types or {}), warnings)
    check_version(data, filename)
    steps: list[StoryStep] = []
    for section, kind in (("stories", "story"), ("rules", "rule")):
        items = data.get(section)
        if items is None:
            continue
        if not isinstance(items, list):
            raise InvalidProjectFile(
                f"'{section}' must be a list of {section}",
                filename,
                line_of(items) or line_of(data, section),
            )
        for index, item in enumerate(items):
            steps.extend(reader.read_item(item, kind, line_of(items, index)))
    return steps


class _Reader:
    def __init__(
        self, filename: str, slot_types: dict[str, str], warnings: list[str] | None
    ) -> None:
        self.filename = filename
        self.slot_types = slot_types
        self.warnings = warnings

    def error(self, message: str, line: int | None) -> InvalidProjectFile:
        return InvalidProjectFile(message, self.filename, line)

    def warn(self, message: str, line: int | None) -> None:
        text = f"{self.filename}:{line}: {message}" if line else f"{self.filename}: {message}"
        if self.warnings is not None:
            self.warnings.append(text)
        else:
            logger.warning("%s", text)

    # -- stories and rules ------------------------------------------------------------------
    def read_item(self, item: Any, kind: str, line: int | None) -> list[StoryStep]:
        section = "stories" if kind == "story" else "rules"
        if not isinstance(item, dict):
            raise self.error(f"each item under '{section}' must be a mapping with a '{kind}'", line)
        line = line_of(item, default=line)
        allowed = _STORY_KEYS if kind == "story" else _RULE_KEYS
        for key in item:
            if key not in allowed:
                # Rasa's schema refuses these too (a `story:` under `rules:`, a typo).
                raise self.error(
                    f"unknown key '{key}' in an item under '{section}' (a {kind}); "
                    f"allowed: {', '.join(sorted(allowed))}",
                    line_of(item, key),
                )
        if kind not in item:
            # Only `steps` (and `metadata`): Rasa ignores the nameless item with a warning.
            self.warn(
                f"an item under '{section}' has no '{kind}' name; it is ignored "
                f"(give it a '{kind}:' key to train it)",
                line,
            )
            return []
        name = item[kind]
        if not isinstance(name, (str, int, float)) or not str(name).strip():
            raise self.error(f"a {kind} needs a non-empty name", line_of(item, kind))
        name = str(name).strip()
        steps = item.get("steps")
        if steps is None or steps == []:
            # As Rasa, which skips it with a warning; `steps: []` is also what
            # GET /conversations/{id}/story writes for a session without a turn yet.
            self.warn(f"{kind} '{name}' has no steps; it is ignored", line_of(item, "steps", line))
            return []
        if not isinstance(steps, list):
            raise self.error(f"the steps of {kind} '{name}' must be a list", line_of(item, "steps"))

        condition: list[Event] = []
        condition_line: int | None = None
        conversation_start = wait_for_user_input = False
        if kind == "rule":
            condition = self.read_condition(item.get("condition"), name, line_of(item, "condition"))
            condition_line = line_of(item, "condition")
            conversation_start = self.read_flag(item, "conversation_start", False)
            wait_for_user_input = self.read_flag(item, "wait_for_user_input", True)

        parts = self.read_steps(steps, kind, name)
        result = []
        for part in parts:
            if kind == "rule" and not part.events:
                raise self.error(f"rule '{name}' has no steps besides its condition", line)
            result.append(
                StoryStep(
                    name=name,
                    kind="story" if kind == "story" else "rule",
                    events=part.events,
                    start_checkpoints=part.start or [STORY_START],
                    end_checkpoints=part.end,
                    condition=list(condition),
                    conversation_start=conversation_start,
                    wait_for_user_input=wait_for_user_input if kind == "rule" else True,
                    filename=self.filename,
                    line=part.line or line,
                    checkpoint_conditions=part.conditions,
                    event_lines=[condition_line] * len(condition) + part.lines,
                )
            )
        return result

    def read_flag(self, item: dict, key: str, default: bool) -> bool:
        value = item.get(key, default)
        if not isinstance(value, bool):
            raise self.error(
                f"'{key}' must be true or false, not {brief(value)}", line_of(item, key)
            )
        return value

    def read_condition(self, value: Any, name: str, line: int | None) -> list[Event]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(f"the condition of rule '{name}' must be a list", line)
        events: list[Event] = []
        for index, entry in enumerate(value):
            entry_line = line_of(value, index)
            if not isinstance(entry, dict) or len(entry) != 1:
                raise self.error(
                    "each condition must be a mapping with one 'active_loop' or 'slot_was_set'",
                    entry_line,
                )
            if "active_loop" in entry:
                events.append(self.active_loop(entry["active_loop"], line_of(entry, "active_loop")))
            elif "slot_was_set" in entry:
                events.extend(self.slots(entry["slot_was_set"], line_of(entry, "slot_was_set")))
            else:
                key = next(iter(entry))
                raise self.error(
                    f"unknown condition '{key}'; a rule condition is 'active_loop' or "
                    "'slot_was_set'",
                    line_of(entry, key),
                )
        return events

    # -- steps ------------------------------------------------------------------------------
    def read_steps(self, steps: list[Any], kind: str, name: str) -> list[_Part]:
        finished: list[_Part] = []
        parts = [_Part()]
        pending: list[str] = []  # checkpoints that end the current parts
        pending_conditions: dict[str, dict[str, Any]] = {}
        for index, step in enumerate(steps):
            line = line_of(steps, index)
            step_kind = self.step_kind(step, line, kind)
            if step_kind is None:
                continue
            step_line = line_of(step, step_kind, line)
            if step_kind == "checkpoint":
                checkpoint, conditions = self.checkpoint(step, step_line)
                at_start = not pending and not any(p.events for p in parts)
                if at_start:
                    for part in parts:
                        part.start.append(checkpoint)
                        if conditions:
                            part.conditions[checkpoint] = conditions
                else:
                    for part in parts:
                        part.end.append(checkpoint)
                    pending.append(checkpoint)
                    if conditions:
                        pending_conditions[checkpoint] = conditions
                continue
            if pending:
                # The events after intermediate checkpoints form a new step starting there.
                finished.extend(parts)
                parts = [_Part(start=pending, conditions=pending_conditions, line=step_line)]
                pending, pending_conditions = [], {}
            alternatives = self.step_events(step, step_kind, step_line, kind)
            if len(parts) * len(alternatives) > _MAX_EXPANSION:
                raise self.error(
                    f"the 'or' steps of {kind} '{name}' expand to more than {_MAX_EXPANSION} "
                    "alternatives",
                    step_line,
                )
            if len(alternatives) == 1:
                # Extended in place: copying the events so far at each step made a story's
                # loading grow with the square of its steps.
                (events,) = alternatives
                for part in parts:
                    part.events.extend(events)
                    part.lines.extend([step_line] * len(events))
                continue
            parts = [
                _Part(
                    events=part.events + events,
                    start=list(part.start),
                    end=[],
                    conditions=dict(part.conditions),
                    line=part.line,
                    lines=part.lines + [step_line] * len(events),
                )
                for part, events in itertools.product(parts, alternatives)
            ]
        finished.extend(parts)
        return finished

    def step_kind(self, step: Any, line: int | None, item_kind: str) -> str | None:
        if not isinstance(step, dict):
            raise self.error(
                f"a {item_kind} step must be a mapping such as '- intent: greet' or "
                f"'- action: utter_greet', not {brief(step)}",
                line,
            )
        line = line_of(step, default=line)
        step_kind = next((k for k in _STEP_KEYS if k in step), None)
        if step_kind is None:
            if set(step) <= {"metadata"}:
                return None
            key = next(k for k in step if k != "metadata")
            raise self.error(
                f"unknown key '{key}' in a {item_kind} step; a step has one of "
                + ", ".join(k for k in _STEP_KEYS),
                line_of(step, key, line),
            )
        for key in step:
            if key not in _STEP_KEYS[step_kind]:
                raise self.error(
                    f"unknown key '{key}' in a '{step_kind}' step; allowed: "
                    + ", ".join(sorted(_STEP_KEYS[step_kind])),
                    line_of(step, key, line),
                )
        if item_kind == "rule" and step_kind not in _RULE_STEP_KINDS:
            raise self.error(f"a rule cannot have a '{step_kind}' step", line)
        return step_kind

    def step_events(
        self, step: LineDict, step_kind: str, line: int | None, item_kind: str
    ) -> list[list[Event]]:
        """The events of one step; an `or` step gives one list per alternative."""
        if step_kind in ("intent", "user"):
            return [[self.user(step, line)]]
        if step_kind == "or":
            return self.alternatives(step["or"], line, item_kind)
        if step_kind == "action":
            return [[self.action(step["action"], line)]]
        if step_kind == "bot":
            text = step["bot"]
            if text is None or isinstance(text, (dict, list)) or not str(text).strip():
                raise self.error("'bot' needs the text the bot says", line)
            return [[ActionExecuted(action_name=None, action_text=str(text), timestamp=0.0)]]
        if step_kind == "slot_was_set":
            return [self.slots(step["slot_was_set"], line)]
        return [[self.active_loop(step["active_loop"], line)]]

    def alternatives(self, value: Any, line: int | None, item_kind: str) -> list[list[Event]]:
        if not isinstance(value, list) or not value:
            raise self.error("'or' must be a non-empty list of alternatives", line)
        result: list[list[Event]] = []
        for index, alternative in enumerate(value):
            alt_line = line_of(value, index, line)
            kind = self.step_kind(alternative, alt_line, item_kind)
            if kind in ("intent", "user"):
                result.append([self.user(alternative, alt_line)])
            elif kind == "slot_was_set":
                # Each slot is an alternative of its own, as Rasa reads it: `- slot_was_set:
                # [a: 1, b: 2]` under `or` means a=1 or b=2, not both.
                slots = self.slots(alternative["slot_was_set"], alt_line)
                result.extend([event] for event in slots)
            else:
                raise self.error(
                    "an 'or' alternative must be a user step ('intent' / 'user') or a "
                    f"'slot_was_set', not '{kind}'",
                    alt_line,
                )
        # Only empty `slot_was_set`s: the step adds nothing (Rasa skips it), the story stays.
        return result or [[]]

    def action(self, value: Any, line: int | None) -> Event:
        if not isinstance(value, str) or not value.strip():
            raise self.error("'action' needs the name of an action", line)
        name = value.strip()
        if name in _EVENT_ACTIONS:
            return _EVENT_ACTIONS[name](timestamp=0.0)
        return ActionExecuted(action_name=name, timestamp=0.0)

    def active_loop(self, value: Any, line: int | None) -> ActiveLoop:
        if value is not None and not isinstance(value, str):
            raise self.error(f"'active_loop' must be a form name or null, not {brief(value)}", line)
        name = value.strip() if isinstance(value, str) else None
        return ActiveLoop(name=name or None, timestamp=0.0)

    def checkpoint(self, step: LineDict, line: int | None) -> tuple[str, dict[str, Any]]:
        name = step["checkpoint"]
        if not isinstance(name, str) or not name.strip():
            raise self.error("'checkpoint' needs a name", line)
        conditions: dict[str, Any] = {}
        slots = step.get("slot_was_set")
        if slots is not None:
            slots_line = line_of(step, "slot_was_set", line)
            if not isinstance(slots, list):
                raise self.error("the 'slot_was_set' of a checkpoint must be a list", slots_line)
            for index, entry in enumerate(slots):
                if not isinstance(entry, dict):
                    raise self.error(
                        "a checkpoint's 'slot_was_set' entries must be '- slot: value'",
                        line_of(slots, index, slots_line),
                    )
                conditions.update(entry)
        return name.strip(), conditions

    def slots(self, value: Any, line: int | None) -> list[Event]:
        if not isinstance(value, list):
            raise self.error(
                "'slot_was_set' must be a list of '- slot: value' or '- slot' entries", line
            )
        events: list[Event] = []
        for index, entry in enumerate(value):
            entry_line = line_of(value, index, line)
            if isinstance(entry, dict):
                for key, slot_value in entry.items():
                    events.append(SlotSet(key=str(key), value=slot_value, timestamp=0.0))
            elif isinstance(entry, str) and entry.strip():
                name = entry.strip()
                slot_type = self.slot_types.get(name)
                default = _BARE_SLOT_VALUES.get(slot_type) if slot_type else None
                if slot_type not in (None, "text", "list", "any"):
                    self.warn(
                        f"slot '{name}' of type '{slot_type}' is named without a value; "
                        "it is treated as empty",
                        entry_line,
                    )
                events.append(SlotSet(key=name, value=_copy(default), timestamp=0.0))
            else:
                raise self.error(
                    "a 'slot_was_set' entry must be '- slot: value' or '- slot', "
                    f"not {brief(entry)}",
                    entry_line,
                )
        return events

    # -- user turns -------------------------------------------------------------------------
    def user(self, step: LineDict, line: int | None) -> UserUttered:
        intent_value = step.get("intent")
        text_value = step.get("user")
        intent: str | None = None
        if "intent" in step:
            if isinstance(intent_value, int | float | datetime.date):  # bool too: `intent: true`
                shown = str(intent_value) if isinstance(intent_value, datetime.date) else None
                raise self.error(
                    f"'intent' must be a name such as 'intent: greet', not "
                    f"{shown or brief(intent_value)}; quote it if it is meant as text",
                    line_of(step, "intent", line),
                )
            if not isinstance(intent_value, str) or not intent_value.strip():
                raise self.error(
                    "a user step needs an 'intent' name (or 'user' text without 'intent')",
                    line_of(step, "intent", line),
                )
            intent = str(intent_value).strip()
            if intent.startswith("/"):
                self.warn(f"intent '{intent}' starts with '/', which is not needed", line)
                intent = intent[1:]
        text: str | None = None
        entities: list[dict[str, Any]]
        if "user" in step:
            text_line = line_of(step, "user", line)
            if text_value is None or isinstance(text_value, (dict, list)):
                raise self.error("'user' needs the text the user says", text_line)
            raw = str(text_value).strip()
            if not raw:
                raise self.error("'user' needs the text the user says", text_line)
            text, entities = self.annotated_text(raw, text_line)
            if "entities" in step:
                self.entities(step["entities"], line_of(step, "entities", line))
        else:
            entities = self.entities(step.get("entities"), line_of(step, "entities", line))
        intent_data: dict[str, Any] = {"name": intent}
        if intent and "/" in intent:
            intent_data = {"name": intent.split("/", 1)[0], "full_retrieval_intent_name": intent}
        parse_data: dict[str, Any] = {"intent": intent_data, "entities": entities}
        if text is not None:
            parse_data["text"] = text
        return UserUttered(text=text, parse_data=parse_data, timestamp=0.0)

    def annotated_text(self, raw: str, line: int | None) -> tuple[str, list[dict[str, Any]]]:
        check_example_length(raw, self.filename, line, markup=True)
        plain, annotations = parse_annotated_text(raw, self.filename, line)
        check_example_length(plain, self.filename, line)
        entities = [a.as_dict() for a in annotations]
        match = _INTENT_MESSAGE.match(plain)
        if match and match.group("entities"):
            entities = self.intent_message_entities(match, line)
        return plain, entities

    def intent_message_entities(self, match: re.Match[str], line: int | None) -> list[dict]:
        try:  # nesting too deep (TooDeep) too: a RecursionError was a 500 from /model/train
            parsed = loads_untrusted(match.group("entities").encode("utf-8", "surrogatepass"))
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            self.warn(f"cannot read the entities of '{match.string}'; they are ignored", line)
            return []
        start, end = match.start("entities"), match.end("entities")
        entities = []
        for name, values in parsed.items():
            for value in values if isinstance(values, list) else [values]:
                entities.append({"entity": name, "value": value, "start": start, "end": end})
        return entities

    def entities(self, value: Any, line: int | None) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(
                "'entities' must be a list of '- entity: value' or '- entity' entries", line
            )
        entities: list[dict[str, Any]] = []
        for index, entry in enumerate(value):
            entry_line = line_of(value, index, line)
            if isinstance(entry, str) and entry.strip():
                entities.append({"entity": entry.strip(), "value": ""})
            elif isinstance(entry, dict) and entry:
                entity: dict[str, Any] = {}
                role = group = None
                for key, entity_value in entry.items():
                    if key == "role":
                        role = entity_value
                    elif key == "group":
                        group = entity_value
                    elif "entity" in entity:
                        raise self.error(
                            "an entity entry names one entity (plus 'role' / 'group'), "
                            f"found '{entity['entity']}' and '{key}'",
                            entry_line,
                        )
                    else:
                        entity = {"entity": str(key), "value": entity_value}
                if not entity:
                    raise self.error("an entity entry needs '- entity: value'", entry_line)
                if entity["value"] is None:
                    del entity["value"]
                if role is not None:
                    entity["role"] = role
                if group is not None:
                    entity["group"] = group
                entities.append(entity)
            else:
                raise self.error(
                    f"an entity entry must be '- entity: value' or '- entity', not {brief(entry)}",
                    entry_line,
                )
        return entities


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value
