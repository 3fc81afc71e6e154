"""Stories and rules as data: story steps joined by checkpoints, and the full training
conversations (`TrainingStory`) that policies learn from."""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from server.dialogue.domain import Domain
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    Event,
    SlotSet,
    UserUttered,
)

logger = logging.getLogger(__name__)

# The checkpoint every story without an explicit start checkpoint starts from.
STORY_START = "STORY_START"
# Bounds that keep checkpoint joins finite on cyclic or highly branching story graphs.
MAX_STEP_VISITS_PER_STORY = 2
MAX_TRAINING_STORIES = 20_000
# Steps one join may enter: checkpoints that loop back with no story ending after them are
# walked through without a story to show for it, so the count of stories alone did not stop
# the walk (a loop of 10 stories took hours).
MAX_JOIN_STEPS = 1_000_000


@dataclass
class StoryStep:
    """A piece of a story or rule between checkpoints, as read from one file.

    `start_checkpoints` is `[STORY_START]` for a story that starts a conversation.
    `checkpoint_conditions` holds, for a start checkpoint given with `slot_was_set`, the slot
    values a conversation must have to continue into this step.
    """

    name: str
    kind: Literal["story", "rule"]
    events: list[Event]
    start_checkpoints: list[str] = field(default_factory=lambda: [STORY_START])
    end_checkpoints: list[str] = field(default_factory=list)
    condition: list[Event] = field(default_factory=list)
    conversation_start: bool = False
    wait_for_user_input: bool = True
    filename: str | None = None
    line: int | None = None
    checkpoint_conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The file line of each event (condition events first, then `events`), for messages.
    event_lines: list[int | None] = field(default_factory=list)

    @property
    def is_rule(self) -> bool:
        return self.kind == "rule"


@dataclass
class TrainingStory:
    """One complete conversation (story) or rule snippet, checkpoints resolved.

    Every user turn is preceded by `action_listen`; a story ends with `action_listen`, and so
    does a rule unless `wait_for_user_input` is false. A rule's `condition` holds the
    slot_was_set / active_loop state it requires; `conversation_start` rules only apply at
    the start of a conversation.
    """

    name: str
    is_rule: bool
    events: list[Event]
    conversation_start: bool = False
    wait_for_user_input: bool = True
    condition: list[Event] = field(default_factory=list)


def generate_training_stories(
    steps: list[StoryStep], domain: Domain | None = None
) -> list[TrainingStory]:
    """Joins story steps at their checkpoints into full conversations; rules pass through.

    With the `domain`, a user step's entities set the slots they fill (from_entity
    mappings outside forms) right after it, as Rasa does: a story need not repeat them in
    `slot_was_set`, and checkpoint conditions see them.
    """
    if domain is not None and domain.store_entities_as_slots:
        steps = [_with_entity_slots(step, domain) for step in steps]
    result: list[TrainingStory] = []
    story_steps: list[StoryStep] = []
    for step in steps:
        if step.is_rule:
            result.append(_rule_story(step))
        else:
            story_steps.append(step)
    result.extend(_join_stories(story_steps))
    return result


def _with_entity_slots(step: StoryStep, domain: Domain) -> StoryStep:
    if not any(isinstance(e, UserUttered) and e.entities for e in step.events):
        return step
    events: list[Event] = []
    for event in step.events:
        events.append(event)
        if isinstance(event, UserUttered) and event.entities:
            events.extend(entity_slots(event.entities, domain))
    return replace(step, events=events)


def entity_slots(entities: list[dict[str, Any]], domain: Domain) -> list[SlotSet]:
    """The slots a story's user entities set: each slot with a from_entity mapping (not
    conditioned on a form) of a matching entity, role and group; a list slot takes every
    value, another slot the last."""
    events: list[SlotSet] = []
    for slot in domain.slots:
        values = [
            entity.get("value")
            for mapping in slot.mappings
            if mapping.type == "from_entity"
            and not (mapping.conditions and mapping.conditions[0].get("active_loop"))
            for entity in entities
            if entity.get("entity") == mapping.entity
            and entity.get("role") == mapping.role
            and entity.get("group") == mapping.group
        ]
        if values:
            value = values if slot.type == "list" else values[-1]
            events.append(SlotSet(key=slot.name, value=value, timestamp=0.0))
    return events


