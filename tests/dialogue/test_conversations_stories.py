"""Stories written as Rasa users write them, held in real conversations with the bot."""

from __future__ import annotations

from pathlib import Path

from server.training.evaluate import test_core as evaluate_core
from tests.dialogue.conversation_fixtures import (
    Conversation,
    make_agent,
    train_project,
    write_files,
)

DOMAIN = """
version: "3.1"
intents: [ask, affirm]
entities: [name]
slots:
  name: {type: text, mappings: [{type: from_entity, entity: name}]}
responses:
  utter_name: [{text: "hi {name}"}]
  utter_noname: [{text: who are you?}]
  utter_ok: [{text: ok}]
"""
STORIES = """
version: "3.1"
stories:
- story: ask with a name
  steps:
  - intent: ask
    entities:
    - name: bob
  - action: utter_name
  - intent: affirm
  - action: utter_ok
- story: ask without a name
  steps:
  - intent: ask
  - action: utter_noname
"""


def write_project(folder: Path) -> Path:
    (folder / "data").mkdir()
    (folder / "domain.yml").write_text(DOMAIN)
    (folder / "config.yml").write_text("policies:\n- name: MemoizationPolicy\n- name: RulePolicy\n")
    (folder / "data" / "stories.yml").write_text(STORIES)
    return folder


async def test_entities_of_a_story_step_set_their_slots_without_slot_was_set(
    tmp_path: Path,
) -> None:
    # As in Rasa, the story's entity fills the `name` slot in training just as the
    # from_entity mapping fills it in the conversation, so the story is followed.
    agent = make_agent(train_project(write_project(tmp_path), tmp_path / "models"))
    named = Conversation(agent, "named")
    assert (await named.say('/ask{"name": "joe"}')).texts == ["hi joe"]
    assert (await named.say("/affirm")).texts == ["ok"]
    assert (await Conversation(agent, "nameless").say("/ask")).texts == ["who are you?"]


E2E_STORIES = """
version: "3.1"
stories:
- story: end to end
  steps:
  - intent: ask
  - bot: Hello there, friend
  - user: I love pizza
  - action: utter_ok
  - intent: affirm
  - bot: Great to hear
"""
NLU = """
version: "3.1"
nlu:
- intent: ask
  examples: |
    - who am I
    - do you know me
- intent: affirm
  examples: |
    - yes
    - sure
"""


def write_e2e_project(folder: Path) -> Path:
    """The project with the end-to-end story, and NLU that gives every text an intent."""
    write_project(folder)
    (folder / "data" / "stories.yml").write_text(E2E_STORIES)
    (folder / "data" / "nlu.yml").write_text(NLU)
    return folder


async def test_an_end_to_end_story_with_bot_texts_is_followed_to_its_end(tmp_path: Path) -> None:
    folder = write_e2e_project(tmp_path)
    conversation = Conversation(make_agent(train_project(folder, tmp_path / "models")), "e2e")
    greeting = await conversation.say("/ask")
    assert greeting.texts == ["Hello there, friend"]
    # The bot text is logged as Rasa logs it: by its text, with no action name.
    actions = [e.as_dict() for e in greeting.events if e.as_dict()["event"] == "action"]
    assert [(a["name"], a["action_text"]) for a in actions][-2:] == [
        (None, "Hello there, friend"),
        ("action_listen", None),
    ]
    pizza = await conversation.say("I love pizza")
    assert pizza.texts == ["ok"]  # then it listens: the text is what the story continues on
    assert [e.as_dict()["event"] for e in pizza.events][:3] == [
        "user",
        "user_featurization",
        "action",
    ]
    assert (await conversation.say("/affirm")).texts == ["Great to hear"]


def test_botserver_test_passes_the_end_to_end_story_it_was_trained_on(tmp_path: Path) -> None:
    folder = write_e2e_project(tmp_path)
    model = train_project(folder, tmp_path / "models")
    report = evaluate_core(model, [folder / "data" / "stories.yml"], tmp_path / "results")
    # (the text step is answered from its text, then the story goes on from that text)
    assert report["conversation_accuracy"] == {
        "accuracy": 1.0,
        "correct": 1,
        "total": 1,
        "with_warnings": 0,
    }


OR_FILES = {
    "config.yml": "policies:\n- name: MemoizationPolicy\n- name: RulePolicy\n",
    # The entities fill the slots but do not count in the dialogue: only the slots tell the
    # conversations apart, as in the story.
    "domain.yml": """
version: "3.1"
intents:
- greet: {use_entities: []}
entities: [name, code]
slots:
  name: {type: text, mappings: [{type: from_entity, entity: name}]}
  code: {type: text, mappings: [{type: from_entity, entity: code}]}
responses:
  utter_special: [{text: special}]
""",
    "data/stories.yml": """
version: "3.1"
stories:
- story: a known guest, by name or by code
  steps:
  - intent: greet
  - or:
    - slot_was_set:
      - name: bob
      - code: x
  - action: utter_special
""",
}


async def test_a_story_or_of_two_slots_is_followed_for_either_slot(tmp_path: Path) -> None:
    # As Rasa reads the `or`: `name` set, or `code` set; before, only the two together.
    agent = make_agent(train_project(write_files(OR_FILES, tmp_path), tmp_path / "models"))
    for sender, message in (
        ("by-name", '/greet{"name": "bob"}'),
        ("by-code", '/greet{"code": "x"}'),
    ):
        assert (await Conversation(agent, sender).say(message)).texts == ["special"], sender
