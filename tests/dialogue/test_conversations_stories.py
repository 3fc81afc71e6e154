"""Stories written as Rasa users write them, held in real conversations with the bot."""

from __future__ import annotations

from pathlib import Path

from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_project

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