def _rule_story(step: StoryStep) -> TrainingStory:
    events = _with_listens(step.events, final_listen=step.wait_for_user_input)
    return TrainingStory(
        name=step.name,
        is_rule=True,
        events=events,
        conversation_start=step.conversation_start,
        wait_for_user_input=step.wait_for_user_input,
        condition=list(step.condition),
    )


def _join_stories(steps: list[StoryStep]) -> list[TrainingStory]:
    return [story for story, _ in _joined_paths(steps, distinct=True)]


def join_test_stories(steps: list[StoryStep], limit: int | None = None) -> list[StoryStep]:
    """Test stories as Rasa tests them: a story ending at a checkpoint goes on into each
    story that starts from it, and each conversation so joined is tested as one (its name
    the stories' names joined by ' > ', its place the first one's). Rules pass through.
    Every story the file holds is tested, a story written twice twice, as without checkpoints.
    With `limit`, the first so many conversations (`--max-stories`)."""
    stories = [step for step in steps if not step.is_rule]
    joined: list[StoryStep] = [step for step in steps if step.is_rule]
    for _, path in _joined_paths(stories, distinct=False, limit=limit):
        parts = [stories[index] for index in path]
        if len(parts) == 1:
            joined.append(parts[0])
            continue
        joined.append(
            replace(
                parts[0],
                name=" > ".join(_distinct_names(parts)),
                events=[event for part in parts for event in part.events],
                end_checkpoints=list(parts[-1].end_checkpoints),
                event_lines=[line for part in parts for line in _event_lines(part)],
            )
        )
    return joined


def _distinct_names(parts: list[StoryStep]) -> list[str]:
    names: list[str] = []
    for part in parts:
        if not names or names[-1] != part.name:
            names.append(part.name)
    return names


def _event_lines(step: StoryStep) -> list[int | None]:
    """The file line of each of `step.events` (None where unknown)."""
    lines = step.event_lines[len(step.condition) :]
    return (lines + [None] * len(step.events))[: len(step.events)]


