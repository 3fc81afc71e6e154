"""Stories and rules as Rasa reads them: steps, or, checkpoints, conditions, errors with lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.dialogue.story_steps import STORY_START, generate_training_stories
from server.errors import InvalidProjectFile
from server.trackers.events import (
    ActionExecuted,
    ActiveLoop,
    Restarted,
    SlotSet,
    UserUttered,
)
from server.training.domain_yaml import read_domain
from server.training.stories_yaml import read_story_file
from tests.shared_data import TESTDATA

YAML_STORIES = TESTDATA / "test_yaml_stories"


def write(tmp_path: Path, text: str, name: str = "stories.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def names(events: list) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, UserUttered):
            out.append(f"user:{e.intent_name or e.text}")
        elif isinstance(e, ActionExecuted):
            out.append(e.action_name or f"bot:{e.action_text}")
        elif isinstance(e, SlotSet):
            out.append(f"slot:{e.key}={e.value}")
        elif isinstance(e, ActiveLoop):
            out.append(f"loop:{e.name}")
        else:
            out.append(e.type_name)
    return out


def test_story_steps_become_events(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
stories:
- story: order
  steps:
  - intent: inform
    entities:
    - cuisine: italian
    - city: Berlin
      role: destination
    - number
  - action: restaurant_form
  - active_loop: restaurant_form
  - slot_was_set:
    - cuisine: italian
    - outdoor: true
  - active_loop: null
  - bot: Here you go
  - action: restart
""",
    )
    [step] = read_story_file(path)
    assert step.kind == "story" and step.start_checkpoints == [STORY_START]
    assert step.filename == str(path) and step.line == 3  # `- story: order`
    assert step.event_lines[0] == 5  # `- intent: inform`
    user = step.events[0]
    assert isinstance(user, UserUttered) and user.text is None
    assert user.parse_data["intent"] == {"name": "inform"}
    assert user.entities == [
        {"entity": "cuisine", "value": "italian"},
        {"entity": "city", "value": "Berlin", "role": "destination"},
        {"entity": "number", "value": ""},
    ]
    assert names(step.events[1:]) == [
        "restaurant_form",
        "loop:restaurant_form",
        "slot:cuisine=italian",
        "slot:outdoor=True",
        "loop:None",
        "bot:Here you go",
        "restart",
    ]
    # `action: restart` names the event, as in Rasa's reader
    assert isinstance(step.events[-1], Restarted)


def test_end_to_end_user_text_with_annotations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
stories:
- story: e2e
  steps:
  - user: |
      I want [afghan](cuisine) food in [Paris]{"entity": "city", "role": "to"}
    intent: inform
  - user: just text
""",
    )
    [step] = read_story_file(path)
    first, second = step.events
    assert isinstance(first, UserUttered) and isinstance(second, UserUttered)
    assert first.text == "I want afghan food in Paris"
    assert first.intent_name == "inform"
    assert first.entities == [
        {"start": 7, "end": 13, "value": "afghan", "entity": "cuisine"},
        {"start": 22, "end": 27, "value": "Paris", "entity": "city", "role": "to"},
    ]
    assert second.text == "just text" and second.intent_name is None


def test_an_intent_messages_entities_nested_too_deep_are_ignored_with_a_warning(
    tmp_path: Path,
) -> None:
    """As entities that are not JSON: a user text `/greet{...}` whose JSON nests 5,000
    levels (10 KB) was a RecursionError, a 500 from `POST /model/train`."""
    nested = "[" * 5000 + "]" * 5000
    story = f'stories:\n- story: s\n  steps:\n  - user: |\n      /greet{{"city": {nested}}}\n'
    warnings: list[str] = []
    [step] = read_story_file(write(tmp_path, story), warnings=warnings)
    [user] = step.events
    assert isinstance(user, UserUttered) and user.entities == []
    [warning] = warnings
    assert warning.endswith("; they are ignored")


def test_bare_slot_names_take_rasa_default_by_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
stories:
- story: s
  steps:
  - intent: greet
  - slot_was_set:
    - name
    - items
    - flag
""",
    )
    warnings: list[str] = []
    [step] = read_story_file(
        path, slot_types={"name": "text", "items": "list", "flag": "bool"}, warnings=warnings
    )
    slots = [(e.key, e.value) for e in step.events if isinstance(e, SlotSet)]
    assert slots == [("name", "filled"), ("items", ["filled"]), ("flag", None)]
    assert len(warnings) == 1 and "flag" in warnings[0]


