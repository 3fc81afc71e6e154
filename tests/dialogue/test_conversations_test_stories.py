"""The test stories shipped with the bots pass through `botserver test`'s core evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from server.training.evaluate import test_core as evaluate_core
from server.training.project import data_files
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
