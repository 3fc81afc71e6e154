"""config.yml's MultiProjectImporter: the sub-projects it imports train with the project."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import InvalidProjectFile
from server.training.project import load_project
from server.training.validation import validate_project
from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_project
from tests.shared_data import TESTDATA

MULTI_DOMAIN = TESTDATA / "test_multi_domain"


def test_imported_projects_join_the_domain_and_data() -> None:
    # Before: `imports` was ignored; validation failed with "intent 'greet' is not in the
    # domain" (GreetBot's and MoodBot's stories and NLU lay in data/, their domains unread).
    root = MULTI_DOMAIN
    report = validate_project(root / "config.yml", root / "domain.yml", [root / "data"])
    assert report.errors == []
    project = load_project(root / "config.yml", root / "domain.yml", [root / "data"])
    assert set(project.domain.user_intents) == {
        "greet", "goodbye", "affirm", "deny", "mood_great", "mood_unhappy"
    }  # fmt: skip
    assert {"utter_greet", "utter_cheer_up", "utter_happy"} <= set(project.domain.responses)
    assert len(project.stories) == 5  # each file once, though data/ holds the imports too
    assert project.warnings == []  # a sub-project repeating `goodbye` as it is: no word


async def test_a_bot_of_imported_projects_answers_with_their_responses(tmp_path: Path) -> None:
    model = train_project(MULTI_DOMAIN, tmp_path)
    conversation = Conversation(make_agent(model), "u")
    assert (await conversation.say("hello")).texts == ["Hey! How are you?"]  # GreetBot's


def test_a_project_without_its_own_data_trains_on_the_imports() -> None:
    root = TESTDATA / "test_multiproject"
    project = load_project(root / "config.yml", root / "domain.yml", [root / "data"])
    assert {"greet", "tell_joke"} <= set(project.domain.user_intents)
    assert project.warnings == [
        f"{root / 'data'}: training data not found; the imported projects' is used"
    ]


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text("pipeline: []\npolicies: []\n" + text)
    (tmp_path / "domain.yml").write_text("version: '3.1'\nintents: [greet]\n")
    (tmp_path / "sub").mkdir()
    return path


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        # Before: trained as if the importer were not there.
        ("importers:\n- name: my.CustomImporter\n", 4, "importer 'my.CustomImporter' is not"),
        ("importers: MultiProjectImporter\n", 3, "'importers' must be a list"),
        # Before: an import that is not there was ignored without a word.
        ("importers:\n- name: MultiProjectImporter\nimports:\n- sub\n- nope\n", 7, "'nope' is"),
    ],
)
def test_an_importer_or_import_botserver_cannot_follow_names_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    config = _config(tmp_path, text)
    with pytest.raises(InvalidProjectFile) as info:
        load_project(config, tmp_path / "domain.yml", [])
    assert (info.value.filename, info.value.line) == (str(config), line), str(info.value)
    assert fragment in str(info.value)


def test_a_project_sent_to_the_server_cannot_import_the_servers_folders(tmp_path: Path) -> None:
    config = _config(tmp_path, "importers:\n- name: MultiProjectImporter\nimports: [sub]\n")
    with pytest.raises(InvalidProjectFile, match="must hold all its files"):
        load_project(config, tmp_path / "domain.yml", [], env=False)
