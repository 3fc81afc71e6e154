"""A tracker's events as Rasa's YAML test story."""

from __future__ import annotations

import pytest
import yaml

from server.dialogue.story_export import conversation_story
from server.nlu.entity_markup import parse_annotated_text
from server.nlu.regex_message import parse_regex_message
from server.nlu.training_data import EntityAnnotation, annotated_text, annotations_of
from server.trackers.events import (
    ActionExecuted,
    ActionReverted,
    ActiveLoop,
    DefinePrevUserUtteredFeaturization,
    Event,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from server.trackers.tracker import Tracker
from server.training.stories_yaml import read_story_data
from server.training.yaml_io import parse_yaml


def test_entities_use_rasas_markup() -> None:
    entities = [
        {"entity": "city", "start": 8, "end": 14, "value": "Berlin"},
        {"entity": "day", "start": 15, "end": 20, "value": "2026-01-01", "role": "from"},
    ]
    assert annotated_text("fly to  Berlin today", annotations_of(entities)) == (
        'fly to  [Berlin](city) [today]{"entity": "day", "role": "from", "value": "2026-01-01"}'
    )


def test_entities_on_the_same_text_are_written_as_one_list_as_rasa_writes_them() -> None:
    # Before: the second was left out of the story (and out of a test built from it).
    entities = [
        {"entity": "city", "start": 3, "end": 9, "value": "Berlin"},
        {"entity": "place", "start": 3, "end": 9, "value": "Berlin", "role": "to"},
    ]
    text = annotated_text("to Berlin", annotations_of(entities))
    assert text == 'to [Berlin][{"entity": "city"}, {"entity": "place", "role": "to"}]'
    assert parse_annotated_text(text)[1] == [
        EntityAnnotation(3, 9, "Berlin", "city"),
        EntityAnnotation(3, 9, "Berlin", "place", "to"),
    ]


def test_an_intent_message_is_written_as_sent_and_reads_back() -> None:
    """Rasa writes a `/intent{...}` message (a button's payload) as it is: its entities are
    given in its JSON. Before, each was marked up over that JSON,
    `/inform[{"count": 5}]{"entity": "count", "value": 5}`, which the story reader then
    refused (an entity value in markup must be text)."""
    text = '/inform{"count": 5, "city": "Berlin"}'
    events = [UserUttered(text=text, parse_data=parse_regex_message(text) or {})]
    story = conversation_story(Tracker("u1", {}, events))
    assert f"    user: |-\n      {text}\n" in story
    [step] = read_story_data(parse_yaml(story), "story.yml")
    [read] = [event for event in step.events if isinstance(event, UserUttered)]
    assert read.text == text
    assert [(e["entity"], e["value"]) for e in read.entities] == [("count", 5), ("city", "Berlin")]


def test_a_story_with_a_duckling_number_reads_back() -> None:
    """Duckling gives a number as a number: the story says `"value": 5`, as Rasa writes it,
    and reads back with the number, as Rasa reads it. Before: refused ("'value' in entity
    JSON ... must be text, not 5; quote it")."""
    text = "book 5 seats"
    number = {"entity": "number", "start": 5, "end": 6, "value": 5, "extractor": "Duckling"}
    parse = {"intent": {"name": "book"}, "entities": [number]}
    story = conversation_story(Tracker("u1", {}, [UserUttered(text=text, parse_data=parse)]))
    assert 'user: |-\n      book [5]{"entity": "number", "value": 5} seats\n' in story
    [step] = read_story_data(parse_yaml(story), "story.yml")
    [read] = [event for event in step.events if isinstance(event, UserUttered)]
    assert read.text == text
    assert [(e["entity"], e["value"]) for e in read.entities] == [("number", 5)]


def _session(at: float, text: str) -> list:
    return [
        ActionExecuted(action_name="action_session_start", timestamp=at),
        SessionStarted(timestamp=at),
        ActionExecuted(action_name="action_listen", timestamp=at),
        UserUttered(text=text, parse_data={"intent": {"name": "greet"}}, timestamp=at + 1),
        SlotSet(key="name", value="Ann", timestamp=at + 2),
        ActionExecuted(action_name="utter_greet", timestamp=at + 3),
    ]


def test_last_session_or_one_story_per_session() -> None:
    tracker = Tracker("u1", {}, _session(100.0, "hi") + _session(200.0, "hello\nthere"))
    assert conversation_story(tracker) == (
        'version: "3.1"\nstories:\n- story: u1\n  steps:\n  - intent: greet\n    user: |-\n'
        "      hello\n      there\n  - slot_was_set:\n    - name: Ann\n  - action: utter_greet\n"
    )
    every = conversation_story(tracker, all_sessions=True)
    assert "- story: u1, story 1\n" in every and "- story: u1, story 2\n" in every
    early = conversation_story(tracker, all_sessions=True, until=150.0)
    assert "story 2" not in early


def test_until_cuts_each_session_at_its_first_later_event_as_rasa() -> None:
    """Rasa (`get_test_stories`) takes the last session, or every session, cuts each at its
    first event after `until` (`travel_back_in_time`), drops those left empty, and numbers
    the stories only when more than one is left. Before: every event at or before `until`
    was kept (one stored after a later event too), and then the last session of those."""
    late = UserUttered(text="late", parse_data={"intent": {"name": "deny"}}, timestamp=101.5)
    tracker = Tracker("u1", {}, _session(100.0, "hi") + [late] + _session(200.0, "hello"))

    def stories(all_sessions: bool = False, until: float | None = None) -> list:
        story = yaml.safe_load(conversation_story(tracker, all_sessions, until))
        return story.get("stories", [])

    # The event stored after utter_greet (103) with an earlier time was not there at 102.
    cut = stories(all_sessions=True, until=102.0)
    assert [s["story"] for s in cut] == ["u1"]
    assert cut[0]["steps"] == [
        {"intent": "greet", "user": "hi"},
        {"slot_was_set": [{"name": "Ann"}]},
    ]
    # The last session did not exist yet: no story, not the session before it.
    assert stories(until=150.0) == []
    assert [s["story"] for s in stories(all_sessions=True, until=250.0)] == [
        "u1, story 1",
        "u1, story 2",
    ]
    assert [s["story"] for s in stories(all_sessions=True)] == ["u1, story 1", "u1, story 2"]
    assert stories(until=250.0)[0]["story"] == "u1"


TRICKY_TEXTS = [
    "plain",
    "two\nlines",
    "hi\n  - action: utter_evil\n# not a comment",
    '"quoted": [1, {a: b}] & *ref !tag',
    "nul \x00 inside",
    "bell \x07, delete \x7f, next line \x85",
    "carriage\rreturn",
    "line\u2028separator",
    "\ufeffbyte order mark",
    "  leading spaces",
    "\tleading tab",
    "\n  indented after a blank line",
    "trailing newline\n",
    "trailing spaces   ",
    "emoji 😀 and é",
]


def test_a_restart_is_written_where_it_happened_as_in_rasa() -> None:
    """Rasa splits at each action_session_start and writes every event of a session as it
    was logged (`tracker.as_story` takes `tracker.events`): a restart is a step of its
    story, and the turns before it stay. Before, each session was written from its last
    restart on: the session a restart ended read `steps: []`."""
    restarted = [
        *_session(100.0, "hi"),
        ActionExecuted(action_name="action_restart", timestamp=104.0),
        Restarted(timestamp=104.0),
        ActionExecuted(action_name="action_listen", timestamp=104.0),
        UserUttered(text="bye", parse_data={"intent": {"name": "goodbye"}}, timestamp=105.0),
    ]
    tracker = Tracker("u1", {}, restarted + _session(200.0, "hello"))
    stories = yaml.safe_load(conversation_story(tracker, all_sessions=True))["stories"]
    assert [s["story"] for s in stories] == ["u1, story 1", "u1, story 2"]
    assert stories[0]["steps"] == [
        {"intent": "greet", "user": "hi"},
        {"slot_was_set": [{"name": "Ann"}]},
        {"action": "utter_greet"},
        {"action": "action_restart"},
        {"intent": "goodbye", "user": "bye"},
    ]
    assert stories[1]["steps"][0] == {"intent": "greet", "user": "hello"}


def test_a_forms_answers_are_in_its_story_and_read_back_as_in_rasa() -> None:
    """A form's later runs are collapsed into its first in the tracker's applied events (as
    Rasa's `applied_events`), but Rasa writes the story from the events as logged: each
    answer, and the form's run after it. Before, the story lost them (the form took its
    slots from no message) and did not replay: after `restaurant_form` it expected
    `utter_submit` where the bot listens."""
    events = [
        ActionExecuted(action_name="action_session_start", timestamp=1.0),
        SessionStarted(timestamp=1.0),
        ActionExecuted(action_name="action_listen", timestamp=1.0),
        UserUttered(text="book a table", parse_data={"intent": {"name": "request"}}),
        ActionExecuted(action_name="restaurant_form"),
        ActiveLoop(name="restaurant_form"),
        SlotSet(key="requested_slot", value="cuisine"),
        ActionExecuted(action_name="action_listen"),
        UserUttered(
            text="greek food",
            parse_data={
                "intent": {"name": "inform"},
                "entities": [{"entity": "cuisine", "value": "greek", "start": 0, "end": 5}],
            },
        ),
        ActionExecuted(action_name="restaurant_form"),
        SlotSet(key="cuisine", value="greek"),
        SlotSet(key="requested_slot", value=None),
        ActiveLoop(name=None),
        ActionExecuted(action_name="utter_submit"),
        ActionExecuted(action_name="action_listen"),
    ]
    story = conversation_story(Tracker("u1", {}, events))
    assert yaml.safe_load(story)["stories"][0]["steps"] == [
        {"intent": "request", "user": "book a table"},
        {"action": "restaurant_form"},
        {"active_loop": "restaurant_form"},
        {"slot_was_set": [{"requested_slot": "cuisine"}]},
        {"intent": "inform", "user": "[greek](cuisine) food"},
        {"action": "restaurant_form"},
        {"slot_was_set": [{"cuisine": "greek"}]},
        {"slot_was_set": [{"requested_slot": None}]},
        {"active_loop": None},
        {"action": "utter_submit"},
    ]
    [step] = read_story_data(parse_yaml(story), "story.yml")
    read = [e for e in step.events if isinstance(e, UserUttered)]
    assert [(e.text, e.intent_name) for e in read] == [
        ("book a table", "request"),
        ("greek food", "inform"),
    ]
    assert [(e["entity"], e["value"]) for e in read[1].entities] == [("cuisine", "greek")]


def test_rewound_and_undone_turns_are_written_as_rasa_writes_them() -> None:
    """Rasa's story holds every event of the session: a turn a `rewind` or an `undo` took
    back stays in it. Before, it was left out."""
    events = [
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="hi", parse_data={"intent": {"name": "greet"}}),
        ActionExecuted(action_name="utter_greet"),
        UserUtteranceReverted(),
        UserUttered(text="yo", parse_data={"intent": {"name": "greet"}}),
        ActionExecuted(action_name="utter_wave"),
        ActionReverted(),
        ActionExecuted(action_name="utter_greet"),
    ]
    steps = yaml.safe_load(conversation_story(Tracker("u1", {}, events)))["stories"][0]["steps"]
    assert steps == [
        {"intent": "greet", "user": "hi"},
        {"action": "utter_greet"},
        {"intent": "greet", "user": "yo"},
        {"action": "utter_wave"},
        {"action": "utter_greet"},
    ]


