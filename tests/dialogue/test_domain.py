"""What the domain's declarations change in a conversation, as Rasa 3 documents them."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.dialogue.domain import Domain
from server.dialogue.processor import DialogueModel
from server.training.domain_yaml import read_domain
from server.training.project import load_project
from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_files
from tests.shared_data import BOTS, TESTDATA

ENTITY_BOT = {
    "config.yml": "language: en\npolicies:\n  - name: MemoizationPolicy\n",
    "domain.yml": """
version: "3.1"
intents: [inform, greet]
entities:
  - name:
      influence_conversation: false
  - city
responses:
  utter_noted: [{text: "Noted."}]
""",
    "data/stories.yml": """
version: "3.1"
stories:
- story: inform
  steps: [{intent: inform}, {action: utter_noted}]
""",
}


@pytest.fixture(scope="module")
def entity_bot(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    return train_files(ENTITY_BOT, tmp_path_factory.mktemp("entity-bot"))


async def test_an_entity_that_does_not_influence_the_conversation_is_not_seen_by_policies(
    entity_bot: DialogueModel,
) -> None:
    # Before: `influence_conversation: false` on an entity was ignored, so a message with a
    # name no longer matched the story and the bot said nothing.
    conversation = Conversation(make_agent(entity_bot), "u1")
    assert (await conversation.say('/inform{"name": "Ann"}')).texts == ["Noted."]
    # An entity that influences the conversation still does (the story has none).
    assert (await conversation.say('/inform{"city": "Paris"}')).texts == []


def test_an_intents_own_entity_lists_decide_over_the_entitys_setting() -> None:
    entities = [{"name": {"influence_conversation": False}}, "city", "day"]
    domain = Domain.from_dict(
        {
            "intents": [
                "greet",
                {"inform": {"use_entities": ["name", "city"]}},
                {"book": {"ignore_entities": ["day"]}},
            ],
            "entities": entities,
        }
    )
    assert domain.wanted_entities("greet") == ["city", "day"]
    # As in Rasa: a listed entity is still ignored unless the intent says what it ignores.
    assert domain.wanted_entities("inform") == ["city"]
    assert domain.wanted_entities("book") == ["city"]


def test_rasas_entity_settings_per_intent_give_the_entities_rasa_features() -> None:
    # Rasa's default_unfeaturized_entities.yml and the entities its featurizer keeps.
    domain = read_domain(TESTDATA / "test_domains/default_unfeaturized_entities.yml", warnings=[])
    everything_used = ["name", "other", "unrelated_recognized_entity", "used_entity"]
    assert {intent: sorted(domain.wanted_entities(intent)) for intent in domain.user_intents} == {
        "greet": ["name", "used_entity"],
        "default": ["name", "other", "used_entity"],
        "goodbye": [],  # `use_entities: null`; before: every entity
        "thank": [],
        "ask": everything_used,
        "why": [],
        "pure_intent": everything_used,
    }


DATA_RESPONSES_BOT = {
    "config.yml": "policies:\n  - name: RulePolicy\n",
    "domain.yml": 'version: "3.1"\nintents: [greet, bye]\nresponses:\n  utter_bye: [{text: Bye}]\n',
    "data/responses.yml": 'version: "3.1"\nresponses:\n  utter_hi: [{text: "Hi there"}]\n'
    "  utter_bye: [{text: See you}]\n",
    "data/rules.yml": 'version: "3.1"\nrules:\n- rule: hi\n  steps: [{intent: greet}, '
    "{action: utter_hi}]\n- rule: bye\n  steps: [{intent: bye}, {action: utter_bye}]\n",
}


async def test_responses_in_a_data_file_are_the_domains(tmp_path: Path) -> None:
    # Before: data/responses.yml was read for retrieval responses only; the bot ran its
    # fallback where Rasa says "Hi there".
    conversation = Conversation(make_agent(train_files(DATA_RESPONSES_BOT, tmp_path)), "u1")
    assert (await conversation.say("/greet")).texts == ["Hi there"]
    # As in Rasa, the data file's response wins over the domain's (with a warning).
    assert (await conversation.say("/bye")).texts == ["See you"]


@pytest.mark.parametrize(
    ("value", "seen_as"),
    [(True, "true"), ("false", "false"), ("False ", "false"), ("1", "true"), (0, "false")]
    + [(2, "false"), ("yes", None), ([True], None), (None, None)]
    # Text is a number to Rasa only when all digits: "1.0", " 1", "-1" and "nan" (which read
    # as true, true, false and false) are no value, as "yes" is.
    + [("1.0", None), (" 1", None), ("-1", None), ("nan", None), ("inf", None), ("0", "false")],
)
def test_a_bool_slot_set_by_an_action_is_seen_by_policies_as_rasa_reads_it(
    value: object, seen_as: str | None
) -> None:
    # Before: any non-empty value was true, so an action's SlotSet("confirmed", "false")
    # made policies predict as if the user had confirmed.
    slot = Domain.from_dict({"slots": {"confirmed": {"type": "bool", "mappings": []}}})
    assert slot.slots_by_name["confirmed"].feature(value) == seen_as


def test_the_domain_dump_leaves_out_slot_defaults_as_rasa_does() -> None:
    # GET /domain and the domain an action server gets: before, every slot carried
    # `initial_value: null` and `influence_conversation: true`, and categorical values were
    # as written (Rasa: lower-case text, without null).
    domain = Domain.from_dict(
        {
            "slots": {
                "tier": {"type": "categorical", "values": ["Gold", None, 2], "mappings": []},
                "name": {"type": "text", "initial_value": "you", "mappings": []},
                "note": {"type": "any", "mappings": [{"type": "custom"}]},
            }
        }
    )
    assert domain.as_dict()["slots"] == {
        "tier": {"type": "categorical", "mappings": [], "values": ["gold", "2"]},
        "name": {"type": "text", "initial_value": "you", "mappings": []},
        "note": {"type": "any", "influence_conversation": False, "mappings": [{"type": "custom"}]},
    }


def test_the_domain_dump_marks_retrieval_intents_as_rasa_does() -> None:
    # Before: GET /domain (and an action server's domain) listed `chitchat` as a plain
    # intent; Rasa's importer marks a retrieval intent `is_retrieval_intent: true`, keeping
    # the properties the domain gives it.
    bot = BOTS / "responseselectorbot"
    project = load_project(bot / "config.yml", bot / "domain.yml", [bot / "data"])
    intents = project.domain.as_dict()["intents"]
    assert {"chitchat": {"is_retrieval_intent": True}} in intents
    assert "greet" in intents
