"""`botserver data split nlu`: per-intent splits, written as NLU files that read back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from server.nlu.training_data import Example, NLUTrainingData
from server.training.nlu_split import write_split
from server.training.nlu_yaml import read_nlu_file
from server.training.project import data_files
from tests.shared_data import BOTS

FORMBOT_NLU = BOTS / "formbot" / "data" / "nlu.yml"


def _key(example: Example) -> tuple:
    entities = sorted((e.start, e.end, e.entity, str(e.value), e.role) for e in example.entities)
    return example.text, example.intent, tuple(entities)


def test_a_split_reads_back_as_the_same_examples_with_every_intent_in_both(
    tmp_path: Path,
) -> None:
    data = read_nlu_file(FORMBOT_NLU)
    train_path, test_path = write_split(data, tmp_path, 0.8, seed=1)
    train, test = read_nlu_file(train_path), read_nlu_file(test_path)

    assert Counter(map(_key, train.examples + test.examples)) == Counter(map(_key, data.examples))
    assert sum(len(e.entities) for e in train.examples + test.examples) == 132
    counts = Counter(e.intent for e in data.examples)
    for intent, count in counts.items():
        in_train = sum(e.intent == intent for e in train.examples)
        assert in_train == min(max(round(count * 0.8), 1), max(count - 1, 1))
        assert count - in_train == sum(e.intent == intent for e in test.examples)
    assert train.synonyms == test.synonyms == data.synonyms


def test_the_same_seed_gives_the_same_split(tmp_path: Path) -> None:
    data = NLUTrainingData.merge(read_nlu_file(f) for f in data_files([FORMBOT_NLU]))
    first = write_split(data, tmp_path / "a", 0.5, seed=7)
    second = write_split(data, tmp_path / "b", 0.5, seed=7)
    assert [p.read_text() for p in first] == [p.read_text() for p in second]


def test_synonyms_are_written_as_spelled_and_keep_mapping_after_a_split(tmp_path: Path) -> None:
    """Before, the split wrote `- nyc` for `- NYC`, and `- new york` under `synonym: new
    york` for `- NEW YORK`: read back, that text equals its value and maps nothing."""
    nlu = tmp_path / "nlu.yml"
    nlu.write_text(
        'version: "3.1"\n'
        "nlu:\n"
        "- intent: greet\n  examples: |\n    - hi\n    - hello\n    - hey\n"
        "- synonym: new york\n  examples: |\n    - NEW YORK\n    - NYC\n    - nyc\n"
    )
    data = NLUTrainingData.merge([read_nlu_file(nlu)])
    train_path, _ = write_split(data, tmp_path / "out", 0.8, seed=1)
    written = train_path.read_text()
    assert "- NYC\n" in written and "- NEW YORK\n" in written
    assert "- nyc\n" in written  # a spelling differing only in case is kept too
    assert read_nlu_file(train_path).synonyms == {"new york": "new york", "nyc": "new york"}


def test_example_and_intent_metadata_are_kept_by_a_split(tmp_path: Path) -> None:
    """Before, the split wrote every intent as a block of `- ` lines: metadata was lost."""
    nlu = tmp_path / "nlu.yml"
    nlu.write_text(
        'version: "3.1"\n'
        "nlu:\n"
        "- intent: greet\n  metadata:\n    source: web\n  examples:\n"
        "  - text: hi\n    metadata:\n      sentiment: neutral\n"
        "  - text: hello\n"
    )
    data = read_nlu_file(nlu)
    train_path, test_path = write_split(data, tmp_path / "out", 0.5, seed=1)
    back = read_nlu_file(train_path).examples + read_nlu_file(test_path).examples
    by_text = {e.text: e.metadata for e in back}
    assert by_text == {
        "hi": {"intent": {"source": "web"}, "example": {"sentiment": "neutral"}},
        "hello": {"intent": {"source": "web"}},
    }


def test_responses_go_to_nlg_files_beside_the_split_as_in_rasa(tmp_path: Path) -> None:
    """Rasa's split writes retrieval intents' responses into nlg_training_data.yml and
    nlg_test_data.yml; they were written inside training_data.yml and test_data.yml, so a
    script naming the nlg files found none."""
    data = read_nlu_file(BOTS / "responseselectorbot" / "data" / "nlu.yml")
    assert data.responses
    written = write_split(data, tmp_path, 0.8, seed=1)
    names = [p.name for p in written]
    assert names == [
        "training_data.yml",
        "test_data.yml",
        "nlg_training_data.yml",
        "nlg_test_data.yml",
    ]
    for path in written[:2]:
        assert "responses" not in path.read_text()
    for path in written[2:]:
        assert read_nlu_file(path).responses == data.responses


def test_each_nlg_file_holds_the_responses_of_its_own_examples_as_in_rasa(
    tmp_path: Path,
) -> None:
    """Rasa writes, beside each part, the responses its retrieval examples need: a retrieval
    intent with one example (kept for training) has its response in nlg_training_data.yml
    alone, and a response no example asks for is in neither. Before, both held all."""
    nlu = tmp_path / "nlu.yml"
    nlu.write_text(
        'version: "3.1"\nnlu:\n'
        "- intent: faq/hours\n  examples: |\n    - when do you open\n"
        "- intent: faq/price\n  examples: |\n    - how much\n    - the price\n"
        "    - what does it cost\n    - is it expensive\n"
        "responses:\n"
        "  utter_faq/hours:\n  - text: From nine.\n"
        "  utter_faq/price:\n  - text: Ten euros.\n"
        "  utter_faq/parking:\n  - text: Behind the shop.\n"
    )
    written = write_split(read_nlu_file(nlu), tmp_path / "out", 0.5, seed=3)
    by_name = {path.name: path for path in written}
    training = read_nlu_file(by_name["nlg_training_data.yml"]).responses
    test = read_nlu_file(by_name["nlg_test_data.yml"]).responses
    assert list(training) == ["utter_faq/hours", "utter_faq/price"]
    assert list(test) == ["utter_faq/price"]