def test_a_retrieval_intent_is_written_with_its_response_key_as_in_rasa() -> None:
    """Rasa writes `intent: faq/ask_name` when the message's intent carries its
    `full_retrieval_intent_name`; the story reads back with it. Before: `intent: faq`."""
    intent = {"name": "faq", "confidence": 1.0, "full_retrieval_intent_name": "faq/ask_name"}
    events = [
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="who are you", parse_data={"intent": intent}),
        ActionExecuted(action_name="utter_faq"),
    ]
    story = conversation_story(Tracker("u1", {}, events))
    assert "  - intent: faq/ask_name\n    user: |-\n      who are you\n" in story
    [step] = read_story_data(parse_yaml(story), "story.yml")
    [read] = [e for e in step.events if isinstance(e, UserUttered)]
    assert read.intent["full_retrieval_intent_name"] == "faq/ask_name"


def test_a_text_that_looks_like_entity_markup_gives_a_story_the_reader_takes() -> None:
    """A message whose brackets read as markup but carry no entity is written as Rasa 3.6.21
    writes it, the markup taken off (`see this`); `[a]{c}`, which no story can hold (Rasa's
    writer fails on it, a 500), by its intent alone. Before, the first read back with an
    entity the message never had, and the second made a story `botserver train` refused."""
    events: list[Event] = [ActionExecuted(action_name="action_listen")]
    for text in ["see [this](link)", "[a]{c}"]:
        parse_data = {"intent": {"name": "inform"}, "entities": []}
        events += [UserUttered(text=text, parse_data=parse_data), ActionExecuted("utter_ok")]
    story = conversation_story(Tracker("u1", {}, events))
    [step] = read_story_data(parse_yaml(story), "story.yml")
    read = [e for e in step.events if isinstance(e, UserUttered)]
    assert [(e.text, e.intent_name, e.entities) for e in read] == [
        ("see this", "inform", []),
        (None, "inform", []),
    ]


