"""What a slot holds once set, by its type, as Rasa 3 keeps it: a list slot holds a list."""

from __future__ import annotations

import pytest

from server.dialogue.processor import DialogueModel
from server.trackers.events import SlotSet
from server.training.domain_yaml import read_domain
from tests.dialogue.conversation_fixtures import (
    Conversation,
    make_agent,
    train_files,
    train_project,
    write_files,
)

LIST_BOT = {
    "config.yml": "language: en\npolicies:\n  - name: RulePolicy\n",
    "domain.yml": """
version: "3.1"
intents: [greet]
slots:
  toppings:
    type: list
    initial_value: cheese
    mappings: [{type: custom}]
  extras:
    type: list
    influence_conversation: false
    mappings: [{type: custom}]
responses:
  utter_toppings: [{text: "With {toppings}."}]
""",
    "data/rules.yml": """
version: "3.1"
rules:
- {rule: greet, steps: [{intent: greet}, {action: utter_toppings}]}
""",
}


@pytest.fixture(scope="module")
def list_bot(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    return train_files(LIST_BOT, tmp_path_factory.mktemp("list-bot"))


async def test_a_list_slot_set_to_one_value_holds_a_list_of_it(list_bot: DialogueModel) -> None:
    # Before: an action's `SlotSet("toppings", "ham")` (or a slot event posted to the API)
    # left the text itself in the list slot, so the next action iterating over the slot got
    # its letters, and `initial_value: cheese` read "With cheese." where Rasa says
    # "With ['cheese']."; Rasa's list slot keeps any single value as a one-item list.
    agent = make_agent(list_bot)
    conversation = Conversation(agent, "list-one")

    assert (await conversation.say("/greet")).texts == ["With ['cheese']."]

    await agent.append_events("list-one", [SlotSet("toppings", "ham"), SlotSet("extras", 3)])
    tracker = await conversation.tracker()
    assert tracker.current_state()["slots"]["toppings"] == ["ham"]
    assert tracker.get_slot("extras") == [3]
    assert (await conversation.say("/greet")).texts == ["With ['ham']."]
    # The event keeps the value as the action sent it, as Rasa stores it.
    assert [e.value for e in tracker.events if isinstance(e, SlotSet)][-2:] == ["ham", 3]


async def test_a_list_slot_keeps_lists_and_empty_values_as_they_are(
    list_bot: DialogueModel,
) -> None:
    agent = make_agent(list_bot)
    await agent.append_events(
        "list-kept",
        [SlotSet("toppings", ["ham", "egg"]), SlotSet("extras", "")],
    )
    tracker = await Conversation(agent, "list-kept").tracker()
    assert tracker.get_slot("toppings") == ["ham", "egg"]
    assert tracker.get_slot("extras") == ""
    await agent.append_events("list-kept", [SlotSet("toppings", None)])
    assert (await Conversation(agent, "list-kept").tracker()).get_slot("toppings") is None


def test_slot_defaults_that_differ_only_in_their_list_slots_are_unequal_both_ways() -> None:
    """A hot tracker is reused only when its slot defaults equal the model's, list slots
    included; `!=` must say the same as `==` (dict's own `!=` ignored the list slots)."""
    from server.trackers.tracker import SlotDefaults

    plain = SlotDefaults({"toppings": None})
    listed = SlotDefaults({"toppings": None}, frozenset({"toppings"}))
    assert plain != listed and not plain == listed
    assert not plain != SlotDefaults({"toppings": None})


@pytest.mark.filterwarnings("error")
def test_slot_defaults_are_unequal_to_what_is_no_dict() -> None:
    """Before, `SlotDefaults(...) == None` was True (and `!=` False): dict's NotImplemented
    was read as true, with a DeprecationWarning (a TypeError from Python 3.14 on)."""
    from server.trackers.tracker import SlotDefaults

    defaults = SlotDefaults({"toppings": None})
    assert defaults != None and not defaults == None  # noqa: E711
    assert defaults != 5 and defaults != "toppings"
    assert defaults == {"toppings": None} and {"toppings": None} == defaults


VALUELESS_CATEGORICAL_BOT = {
    "config.yml": "language: en\npolicies:\n  - name: MemoizationPolicy\n",
    "domain.yml": """
version: "3.1"
intents: [inform]
entities: [size]
slots:
  size:
    type: categorical
    mappings: [{type: from_entity, entity: size}]
responses:
  utter_noted: [{text: "Noted."}]
  utter_which: [{text: "Which size?"}]
""",
    "data/stories.yml": """
version: "3.1"
stories:
- story: a size
  steps:
  - intent: inform
    entities: [{size: large}]
  - action: utter_noted
- story: no size
  steps:
  - intent: inform
  - action: utter_which
""",
}


async def test_a_categorical_slot_without_values_trains_and_reads_as_other(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Before: "categorical slot 'size' needs a list of 'values'" and nothing trained. Rasa
    # trains such a slot (its domain schema does not ask for `values`); every value it holds
    # reads as `__other__`, so the slot tells the policies whether it is set.
    warnings: list[str] = []
    folder = write_files(VALUELESS_CATEGORICAL_BOT, tmp_path_factory.mktemp("valueless"))
    read_domain(folder / "domain.yml", warnings=warnings)
    assert warnings == [
        f"{folder / 'domain.yml'}:6: categorical slot 'size' lists no values: every value it "
        "takes reads to the policies as `__other__` (as in Rasa), so they only see whether "
        "it is set"
    ]
    model = train_project(folder, folder / "models")
    conversation = Conversation(make_agent(model), "valueless")

    assert (await conversation.say('/inform{"size": "small"}')).texts == ["Noted."]
    assert (await conversation.tracker()).get_slot("size") == "small"
    assert (await Conversation(make_agent(model), "none").say("/inform")).texts == ["Which size?"]


VALUELESS_RULES_BOT = {
    "config.yml": "language: en\npolicies:\n  - name: RulePolicy\n",
    "domain.yml": """
version: "3.1"
intents: [greet]
slots:
  size:
    type: categorical
    mappings: [{type: custom}]
responses:
  utter_noted: [{text: "Noted."}]
  utter_which: [{text: "Which size?"}]
""",
    "data/rules.yml": """
version: "3.1"
rules:
- rule: a size was given
  condition: [{slot_was_set: [{size: large}]}]
  steps: [{intent: greet}, {action: utter_noted}]
- rule: no size yet
  condition: [{slot_was_set: [{size: null}]}]
  steps: [{intent: greet}, {action: utter_which}]
""",
}


async def test_every_value_of_a_categorical_slot_without_values_reads_alike(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Rasa's one-hot of such a slot has one place, `__other__`: a rule on `size: large`
    # applies to any value the slot holds ("small" here), and not to the unset slot.
    model = train_files(VALUELESS_RULES_BOT, tmp_path_factory.mktemp("valueless-rules"))
    agent = make_agent(model)
    await agent.append_events("sized", [SlotSet("size", "small")])
    assert (await Conversation(agent, "sized").say("/greet")).texts == ["Noted."]
    assert (await Conversation(agent, "unsized").say("/greet")).texts == ["Which size?"]
