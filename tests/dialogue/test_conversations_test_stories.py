"""The test stories shipped with the bots pass through `botserver test`'s core evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from server.dialogue.evaluation import StoryResult, evaluate_stories
from server.dialogue.processor import DialogueModel
from server.training.evaluate import test_core as evaluate_core
from server.training.project import data_files, load_test_stories
from tests.dialogue.conversation_fixtures import BOTS, BotModels, train_files


@pytest.mark.parametrize(("bot", "total"), [("initial-project-3.6.21", 7), ("formbot", 3)])
def test_shipped_test_stories_all_pass(
    bot: str, total: int, bot_models: BotModels, tmp_path: Path
) -> None:
    # formbot's stories are e2e (user text): its NLU asks the fake Duckling for numbers. As in
    # Rasa's evaluation, no action runs: where a story has the form step aside (chitchat), the
    # form counts as rejected, which is what its validation would do with nothing to extract.
    report = evaluate_core(bot_models[bot], data_files([BOTS / bot / "tests"]), tmp_path)
    assert report["conversation_accuracy"] == {
        "accuracy": 1.0,
        "correct": total,
        "with_warnings": 0,
        "total": total,
    }
    written = json.loads((tmp_path / "story_report.json").read_text())
    assert written["conversation_accuracy"]["correct"] == total
    assert "None of the test stories failed" in (tmp_path / "failed_test_stories.yml").read_text()


def test_failed_stories_read_back_as_yaml_whatever_their_names(
    bot_models: BotModels, tmp_path: Path
) -> None:
    """Before, a story named "sad: path # 2" (quoted in its test file) was written unquoted,
    and failed_test_stories.yml was not valid YAML."""
    stories = tmp_path / "stories.yml"
    stories.write_text(
        'version: "3.1"\nstories:\n- story: "sad: path # 2"\n  steps:\n'
        "  - intent: greet\n  - action: utter_goodbye\n",
        encoding="utf-8",
    )
    report = evaluate_core(bot_models["initial-project-3.6.21"], [stories], tmp_path / "out")
    assert report["conversation_accuracy"]["correct"] == 0
    written = yaml.safe_load((tmp_path / "out" / "failed_test_stories.yml").read_text())
    assert written["stories"][0]["story"] == "sad: path # 2"


NONE_INTENT_BOT = {
    "config.yml": "version: '3.1'\nlanguage: en\npipeline:\n- name: KeywordIntentClassifier\n"
    "policies:\n- name: RulePolicy\n",
    "domain.yml": "version: '3.1'\nintents: [greet, None]\nresponses:\n"
    "  utter_greet: [{text: Hey!}]\n",
    "data/nlu.yml": "version: '3.1'\nnlu:\n- intent: greet\n  examples: |\n    - hello\n"
    "- intent: None\n  examples: |\n    - whatever\n",
    "data/rules.yml": "version: '3.1'\nrules:\n"
    "- rule: greet\n  steps: [{intent: greet}, {action: utter_greet}]\n",
}


def test_an_e2e_user_step_without_intent_is_not_scored_as_intent_none(tmp_path: Path) -> None:
    """A text the NLU gives no intent is predicted "", as `test nlu` labels it. Before, "None",
    and a step of the intent None (LUIS exports have one) counted right in story_report.json
    though the story failed on it."""
    model = train_files(NONE_INTENT_BOT, tmp_path / "bot")
    stories = tmp_path / "stories.yml"
    stories.write_text(
        'version: "3.1"\nstories:\n- story: no keyword\n  steps:\n'
        "  - user: zzz\n    intent: None\n",
        encoding="utf-8",
    )
    report = evaluate_core(model, [stories], tmp_path / "out", e2e=True)
    assert report["conversation_accuracy"]["correct"] == 0
    written = json.loads((tmp_path / "out" / "story_report.json").read_text())
    assert written["None"]["recall"] == 0.0
    assert set(written["None"]) == {"precision", "recall", "f1-score", "support"}
    assert "" not in written  # as Rasa's: a row for each label of the stories only


RETRIEVAL_TEST_STORIES = """version: "3.1"
stories:
- story: weather expected
  steps:
  - user: What is your name?
    intent: chitchat/ask_weather
  - action: utter_chitchat
- story: name expected
  steps:
  - user: What is your name?
    intent: chitchat/ask_name
  - action: utter_chitchat/ask_name