def test_a_long_story_replays_no_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The story is the events as logged: no tracker is replayed for it. Before, each
    session was replayed into a tracker, which walked back over the session at each undo:
    a 20,000-event conversation with an undo every 50 turns took 3 times the function calls
    of one of 10,000 (4.1 M, 12.4 M; now 2.0 M, 4.0 M)."""
    replayed = []
    monkeypatch.setattr(Tracker, "update", lambda self, event: replayed.append(event))
    turn = [
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="hi", parse_data={"intent": {"name": "greet"}}),
        UserUtteranceReverted(),
    ]
    tracker = Tracker("u1", {}, [])
    tracker.events = turn * 1000  # as loaded (the patched update keeps nothing)
    for until in (None, 1e12):
        story = conversation_story(tracker, all_sessions=True, until=until)
        assert story.count("  - intent: greet\n") == 1000
    assert replayed == []


def test_every_text_reads_back_exactly_from_the_story() -> None:
    """Before, a NUL made the file invalid YAML, and a carriage return, a leading space or a
    final newline read back as another text."""
    events: list = [ActionExecuted(action_name="action_session_start", timestamp=1.0)]
    for i, text in enumerate(TRICKY_TEXTS):
        events.append(UserUttered(text=text, parse_data={}, timestamp=2.0 + i))
        events.append(ActionExecuted(action_name=None, action_text=text, timestamp=2.5 + i))
    story = yaml.safe_load(conversation_story(Tracker("u1", {}, events)))
    steps = story["stories"][0]["steps"]
    assert [step["user"] for step in steps if "user" in step] == TRICKY_TEXTS
    assert [step["bot"] for step in steps if "bot" in step] == TRICKY_TEXTS
    assert "|-" in conversation_story(Tracker("u1", {}, events[:3]))  # Rasa's block style kept


def test_a_message_answered_from_its_text_is_written_by_its_text_alone() -> None:
    # Before, every message was written as `intent:` plus `user:`; Rasa writes a message
    # whose next action was predicted from its text (use_text_for_featurization: true) as
    # `user:` only, and one read by its intent as both.
    events = [
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="I love pizza", parse_data={"intent": {"name": "ask"}}),
        DefinePrevUserUtteredFeaturization(use_text_for_featurization=True),
        ActionExecuted(action_name="utter_ok"),
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="yes", parse_data={"intent": {"name": "affirm"}}),
        DefinePrevUserUtteredFeaturization(use_text_for_featurization=False),
        ActionExecuted(action_name="utter_happy"),
    ]
    assert conversation_story(Tracker("e2e", {}, events)) == (
        'version: "3.1"\nstories:\n- story: e2e\n  steps:\n'
        "  - user: |-\n      I love pizza\n  - action: utter_ok\n"
        "  - intent: affirm\n    user: |-\n      yes\n  - action: utter_happy\n"
    )


def test_a_slot_value_yaml_1_2_reads_as_a_number_is_written_quoted() -> None:
    """`1e3` and `2.5e3` are text to PyYAML's YAML 1.1, which wrote them plain, and numbers to
    YAML 1.2, as Rasa and botserver read a story: the text read back as 1000.0."""
    events: list = [ActionExecuted(action_name="action_session_start", timestamp=1.0)]
    for i, value in enumerate(["1e3", "2.5e3", "-4E2", "yes"]):
        events.append(SlotSet(key=f"code{i}", value=value, timestamp=2.0 + i))
    story = parse_yaml(conversation_story(Tracker("u1", {}, events)))
    steps = story["stories"][0]["steps"]
    assert [list(step["slot_was_set"][0].values())[0] for step in steps] == [
        "1e3",
        "2.5e3",
        "-4E2",
        "yes",
    ]


def test_a_story_until_a_time_is_each_session_as_it_was_then_as_in_rasa() -> None:
    """Rasa's `get_test_stories` takes the last session (or every session), each as it was at
    `until` (`travel_back_in_time`: its events in stored order up to the first one after that
    time), drops the empty ones, and numbers the stories only when more than one is left.
    Before, every event at or before `until` was kept (one stored after a later one too), the
    last session was taken after that (an `until` before the last session's start gave the
    session before it, where Rasa gives no story), and `all_sessions` numbered a lone story."""
    late_slot = SlotSet(key="name", value="Bob", timestamp=100.5)  # stored after 101..103
    tracker = Tracker("u1", {}, [*_session(100.0, "hi"), late_slot, *_session(200.0, "yo")])

    assert conversation_story(tracker, until=150.0) == 'version: "3.1"\n'
    every = yaml.safe_load(conversation_story(tracker, all_sessions=True, until=102.5))
    assert [s["story"] for s in every["stories"]] == ["u1"]
    assert {"slot_was_set": [{"name": "Bob"}]} not in every["stories"][0]["steps"]
    assert {"slot_was_set": [{"name": "Bob"}]} in yaml.safe_load(
        conversation_story(tracker, all_sessions=True, until=200.0)
    )["stories"][0]["steps"]
    lone = Tracker("u1", {}, _session(100.0, "hi"))
    assert (
        yaml.safe_load(conversation_story(lone, all_sessions=True))["stories"][0]["story"] == "u1"
    )


def test_a_text_with_markup_like_brackets_and_entities_reads_back_with_its_entities() -> None:
    """A message with real entities whose text also holds brackets that read as markup is
    written as one without entities is (the look-alike markup taken off, `see this`), its
    entities marked up on the text left. Before, the look-alike was written as it was and
    read back as one more entity (`link`), which the message never had."""
    text = "see [this](link) in Berlin"
    city = {"entity": "city", "start": 20, "end": 26, "value": "Berlin"}
    parse_data = {"intent": {"name": "inform"}, "entities": [city]}
    events = [ActionExecuted(action_name="action_listen"), UserUttered(text, parse_data)]
    story = conversation_story(Tracker("u1", {}, events))
    [step] = read_story_data(parse_yaml(story), "story.yml")
    [read] = [e for e in step.events if isinstance(e, UserUttered)]
    assert read.text == "see this in Berlin"
    assert [(e["entity"], e["value"], read.text[e["start"] : e["end"]]) for e in read.entities] == [
        ("city", "Berlin", "Berlin")
    ]


def test_a_lone_session_started_begins_a_story_where_the_tracker_begins_its_session() -> None:
    """A `session_started` with no `action_session_start` before it (as `POST
    …/tracker/events` may append) begins a session for every part of botserver (the
    tracker, the action server, the stores), and so a story. Rasa splits `all_sessions`
    only at `action_session_start`, while its SQL store's last session begins at the
    `session_started`: in botserver both views agree (docs/differences-from-rasa.md)."""
    after = UserUttered(text="again", parse_data={"intent": {"name": "greet"}}, timestamp=300.0)
    tracker = Tracker("u1", {}, [*_session(100.0, "hi"), SessionStarted(timestamp=299.0), after])
    last = yaml.safe_load(conversation_story(tracker))["stories"]
    assert last == [{"story": "u1", "steps": [{"intent": "greet", "user": "again"}]}]
    assert tracker.current_session_events()[0] == SessionStarted(timestamp=299.0)
    every = yaml.safe_load(conversation_story(tracker, all_sessions=True))["stories"]
    assert [s["story"] for s in every] == ["u1, story 1", "u1, story 2"]


def test_a_story_of_blank_texts_and_stray_brackets_reads_back() -> None:
    """A message of blanks is written by its intent (a story's `user:` needs a text), a bot
    text of blanks not at all, and a message whose bracket beside an entity would change
    the entity's span (`[x`, entity on `x`) by its intent alone. Before, the first two made
    the story unreadable ("'user' needs the text the user says") and the last read back
    with the entity over `[x`."""
    x = {"entity": "e", "value": "x", "start": 1, "end": 2}
    events: list[Event] = [
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="   ", parse_data={"intent": {"name": "inform"}}),
        ActionExecuted(action_name=None, action_text="  "),
        UserUttered(text="[x", parse_data={"intent": {"name": "inform"}, "entities": [x]}),
    ]
    story = conversation_story(Tracker("u1", {}, events))
    [step] = read_story_data(parse_yaml(story), "story.yml")
    read = [e for e in step.events if isinstance(e, UserUttered)]
    assert [(e.text, e.intent_name) for e in read] == [(None, "inform"), (None, "inform")]
    assert [(e["entity"], e["value"]) for e in read[1].entities] == [("e", "x")]


def test_a_message_written_by_its_intent_keeps_its_entities() -> None:
    """A step written without its text (no story can hold the text: `[a]{c}`; or a message
    with no text, as `trigger_intent` logs) lists its entities, as a story step without
    `user:` does, so the story trains and tests on them. Before, they were left out."""
    to = {"entity": "city", "value": "Berlin", "role": "to", "start": 0, "end": 1}
    count = {"entity": "count", "value": 2, "start": 1, "end": 2}
    parse_data = {"intent": {"name": "book"}, "entities": [to, count]}
    events: list[Event] = [
        UserUttered(text="[a]{c}", parse_data=parse_data),
        UserUttered(text=None, parse_data={"intent": {"name": "book"}, "entities": [count]}),
    ]
    story = conversation_story(Tracker("u1", {}, events))
    assert "  - intent: book\n    entities:\n    - city: Berlin\n      role: to\n" in story
    [step] = read_story_data(parse_yaml(story), "story.yml")
    read = [e for e in step.events if isinstance(e, UserUttered)]
    assert [[(e["entity"], e["value"], e.get("role")) for e in r.entities] for r in read] == [
        [("city", "Berlin", "to"), ("count", 2, None)],
        [("count", 2, None)],
    ]


def test_a_slash_message_whose_brackets_read_as_markup_is_written_by_its_intent() -> None:
    """A message starting with `/` is written as it is only when it reads back as itself: a
    `/` text holding `[a]{c}` (no story can hold it) or `[a](b)` (it reads back as another
    text, with an entity) is written by its intent and entities. Before, the first made a
    story the reader refused ("invalid entity JSON '{c}'") and the second read back with
    an entity the message never had."""
    count = {"entity": "count", "value": 5, "start": 7, "end": 19}
    events: list[Event] = []
    for text, entities in [("/inform [a]{c}", []), ('/inform{"count": "[5](n)"}', [count])]:
        parse_data = {"intent": {"name": "inform"}, "entities": entities}
        events += [UserUttered(text=text, parse_data=parse_data), ActionExecuted("utter_ok")]
    story = conversation_story(Tracker("u1", {}, events))
    [step] = read_story_data(parse_yaml(story), "story.yml")
    read = [e for e in step.events if isinstance(e, UserUttered)]
    assert [(e.text, e.intent_name) for e in read] == [(None, "inform"), (None, "inform")]
    assert [[(e["entity"], e["value"]) for e in r.entities] for r in read] == [
        [],
        [("count", 5)],
    ]


@pytest.mark.parametrize("breaking", ["\x85", "\u2028", "\u2029", "\r", "\n"])
def test_a_value_holding_a_line_break_reads_back_as_it_was(breaking: str) -> None:
    """An entity's or a slot's value, or an entity's name, holding a character YAML reads
    as a line break (NEL, LS, PS, CR, newline: pasted text) is written escaped, in double
    quotes. Before, NEL was written as it is and read back as a space (`a b`), and an
    entity's name holding LS or PS made a story the reader refused."""
    value = f"a{breaking}b"
    entity = {"entity": f"note{breaking}", "value": value}
    events: list[Event] = [
        UserUttered(text=None, parse_data={"intent": {"name": "inform"}, "entities": [entity]}),
        SlotSet("note", value),
    ]
    story = conversation_story(Tracker("u1", {}, events))
    [step] = read_story_data(parse_yaml(story), "story.yml")
    [read] = [e for e in step.events if isinstance(e, UserUttered)]
    assert read.entities == [entity]
    assert [(e.key, e.value) for e in step.events if isinstance(e, SlotSet)] == [("note", value)]