def test_or_expands_to_one_step_per_alternative() -> None:
    steps = read_story_file(YAML_STORIES / "story_with_or_slot_was_set.yml")
    assert [names(s.events) for s in steps] == [
        ["user:hello", "utter_greet", "slot:name=peter"],
        ["user:hello", "utter_greet", "slot:name=bob"],
    ]
    assert all(s.end_checkpoints == ["check_greet"] for s in steps)


def test_or_slot_was_set_of_two_slots_is_two_alternatives(tmp_path: Path) -> None:
    # Rasa's reader makes each slot of an `or`'s `slot_was_set` an alternative of its own:
    # the story below is followed when `name` is bob OR `vip` is true, not only when both are.
    path = write(
        tmp_path,
        """
stories:
- story: s
  steps:
  - intent: greet
  - or:
    - slot_was_set:
      - name: bob
      - vip: true
    - slot_was_set:
      - name: joe
  - action: utter_greet
""",
    )
    steps = read_story_file(path)
    assert [names(s.events) for s in steps] == [
        ["user:greet", "slot:name=bob", "utter_greet"],
        ["user:greet", "slot:vip=True", "utter_greet"],
        ["user:greet", "slot:name=joe", "utter_greet"],
    ]


@pytest.mark.parametrize("kind", ["story", "rule"])
def test_an_or_of_empty_slot_was_set_alone_keeps_the_story(tmp_path: Path, kind: str) -> None:
    # No slot under the `or`: the step adds nothing and the story or rule is trained without
    # it, as Rasa skips such a step (it once made no alternative at all, and the whole story
    # was dropped without a word).
    section = "stories" if kind == "story" else "rules"
    path = write(
        tmp_path,
        f"""
{section}:
- {kind}: s
  steps:
  - intent: greet
  - or:
    - slot_was_set: []
  - action: utter_greet
""",
    )
    steps = read_story_file(path)
    assert [names(s.events) for s in steps] == [["user:greet", "utter_greet"]]


def test_checkpoints_split_and_join_stories() -> None:
    steps = read_story_file(YAML_STORIES / "stories.yml")
    show_it_all = [s for s in steps if s.name == "show_it_all"]
    # an intermediate checkpoint splits the story into two steps
    assert [s.start_checkpoints for s in show_it_all] == [
        ["check_greet", "check_hello"],
        ["check_intermediate"],
    ]
    assert show_it_all[0].end_checkpoints == ["check_intermediate"]

    stories = generate_training_stories(steps)
    sequences = {tuple(names(s.events)) for s in stories}
    assert (
        "action_listen",
        "user:hello",
        "utter_greet",
        "slot:name=peter",
        "action_listen",
        "user:simple",
        "utter_default",
        "action_listen",
    ) in sequences
    # every story starts a conversation and ends listening
    for story in stories:
        first, last = story.events[0], story.events[-1]
        assert isinstance(first, ActionExecuted) and first.action_name == "action_listen"
        assert isinstance(last, ActionExecuted) and last.action_name == "action_listen"


def test_checkpoint_after_or_joins_each_alternative() -> None:
    stories = generate_training_stories(
        read_story_file(YAML_STORIES / "stories_checkpoint_after_or.yml")
    )
    assert sorted(names(s.events)[1] for s in stories) == ["user:affirm", "user:thank_you"]
    assert all(
        names(s.events)[2:]
        == ["utter_default", "action_listen", "user:goodbye", "utter_goodbye", "action_listen"]
        for s in stories
    )


def test_cycles_terminate() -> None:
    stories = generate_training_stories(read_story_file(YAML_STORIES / "stories_with_cycle.yml"))
    assert isinstance(stories, list)


