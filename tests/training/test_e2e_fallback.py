"""`botserver test --e2e` without a tests folder: the test_*.yml stories of data, which
`botserver train` trains on too (as Rasa's importer reads every story file of data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import InvalidConfig
from server.training.evaluate import _test_story_files
from server.training.project import load_project
from tests.dialogue.conversation_fixtures import write_files

STORIES = (
    'version: "3.1"\nstories:\n- story: {name}\n  steps:\n  - intent: greet\n'
    "  - action: utter_greet\n"
)
DOMAIN = 'version: "3.1"\nintents: [greet]\nresponses:\n  utter_greet: [{text: hi}]\n'


def test_the_e2e_fallback_warns_that_its_stories_are_training_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {
        "domain.yml": DOMAIN,
        "data/stories.yml": STORIES.format(name="trained"),
        "data/test_stories.yml": STORIES.format(name="tested"),
    }
    monkeypatch.chdir(write_files(files, tmp_path / "bot"))

    tested = _test_story_files(None, e2e=True)

    assert tested == [Path("data/test_stories.yml")]
    trained = load_project(None, "domain.yml", ["data"]).files
    assert Path("data/test_stories.yml") in trained
    # Before: "... instead, as Rasa does (give test stories with --stories)."
    assert capsys.readouterr().err == (
        "warning: no test stories at 'tests'; testing the test_*.yml stories of 'data' instead, "
        "as Rasa does (`botserver train` trains on them too, as on every story file of 'data': "
        "accuracy on data the model was trained on; give test stories with --stories).\n"
    )


def test_an_nlu_file_named_test_is_no_end_to_end_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As Rasa's: a test file is a `test_*` file of stories. Before, `test --e2e` took
    # data/test_nlu.yml for one: "0/0 correct", exit 0, the warning naming it tested.
    files = {
        "domain.yml": DOMAIN,
        "data/stories.yml": STORIES.format(name="trained"),
        "data/test_nlu.yml": 'version: "3.1"\nnlu:\n- intent: greet\n  examples: "- hi"\n',
    }
    monkeypatch.chdir(write_files(files, tmp_path / "bot"))

    with pytest.raises(InvalidConfig, match="no test_\\*.yml file of stories in 'data'"):
        _test_story_files(None, e2e=True)
