"""Project files of an odd size: a lookup table of a real city list, an example of megabytes.
Each is read in time that grows with its size, or refused naming file and line, never held
for minutes or gigabytes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from server.errors import InvalidProjectFile
from server.nlu.training_data import NLUTrainingData
from server.training.domain_yaml import read_domain
from server.training.nlu_json import read_nlu_json
from server.training.nlu_yaml import read_nlu_file
from server.training.project import load_project
from server.training.stories_yaml import read_story_data
from server.training.yaml_io import read_yaml_file

CITIES = [f"city{i}" for i in range(100_000)]


def _nlu_with_lookup(elements: list[str]) -> str:
    lines = "".join(f"    - {e}\n" for e in elements)
    return f'version: "3.1"\nnlu:\n- lookup: city\n  examples: |\n{lines}'


def test_a_lookup_table_of_100000_cities_is_read_at_once(tmp_path: Path) -> None:
    # Before: each element was looked for among those before it (a list): 40,000 elements
    # took 13 s of CPU, 125,000 more than 200 s, a list of every city in the world hours.
    path = tmp_path / "cities.yml"
    path.write_text(_nlu_with_lookup(CITIES + ["city7"]))
    started = time.thread_time()
    data = read_nlu_file(path)
    assert time.thread_time() - started < 5
    assert data.lookups["city"] == CITIES  # each element once, in the order written


def test_a_json_lookup_table_of_100000_cities_is_read_at_once(tmp_path: Path) -> None:
    path = tmp_path / "cities.json"
    tables = [{"name": "city", "elements": CITIES + ["city7"]}]
    path.write_text(json.dumps({"rasa_nlu_data": {"lookup_tables": tables}}))
    started = time.thread_time()
    data = read_nlu_json(path)
    assert time.thread_time() - started < 5
    assert data.lookups["city"] == CITIES


def test_lookup_tables_split_over_files_merge_at_once(tmp_path: Path) -> None:
    halves = [CITIES[:60_000], CITIES[40_000:]]
    parts = []
    for index, half in enumerate(halves):
        path = tmp_path / f"cities{index}.yml"
        path.write_text(_nlu_with_lookup(half))
        parts.append(read_nlu_file(path))
    started = time.thread_time()
    merged = NLUTrainingData.merge(parts)
    assert time.thread_time() - started < 5
    assert merged.lookups["city"] == CITIES


def _project(tmp_path: Path, nlu: str = "", stories: str = "") -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "domain.yml").write_text(
        'version: "3.1"\nintents:\n- greet\nresponses:\n  utter_hi:\n  - text: hi\n'
    )
    (tmp_path / "config.yml").write_text("recipe: default.v1\nlanguage: en\n")
    (tmp_path / "data" / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n' + nlu
    )
    (tmp_path / "data" / "stories.yml").write_text(
        'version: "3.1"\nstories:\n- story: s\n  steps:\n  - intent: greet\n'
        "  - action: utter_hi\n" + stories
    )
    return tmp_path


def _load(project: Path) -> None:
    load_project(project / "config.yml", project / "domain.yml", [project / "data"])


LONG = "hello" * 24_000  # 120,000 characters: longer than any message the bot reads


def test_a_training_example_longer_than_any_message_names_its_file_and_line(
    tmp_path: Path,
) -> None:
    # Before: it trained, and featurizing held about 0.7 KB per character: a 50 MB example
    # grew `botserver train` past 14 GB in five minutes; a 10 MB body to POST /model/train
    # (the default limit) about 7 GB.
    project = _project(tmp_path, nlu=f"    - hello\n    - {LONG}\n")
    with pytest.raises(InvalidProjectFile) as error:
        _load(project)
    assert error.value.filename == str(project / "data" / "nlu.yml")
    assert error.value.line == 7
    assert "120,000 characters long" in str(error.value)
    assert "100,000" in str(error.value)


def test_a_listed_training_example_too_long_names_its_line(tmp_path: Path) -> None:
    project = _project(tmp_path, nlu=f"- intent: bye\n  examples:\n  - text: '{LONG}'\n")
    with pytest.raises(InvalidProjectFile) as error:
        _load(project)
    assert error.value.line == 8


def test_a_json_training_example_too_long_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nlu.json"
    examples = [{"text": "hi", "intent": "greet"}, {"text": LONG, "intent": "greet"}]
    path.write_text(json.dumps({"rasa_nlu_data": {"common_examples": examples}}))
    with pytest.raises(InvalidProjectFile, match=r"common_examples\[1\].*120,000 char"):
        read_nlu_json(path)


def test_a_story_user_text_too_long_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "stories.yml"
    path.write_text(
        'version: "3.1"\nstories:\n- story: s\n  steps:\n'
        f"  - user: {LONG}\n    intent: greet\n  - action: utter_hi\n"
    )
    with pytest.raises(InvalidProjectFile) as error:
        read_story_data(read_yaml_file(path), str(path))
    assert error.value.line == 5
    assert "120,000 characters long" in str(error.value)


def test_an_example_as_long_as_a_message_may_be_still_loads(tmp_path: Path) -> None:
    text = "hello " * 16_666 + "hi!!"  # 100,000 characters
    assert len(text) == 100_000
    _load(_project(tmp_path, nlu=f"    - {text}\n"))


@pytest.mark.parametrize(
    ("domain", "line"),
    [
        (
            "intents:\n- greet\nslots:\n  a:\n    type: any\n"
            "  null:\n    type: any\n    mappings: []\n",
            7,
        ),
        ("intents:\n- greet\nresponses:\n  utter_a:\n  - text: a\n  ~:\n  - text: hi\n", 7),
        (
            "intents:\n- greet\nforms:\n  a_form:\n    required_slots: []\n"
            "  null:\n    required_slots: []\n",
            7,
        ),
        # `- null:` with properties (a bare `- null` was refused already)
        ("intents:\n- greet\n- bye\n- null:\n    use_entities: []\n", 5),
        ("entities:\n- city\n- bye\n- ~:\n    roles: [a]\n", 5),
        ("actions:\n- action_a\n- bye\n- null:\n    send_domain: true\n", 5),
    ],
)
def test_a_name_that_is_yamls_null_names_its_file_and_line(
    tmp_path: Path, domain: str, line: int
) -> None:
    # Before: trained as a slot, response, form, intent, entity or action named 'None'.
    path = tmp_path / "domain.yml"
    path.write_text(f'version: "3.1"\n{domain}')
    with pytest.raises(InvalidProjectFile, match="YAML's null") as error:
        read_domain(path)
    assert error.value.line == line


def test_entity_markup_does_not_count_toward_an_examples_length(tmp_path: Path) -> None:
    # The limit is that of a user's message, which holds no markup: 99,990 characters of
    # text with 2,000 characters of markup around its entities load, in NLU data as in a
    # story (and as the same example in JSON, whose entities are given beside the text).
    marked = '[Berlin]{"entity": "city"} ' * 80  # 27 characters each, 7 of them text
    text = marked + "x" * (99_990 - 80 * 7)
    assert len(text) > 100_000
    stories = f"- story: long\n  steps:\n  - user: |\n      {text}\n  - action: utter_hi\n"
    _load(_project(tmp_path, nlu=f"    - {text}\n", stories=stories))


def test_an_example_with_megabytes_of_markup_is_refused_before_it_is_parsed(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path, nlu="    - " + "[a](b)" * 200_000 + "\n")
    started = time.thread_time()
    with pytest.raises(InvalidProjectFile, match="1,200,000 characters long") as error:
        _load(project)
    assert time.thread_time() - started < 2
    assert error.value.line == 6