def _joined_paths(
    steps: list[StoryStep], distinct: bool, limit: int | None = None
) -> list[tuple[TrainingStory, list[int]]]:
    """Each whole conversation the story steps join into at their checkpoints, with the
    indices of the steps it went through; with `distinct`, once per list of events (training
    learns nothing more from a copy), else once per path."""
    starting: dict[str, list[int]] = defaultdict(list)
    for index, step in enumerate(steps):
        for checkpoint in step.start_checkpoints:
            starting[checkpoint].append(index)

    stories: list[tuple[TrainingStory, list[int]]] = []
    seen: set[tuple[str, ...]] = set()
    path: list[int] = []
    # Depth-first walk keeping one path's events, names, visits per step and slot values,
    # each step's changes undone when the walk leaves it: copying them at each step made a
    # chain of checkpoints cost the square of its length. An entry is a step to enter
    # (index) or, as ~index, one to leave.
    events: list[Event] = []
    names: list[str] = []
    visits: dict[int, int] = defaultdict(int)
    slots: dict[str, Any] = {}
    undo: list[tuple[int, bool, list[tuple[str, bool, Any]]]] = []
    stack = list(reversed(starting.get(STORY_START, [])))
    entered = 0
    while stack:
        entry = stack.pop()
        if entry < 0:
            length, named, previous = undo.pop()
            del events[length:]
            if named:
                names.pop()
            path.pop()
            visits[~entry] -= 1
            for key, was_set, value in reversed(previous):
                if was_set:
                    slots[key] = value
                else:
                    del slots[key]
            continue
        entered += 1
        if entered > MAX_JOIN_STEPS:
            logger.warning(
                "stopped joining checkpoints after going through %d story steps (%d %s "
                "found): the checkpoints loop back or branch too much",
                MAX_JOIN_STEPS,
                len(stories),
                "training stories" if distinct else "test conversations",
            )
            return stories
        index = entry
        step = steps[index]
        named = not names or names[-1] != step.name
        previous = []
        for event in step.events:
            if isinstance(event, SlotSet):
                previous.append((event.key, event.key in slots, slots.get(event.key)))
                slots[event.key] = event.value
        undo.append((len(events), named, previous))
        events.extend(step.events)
        if named:
            names.append(step.name)
        path.append(index)
        visits[index] += 1
        stack.append(~index)
        # A story ending at a checkpoint nothing starts from is a whole story (as in Rasa).
        if not step.end_checkpoints or any(c not in starting for c in step.end_checkpoints):
            key = _fingerprint(events) if distinct else ()
            if not distinct or key not in seen:
                seen.add(key)
                story = TrainingStory(
                    name=" > ".join(names),
                    is_rule=False,
                    events=_with_listens(events, final_listen=True) if distinct else [],
                )
                stories.append((story, list(path)))
                if limit is not None and len(stories) >= limit:
                    return stories
                if len(stories) >= MAX_TRAINING_STORIES:
                    logger.warning(
                        "stopped joining checkpoints after %d %s",
                        MAX_TRAINING_STORIES,
                        "training stories" if distinct else "test conversations",
                    )
                    return stories
            if not step.end_checkpoints:
                continue
        for checkpoint in step.end_checkpoints:
            for following in reversed(starting.get(checkpoint, [])):
                if visits[following] >= MAX_STEP_VISITS_PER_STORY:
                    continue
                conditions = steps[following].checkpoint_conditions.get(checkpoint, {})
                if any(slots.get(k) != v for k, v in conditions.items()):
                    continue
                stack.append(following)
    return stories


def unused_checkpoints(steps: list[StoryStep]) -> tuple[set[str], set[str]]:
    """(end checkpoints nothing starts from, start checkpoints nothing ends at)."""
    starts = {c for s in steps if not s.is_rule for c in s.start_checkpoints}
    ends = {c for s in steps if not s.is_rule for c in s.end_checkpoints}
    return ends - starts, starts - ends - {STORY_START}


def checkpoint_warnings(steps: list[StoryStep]) -> list[str]:
    """Rasa's warnings about checkpoints that join nothing (given at training and validation),
    each naming the story and where it is."""
    ends, starts = unused_checkpoints(steps)
    warnings: list[str] = []
    for step in steps:
        if step.is_rule:
            continue
        where = f"{step.filename}:{step.line}: " if step.filename and step.line else ""
        for name in step.end_checkpoints:
            if name in ends:
                warnings.append(
                    f"{where}story '{step.name}' ends with checkpoint '{name}' "
                    "but no story starts from it"
                )
        for name in step.start_checkpoints:
            if name in starts:
                warnings.append(
                    f"{where}story '{step.name}' starts from checkpoint '{name}' "
                    "but no story ends with it (it is never reached, so not trained)"
                )
    return list(dict.fromkeys(warnings))


def _fingerprint(events: list[Event]) -> tuple[str, ...]:
    return tuple(repr(sorted(_without_timestamp(e.as_dict()).items())) for e in events)


def _without_timestamp(d: dict[str, Any]) -> dict[str, Any]:
    d.pop("timestamp", None)
    return d


def _is_listen(event: Event) -> bool:
    return isinstance(event, ActionExecuted) and event.action_name == ACTION_LISTEN


def _with_listens(events: list[Event], final_listen: bool) -> list[Event]:
    """Copies of `events` with `action_listen` before each user turn (and at the end)."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, UserUttered) and not (out and _is_listen(out[-1])):
            out.append(ActionExecuted(action_name=ACTION_LISTEN, timestamp=0.0))
        out.append(copy.copy(event))
    if final_listen and not (out and _is_listen(out[-1])):
        out.append(ActionExecuted(action_name=ACTION_LISTEN, timestamp=0.0))
    return out
