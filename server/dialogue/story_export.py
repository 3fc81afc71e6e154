"""A conversation as Rasa's YAML test story (GET /conversations/{id}/story).

Each session is written from its events as logged, as Rasa's `tracker.as_story` (a form's
answers, a restart and a rewound turn stay): user turns (intent and annotated text; the text
alone for a message answered from its text), actions other than `action_listen` and session
starts, slots that were set, and active loops.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import yaml

from server.errors import InvalidProjectFile
from server.nlu.entity_markup import markup_cuts, parse_annotated_text
from server.nlu.training_data import (
    EntityAnnotation,
    annotated_text,
    annotations_of,
    message_markup,
)
from server.trackers.events import (
    ACTION_LISTEN,
    ACTION_SESSION_START,
    ActionExecuted,
    ActiveLoop,
    DefinePrevUserUtteredFeaturization,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from server.trackers.tracker import Tracker
from server.yaml_scalars import SafeDumper12

STORY_FORMAT_VERSION = "3.1"
_SKIPPED_ACTIONS = {ACTION_LISTEN, ACTION_SESSION_START, "action_unlikely_intent"}


def split_sessions(events: Sequence[Event]) -> list[list[Event]]:
    """The events of each session, in order; a session begins at its `action_session_start`."""
    sessions: list[list[Event]] = []
    current: list[Event] = []
    for index, event in enumerate(events):
        starts = isinstance(event, ActionExecuted) and event.action_name == ACTION_SESSION_START
        lone_start = isinstance(event, SessionStarted) and not (
            index > 0
            and isinstance(events[index - 1], ActionExecuted)
            and getattr(events[index - 1], "action_name", None) == ACTION_SESSION_START
        )
        if (starts or lone_start) and current:
            sessions.append(current)
            current = []
        current.append(event)
    if current:
        sessions.append(current)
    return sessions


def yaml_scalar(value: Any) -> str:
    """`value` as one line of YAML (flow style): plain when that reads back the same; one
    holding a text YAML would break over lines (a newline, CR, NEL, LS or PS in it) in double
    quotes, its line breaks escaped (in single quotes, NEL read back as a space and LS broke
    the line)."""
    dumped = _dumped(value)
    if LINE_BREAK.search(dumped):
        return _dumped(value, style='"')
    return dumped


def _dumped(value: Any, style: str | None = None) -> str:
    dumped = yaml.dump(
        value,
        Dumper=SafeDumper12,
        default_style=style,
        default_flow_style=True,
        allow_unicode=True,
        width=1_000_000,
    ).rstrip("\n")
    return dumped[: -len("\n...")] if dumped.endswith("\n...") else dumped


# What YAML reads as a line break.
LINE_BREAK = re.compile("[\n\r\x85\u2028\u2029]")


def _text(key: str, text: str, first: str) -> list[str]:
    """`key: |-` with the text as a literal block, as Rasa writes it, when the block reads
    back as the same text; otherwise a quoted scalar with escapes (a NUL or another
    non-printable character would make the file invalid YAML, a carriage return would read
    back as a newline, a leading space would be taken for indentation, a final newline
    would be chomped)."""
    lines = text.split("\n")
    indented = next((line for line in lines if line), "").startswith((" ", "\t"))
    if _BLOCK_UNSAFE.search(text) is None and not indented and lines[-1]:
        block = [f"      {line}" if line else "" for line in lines]
        return [f"{first}{key}: |-", *block]
    return [f"{first}{key}: {yaml_scalar(text)}"]


# What a literal block cannot hold as it is: YAML's non-printable characters (NUL and the
# other C0 controls but tab and newline, DEL, C1, surrogates, U+FFFE/U+FFFF), its line breaks
# other than newline (CR, NEL, LS, PS) and the byte order mark.
_BLOCK_UNSAFE = re.compile(
    "[^\x09\x0a\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]"
)


def _read_by_text(events: Iterable[Event]) -> set[int]:
    """The ids of the user messages a `user_featurization: true` marks as answered from their
    text: Rasa writes such a step by its text alone (`user:`, no `intent:`)."""
    by_text: set[int] = set()
    last_user: UserUttered | None = None
    for event in events:
        if isinstance(event, UserUttered):
            last_user = event
        elif isinstance(event, DefinePrevUserUtteredFeaturization) and last_user is not None:
            if event.use_text_for_featurization:
                by_text.add(id(last_user))
    return by_text


def story_intent(event: UserUttered) -> str | None:
    """The intent as Rasa's stories name it: a retrieval intent with its response key
    (`faq/ask_name`) when the parse gave one."""
    full_name = event.intent.get("full_retrieval_intent_name")
    return full_name if isinstance(full_name, str) and full_name else event.intent_name


def user_markup(text: str, entities: list[Any]) -> str | None:
    """The user's text in entity markup, as a story reads it back; None when it cannot be
    written: text that looks like markup but is not (`[a]{c}`), which a story reader refuses
    (Rasa's writer fails on it). Brackets that read as markup the message's entities did not
    give are taken off, as Rasa writes a text without entities (`see [this](link)`: `see
    this`), and the entities marked up on the text left: as it is, it would read back as
    another text with an entity the message never had (no escape exists)."""
    if text.lstrip().startswith("/"):
        # a `/intent{...}` message, as it is, when it reads back as itself (its JSON gives
        # the entities; brackets that read as markup would give others)
        try:
            plain, _ = parse_annotated_text(text)
        except InvalidProjectFile:
            return None
        return message_markup(text, entities) if plain == text else None
    annotations = annotations_of(entities)
    left_out: list[EntityAnnotation] = []
    try:
        cuts = markup_cuts(text)
        if cuts:
            parse_annotated_text(text)  # refuses what is no markup either (`[a]{c}`)
            text, annotations = _markup_taken_off(text, cuts, annotations)
        written = annotated_text(text, annotations, left_out)
        plain, found = parse_annotated_text(written)
    except (InvalidProjectFile, ValueError):
        return None
    # (a bracket of the text beside an entity's markup, `[x` or `a]b`, reads back otherwise)
    kept = sorted((a for a in annotations if a not in left_out), key=lambda a: (a.start, a.end))
    return written if plain == text and found == kept else None


def _markup_taken_off(
    text: str, cuts: list[tuple[int, int]], annotations: list[EntityAnnotation]
) -> tuple[str, list[EntityAnnotation]]:
    """`text` without its `cuts`, and `annotations` moved onto the text left; ValueError when
    one overlaps a cut (its span would lose some of its text)."""
    moved: list[EntityAnnotation] = []
    for entity in annotations:
        if any(start < entity.end and entity.start < end for start, end in cuts):
            raise ValueError(f"entity {entity.entity!r} overlaps look-alike markup")
        shift = sum(end - start for start, end in cuts if end <= entity.start)
        moved.append(replace(entity, start=entity.start - shift, end=entity.end - shift))
    kept_from = [0, *(end for _, end in cuts)]
    kept_to = [*(start for start, _ in cuts), len(text)]
    return "".join(text[a:b] for a, b in zip(kept_from, kept_to, strict=True)), moved


def entity_lines(entities: list[Any]) -> list[str]:
    """A step's `entities:` (`- city: Berlin`, its role and group below), for a message
    written without its text: a story reads a step's entities from there then. An entity
    named `role` or `group` cannot be listed (it reads as the one before's role)."""
    lines = []
    for entity in entities:
        if not isinstance(entity, dict) or entity.get("entity") in (None, "role", "group"):
            continue
        if isinstance(entity["entity"], str):
            lines.append(
                f"    - {yaml_scalar(entity['entity'])}: {yaml_scalar(entity.get('value'))}"
            )
            lines.extend(
                f"      {key}: {yaml_scalar(entity[key])}"
                for key in ("role", "group")
                if entity.get(key) is not None
            )
    return ["    entities:", *lines] if lines else []


def _step_lines(event: Event, by_text: set[int]) -> list[str]:
    if isinstance(event, UserUttered):
        lines: list[str] = []
        first = "  - "
        text = None
        if event.text and event.text.strip():  # (blanks are no `user:` a story reads)
            text = user_markup(event.text, event.entities)
        if event.intent_name and (id(event) not in by_text or not text):
            lines.append(f"{first}intent: {yaml_scalar(story_intent(event))}")
            first = "    "
            if not text:
                lines.extend(entity_lines(event.entities))
        if text:
            lines.extend(_text("user", text, first))
        return lines
    if isinstance(event, ActionExecuted):
        if event.action_name:
            if event.action_name in _SKIPPED_ACTIONS:
                return []
            return [f"  - action: {yaml_scalar(event.action_name)}"]
        if event.action_text and event.action_text.strip():
            return _text("bot", event.action_text, "  - ")
        return []
    if isinstance(event, SlotSet):
        return ["  - slot_was_set:", f"    - {yaml_scalar(event.key)}: {yaml_scalar(event.value)}"]
    if isinstance(event, ActiveLoop):
        return [f"  - active_loop: {yaml_scalar(event.name)}"]
    return []


def stories_yaml(stories: Iterable[tuple[str, Sequence[Event]]]) -> str:
    """Rasa's YAML test stories file for `(story name, events)` pairs."""
    lines = [f'version: "{STORY_FORMAT_VERSION}"']
    body: list[str] = []
    for name, events in stories:
        by_text = _read_by_text(events)
        steps = [line for event in events for line in _step_lines(event, by_text)]
        body.append(f"- story: {yaml_scalar(name)}")
        if steps:
            body.append("  steps:")
            body.extend(steps)
        else:
            body.append("  steps: []")
    if body:
        lines.append("stories:")
        lines.extend(body)
    return "\n".join(lines) + "\n"


def conversation_story(
    tracker: Tracker, all_sessions: bool = False, until: float | None = None
) -> str:
    """The test story of a conversation: its last session, or one story per session.

    As Rasa's `get_test_stories`: with `until`, each session is cut at its first event
    after that time (as `Tracker.until` cuts a tracker) and the sessions left empty are
    dropped; the stories are numbered when more than one is left.
    """
    sessions = split_sessions(tracker.events)
    if not all_sessions:
        sessions = sessions[-1:]
    if until is not None:
        # The events as logged (no tracker replayed: its applied events, which the story does
        # not use, cost a walk back over the session at each restart, rewind or form run).
        cut = (list(itertools.takewhile(lambda e: e.timestamp <= until, s)) for s in sessions)
        sessions = [s for s in cut if s]
    numbered = len(sessions) > 1
    stories: list[tuple[str, Sequence[Event]]] = []
    for index, session in enumerate(sessions, start=1):
        name = f"{tracker.sender_id}, story {index}" if numbered else tracker.sender_id
        stories.append((name, session))
    return stories_yaml(stories)