def test_checkpoint_conditions_see_the_slots_a_user_steps_entities_set() -> None:
    # `name: "Josh"` in a user step fills the `name` slot (from_entity), so the checkpoint
    # conditioned on it is reached: Rasa counts 3 or 4 such stories, all ending in goodbye.
    domain = read_domain(TESTDATA / "test_domains" / "default_with_slots.yml", warnings=[])
    steps = read_story_file(YAML_STORIES / "stories_with_cycle.yml", warnings=[])
    stories = generate_training_stories(steps, domain)
    assert len(stories) == 3
    for story in stories:
        assert names(story.events)[-5:] == [
            "user:default",
            "slot:name=Josh",
            "utter_goodbye",
            "action_restart",
            "action_listen",
        ]


def test_rules_condition_start_and_wait_for_user_input() -> None:
    steps = read_story_file(YAML_STORIES / "rules_without_stories.yml")
    by_name = {s.name: s for s in steps}
    with_condition = by_name["Rule with condition"]
    assert with_condition.kind == "rule"
    assert names(with_condition.condition) == ["loop:loop_q_form", "slot:requested_slot=some_slot"]
    assert by_name["Rule which only applies to conversation start"].conversation_start
    assert not by_name["Rule after which another action should be predicted"].wait_for_user_input
    # or in a rule: one rule step per alternative
    assert len([s for s in steps if s.name == "start optional preferences"]) == 2

    rules = {r.name: r for r in generate_training_stories(steps)}
    no_wait = rules["Rule after which another action should be predicted"]
    assert names(no_wait.events) == ["action_listen", "user:explain", "utter_explain_some_slot"]
    waits = rules["Rule without condition"]
    assert names(waits.events)[-1] == "action_listen"
    assert names(rules["Rule with condition"].condition) == [
        "loop:loop_q_form",
        "slot:requested_slot=some_slot",
    ]


def test_retrieval_intent_keeps_full_name() -> None:
    [step] = read_story_file(YAML_STORIES / "test_full_retrieval_intent_story.yml")
    user = step.events[0]
    assert isinstance(user, UserUttered)
    assert user.parse_data["intent"] == {
        "name": "chitchat",
        "full_retrieval_intent_name": "chitchat/ask_name",
    }
    assert user.text == "What is your name?"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "stories:\n- story: a\n  steps:\n  - intent: greet\n    actoin: utter_greet\n",
            5,
            "unknown key 'actoin'",
        ),
        ("stories:\n- story: a\n  steps:\n  - intnt: greet\n", 4, "unknown key 'intnt'"),
        ("stories:\n- story: a\n  steps:\n  - intent:\n  - action: x\n", 4, "needs an 'intent'"),
        ("rules:\n- rule: r\n  steps:\n  - checkpoint: c\n", 4, "cannot have a 'checkpoint'"),
        (
            "rules:\n- rule: r\n  condition:\n  - intent: greet\n  steps:\n  - action: a\n",
            4,
            "unknown condition 'intent'",
        ),
        (
            "rules:\n- rule: r\n  wait_for_user_input: maybe\n  steps:\n  - action: a\n",
            3,
            "true or false",
        ),
        ("stories:\n- story: a\n  steps:\n  - action: a\n  - 42\n", 5, "must be a mapping"),
        ("stories:\n  story: a\n", 2, "must be a list"),
        ("stories:\n- story: a\n  steps:\n    - action: a\n   - action: b\n", 5, "invalid YAML"),
        (
            "stories:\n- story: a\n  steps:\n  - or:\n    - action: a\n",
            5,
            "'or' alternative",
        ),
        # Before: read as the intents 'True' (YAML 1.2's boolean) and '42', which no NLU file
        # or domain can name unquoted; the NLU reader and Rasa's schema refuse them.
        ("rules:\n- rule: r\n  steps:\n  - intent: true\n", 4, "'intent' must be a name"),
        ("stories:\n- story: a\n  steps:\n  - intent: 42\n", 4, "not 42; quote it"),
        # Before: "a user step needs an 'intent' name", for a step that names one.
        ("stories:\n- story: a\n  steps:\n  - intent: 2020-01-01\n", 4, "2020-01-01; quote it"),
    ],
)
def test_mistakes_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InvalidProjectFile) as info:
        read_story_file(path)
    assert info.value.filename == str(path)
    assert info.value.line == line, str(info.value)
    assert fragment in str(info.value)
    assert f"{path}:{line}:" in str(info.value)