- story: weather answer expected
  steps:
  - user: What is your name?
    intent: chitchat
  - action: utter_chitchat/ask_weather
- story: any answer
  steps:
  - user: What is your name?
    intent: chitchat
  - action: utter_chitchat
"""


def test_an_e2e_story_naming_a_response_key_holds_only_for_that_response(
    bot_models: BotModels, tmp_path: Path
) -> None:
    """As Rasa's end-to-end test: `intent: chitchat/ask_name` and `action:
    utter_chitchat/ask_name` hold when the response selector chose ask_name (not without
    --e2e, as in Rasa: nothing chose a response then). Before, the intent was compared
    without its key (a story expecting the weather answer passed) and the action with none
    (`utter_chitchat` never matched `utter_chitchat/ask_name`)."""
    stories = tmp_path / "test_stories.yml"
    stories.write_text(RETRIEVAL_TEST_STORIES, encoding="utf-8")
    model = bot_models["responseselectorbot"]
    results = evaluate_stories(load_test_stories([stories], model.domain), model, e2e=True)
    assert {r.story.name: r.correct for r in results} == {
        "weather expected": False,
        "name expected": True,
        "weather answer expected": False,
        "any answer": True,
    }
    report = evaluate_core(model, [stories], tmp_path / "out", e2e=True)
    assert report["chitchat/ask_weather"]["recall"] == 0.0
    assert report["chitchat/ask_name"]["recall"] == 1.0
    assert report["utter_chitchat/ask_name"]["recall"] == 1.0
    failed = (tmp_path / "out" / "failed_test_stories.yml").read_text(encoding="utf-8")
    assert "intent: chitchat/ask_weather  # predicted: chitchat/ask_name: What is" in failed
    assert "action: utter_chitchat/ask_weather  # predicted: utter_chitchat/ask_name" in failed

    # Without --e2e no text is read, so no response was chosen: only `utter_chitchat` holds.
    results = evaluate_stories(load_test_stories([stories], model.domain), model)
    assert [r.story.name for r in results if r.correct] == ["weather expected", "any answer"]


def test_a_misread_message_does_not_choose_the_next_retrieval_response(
    bot_models: BotModels, tmp_path: Path
) -> None:
    """As Rasa's end-to-end test: when the NLU misreads a step's text (a greeting where the
    story says chitchat/ask_weather), the response selector's choice on it is not kept, so the
    next `action: utter_chitchat/ask_weather` is predicted as `utter_chitchat`. Before, it
    held (or showed another key) on whatever the selector chose for the greeting."""
    stories = tmp_path / "test_stories.yml"
    stories.write_text(
        """version: "3.1"
stories:
- story: greeting read as chitchat
  steps:
  - user: hello there
    intent: chitchat/ask_weather
  - action: utter_chitchat/ask_weather
""",
        encoding="utf-8",
    )
    model = bot_models["responseselectorbot"]
    [result] = evaluate_stories(load_test_stories([stories], model.domain), model, e2e=True)
    assert result.gold[:2] == ["chitchat/ask_weather", "utter_chitchat/ask_weather"]
    assert result.predicted[:2] == ["greet", "utter_chitchat"]
    assert not result.correct


def _one_story_tested(
    model: DialogueModel, steps: str, folder: Path, e2e: bool
) -> tuple[Path, StoryResult]:
    """The test story of these `steps` (written to a file in `folder`) and how it went."""
    stories = folder / "stories.yml"
    stories.write_text(f'version: "3.1"\nstories:\n- story: test\n  steps:\n{steps}')
    [result] = evaluate_stories(load_test_stories([stories], model.domain), model, e2e=e2e)
    return stories, result


CITY_BOT = {
    "config.yml": "version: '3.1'\nlanguage: en\npipeline:\n- name: KeywordIntentClassifier\n"
    "policies:\n- name: MemoizationPolicy\n",
    "domain.yml": "version: '3.1'\nintents: [inform]\nentities: [city]\nresponses:\n"
    "  utter_city: [{text: Nice city!}]\n  utter_ask_city: [{text: Which city?}]\n",
    "data/nlu.yml": "version: '3.1'\nnlu:\n- intent: inform\n  examples: |\n"
    "    - I live in [Berlin](city)\n    - I live somewhere\n",
    "data/stories.yml": "version: '3.1'\nstories:\n"
    "- story: city said\n  steps:\n"
    "  - intent: inform\n    entities: [city: Berlin]\n  - action: utter_city\n"
    "- story: no city\n  steps:\n  - intent: inform\n  - action: utter_ask_city\n",
}


def test_an_e2e_story_goes_on_with_its_own_entities_after_a_misread_step(tmp_path: Path) -> None:
    """As Rasa's end-to-end test: a user step whose entity the NLU misses fails, and the
    story goes on with the entities it gives, so the next action is judged on the story's
    conversation. Before, it went on with the NLU's (no city), and utter_ask_city was
    predicted where the story says utter_city: one misread message failed two steps."""
    model = train_files(CITY_BOT, tmp_path / "bot")
    stories, result = _one_story_tested(
        model,
        "  - user: I live in [Berlin](city)\n    intent: inform\n  - action: utter_city\n",
        tmp_path,
        e2e=True,
    )
    assert result.actions[0][:2] == ("utter_city", "utter_city")
    assert [index for index, _, _ in result.failures] == [0]
    evaluate_core(model, [stories], tmp_path / "out", e2e=True)
    failed = (tmp_path / "out" / "failed_test_stories.yml").read_text(encoding="utf-8")
    assert "intent: inform  # predicted: inform: I live in Berlin" in failed
    assert "action: utter_city\n" in failed


@pytest.mark.parametrize("e2e", [False, True])
def test_a_user_text_without_intent_goes_on_with_the_story_entities(
    tmp_path: Path, e2e: bool
) -> None:
    """A step of user text alone takes the NLU's intent, and the entities its markup gives,
    as a step with an intent does. Before, the NLU's entities (no city): utter_ask_city was
    predicted where the story says utter_city, a second failure for one misread message.
    The failed step is written back as a test story reads it: no `intent: null`, which
    no story reader takes, and the NLU's reading beside the text."""
    model = train_files(CITY_BOT, tmp_path / "bot")
    steps = "  - user: I live in [Berlin](city)\n  - action: utter_city\n"
    stories, result = _one_story_tested(model, steps, tmp_path, e2e)
    assert result.actions[0][:2] == ("utter_city", "utter_city")
    assert [index for index, _, _ in result.failures] == ([0] if e2e else [])
    if e2e:
        evaluate_core(model, [stories], tmp_path / "out", e2e=True)
        failed = tmp_path / "out" / "failed_test_stories.yml"
        text = failed.read_text(encoding="utf-8")
        assert "- user: I live in [Berlin](city)  # predicted: inform: I live in Berlin\n" in text
        assert "intent:" not in text
        [again] = load_test_stories([failed], model.domain)
        assert [type(event).__name__ for event in again.events] == [
            "UserUttered",
            "ActionExecuted",
        ]


NOTE_BOT = {
    "config.yml": "version: '3.1'\nlanguage: en\npipeline:\n- name: KeywordIntentClassifier\n"
    "policies:\n- name: MemoizationPolicy\n",
    "domain.yml": "version: '3.1'\nintents: [greet]\nslots:\n  said:\n    type: text\n"
    "    influence_conversation: true\n    mappings:\n    - type: from_text\n"
    "responses:\n  utter_greet: [{text: Hey!}]\n",
    "data/nlu.yml": "version: '3.1'\nnlu:\n- intent: greet\n  examples: |\n    - hello\n",
    "data/stories.yml": "version: '3.1'\nstories:\n"
    "- story: greet\n  steps:\n  - intent: greet\n  - action: utter_greet\n",
}


@pytest.mark.parametrize("e2e", [False, True])
def test_a_test_story_sets_slots_only_as_it_says(tmp_path: Path, e2e: bool) -> None:
    """As Rasa's test, and as training reads the same story: no slot mapping runs on a test
    story's message but its entities' (from_entity), so the conversation is the one the
    policies learnt. Before, the from_text mapping filled `said` with "hello", a state no
    story had, and utter_greet was not predicted."""
    model = train_files(NOTE_BOT, tmp_path / "bot")
    _, result = _one_story_tested(
        model, "  - user: hello\n    intent: greet\n  - action: utter_greet\n", tmp_path, e2e
    )
    assert result.correct, result.actions


CITY_SLOT_BOT = {
    **CITY_BOT,
    "domain.yml": "version: '3.1'\nintents: [inform]\nentities: [city]\nslots:\n"
    "  city:\n    type: text\n    mappings:\n    - type: from_entity\n      entity: city\n"
    "responses:\n  utter_city: [{text: Nice city!}]\n  utter_ask_city: [{text: Which city?}]\n",
}


@pytest.mark.parametrize("e2e", [False, True])
def test_a_failed_story_lists_the_slots_its_entities_set_as_rasa_writes_it(
    tmp_path: Path, e2e: bool
) -> None:
    """As Rasa's failed_test_stories.yml: a user step whose entities fill a slot
    (from_entity) is followed by a `slot_was_set` step for it, as the conversation that was
    tested had it. Before, the file left the slot out, so it showed a conversation in which
    the slot was never set."""
    model = train_files(CITY_SLOT_BOT, tmp_path / "bot")
    steps = "  - user: I live in [Berlin](city)\n    intent: inform\n  - action: utter_ask_city\n"
    stories, _ = _one_story_tested(model, steps, tmp_path, e2e)
    evaluate_core(model, [stories], tmp_path / "out", e2e=e2e)
    failed = tmp_path / "out" / "failed_test_stories.yml"
    text = failed.read_text(encoding="utf-8")
    assert (
        "  - slot_was_set:\n    - city: Berlin\n"
        "  - action: utter_ask_city  # predicted: utter_city\n"
    ) in text, text
    written = yaml.safe_load(text)["stories"][0]["steps"]
    assert written[0]["intent"] == "inform"
    assert written[1] == {"slot_was_set": [{"city": "Berlin"}]}
    [again] = load_test_stories([failed], model.domain)
    assert [type(event).__name__ for event in again.events] == [
        "UserUttered",
        "SlotSet",
        "ActionExecuted",
    ]


ROLES_BOT = {
    **CITY_BOT,
    "domain.yml": "version: '3.1'\nintents: [inform]\n"
    "entities:\n- city:\n    roles: [to]\n- tag\n"
    "slots:\n"
    "  dest:\n    type: text\n    mappings:\n    - type: from_entity\n      entity: city\n"
    "      role: to\n"
    "  tags:\n    type: list\n    mappings:\n    - type: from_entity\n      entity: tag\n"
    "responses:\n  utter_city: [{text: Nice city!}]\n  utter_ask_city: [{text: Which city?}]\n",
}


@pytest.mark.parametrize("e2e", [False, True])
def test_a_failed_story_file_tests_again_as_the_story_did(tmp_path: Path, e2e: bool) -> None:
    """failed_test_stories.yml is a test story file: tested again it fails as the story did,
    with the slots its entities fill (a role's, a list slot's every value) written once more
    after the step, as Rasa's file has them. Before, the list read back from the file
    (`tags: [x, y]`) could not be written: `botserver test` stopped with a traceback."""
    model = train_files(ROLES_BOT, tmp_path / "bot")
    steps = (
        '  - user: \'to [Rome]{"entity": "city", "role": "to"} with [x](tag) and [y](tag)\'\n'
        "    intent: inform\n  - action: utter_ask_city\n"
    )
    stories, _ = _one_story_tested(model, steps, tmp_path, e2e)
    first = evaluate_core(model, [stories], tmp_path / "first", e2e=e2e)
    failed = tmp_path / "first" / "failed_test_stories.yml"
    again = evaluate_core(model, [failed], tmp_path / "again", e2e=e2e)

    assert first["conversation_accuracy"]["correct"] == 0
    assert again["conversation_accuracy"] == first["conversation_accuracy"]
    assert json.loads((tmp_path / "again" / "story_report.json").read_text()) == json.loads(
        (tmp_path / "first" / "story_report.json").read_text()
    )
    slots = [
        step["slot_was_set"]
        for step in yaml.safe_load(failed.read_text(encoding="utf-8"))["stories"][0]["steps"]
        if "slot_was_set" in step
    ]
    assert slots == [[{"dest": "Rome"}], [{"tags": ["x", "y"]}]]
    rewritten = yaml.safe_load((tmp_path / "again" / "failed_test_stories.yml").read_text())
    assert [step for step in rewritten["stories"][0]["steps"] if "slot_was_set" in step] == [
        {"slot_was_set": slot} for slot in slots + slots
    ]