def test_other_sections_are_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hi
responses:
  utter_greet:
  - text: hi
rules:
- rule: greet
  steps:
  - intent: greet
  - action: utter_greet
""",
    )
    [rule] = read_story_file(path)
    assert rule.name == "greet" and rule.kind == "rule"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "rules:\n- rule: r\n  steps:\n  - action: a\n- story: s\n  steps:\n  - action: b\n",
            5,
            "unknown key 'story' in an item under 'rules'",
        ),
        (
            "stories:\n- rule: r\n  steps:\n  - action: a\n",
            2,
            "unknown key 'rule' in an item under 'stories'",
        ),
        ("rules:\n- rul: r\n  steps:\n  - action: a\n", 2, "unknown key 'rul'"),
        # A typo'd `steps` stops training: it is not taken for a rule without steps, which
        # is skipped with only a warning.
        ("rules:\n- rule: r\n  step:\n  - action: a\n", 3, "unknown key 'step'"),
        ("stories:\n- story: s\n  stpes:\n  - action: a\n", 3, "unknown key 'stpes'"),
    ],
)
def test_an_item_of_the_wrong_section_names_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InvalidProjectFile) as info:
        read_story_file(path)
    assert f"{path}:{line}:" in str(info.value)
    assert fragment in str(info.value)


def test_a_nameless_item_is_ignored_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n- steps:\n  - intent: greet\n  - action: utter_greet\n")
    warnings: list[str] = []
    assert read_story_file(path, warnings=warnings) == []
    assert warnings == [
        f"{path}:2: an item under 'rules' has no 'rule' name; it is ignored "
        "(give it a 'rule:' key to train it)"
    ]


def test_a_story_ending_at_an_unused_checkpoint_is_trained() -> None:
    # Rasa's own count: two stories end at checkpoints nothing starts from (trained), one
    # starts from a checkpoint nothing ends at (never reached).
    steps = read_story_file(YAML_STORIES / "stories_unused_checkpoints.yml", warnings=[])
    stories = generate_training_stories(steps)
    assert [(s.name, names(s.events)) for s in stories] == [
        (
            "simple_story_with_end_checkpoint_1",
            ["action_listen", "user:simple", "utter_default", "utter_greet", "action_listen"],
        ),
        (
            "simple_story_with_end_checkpoint_2",
            ["action_listen", "user:hello", "utter_greet", "slot:name=peter", "action_listen"],
        ),
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("rules:\n- rule: r\n  steps: []\n", 3),
        ("rules:\n- rule: r\n", 2),
        ("rules:\n- rule: r\n  steps:\n", 3),
        ("stories:\n- story: r\n", 2),
    ],
)
def test_an_item_without_steps_is_ignored_with_a_warning(
    tmp_path: Path, text: str, line: int
) -> None:
    """As Rasa, which warns "has no steps. It will be skipped." (before: an error that
    stopped training)."""
    path = write(tmp_path, text)
    warnings: list[str] = []
    assert read_story_file(path, warnings=warnings) == []
    kind = "rule" if text.startswith("rules") else "story"
    assert warnings == [f"{path}:{line}: {kind} 'r' has no steps; it is ignored"]


def test_a_story_with_an_empty_list_of_steps_is_ignored_with_a_warning(tmp_path: Path) -> None:
    # GET /conversations/{id}/story writes `steps: []` for a session without a turn yet;
    # `botserver test` on that file used to stop with an error.
    path = write(tmp_path, "stories:\n- story: fresh\n  steps: []\n")
    warnings: list[str] = []
    assert read_story_file(path, warnings=warnings) == []
    assert warnings == [f"{path}:3: story 'fresh' has no steps; it is ignored"]
