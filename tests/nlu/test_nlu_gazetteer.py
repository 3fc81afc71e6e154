"""The EntityGazetteerFeaturizer: training entity values found again in a message."""

import cProfile
import json
import pstats
from pathlib import Path
from typing import Any

import pytest

from server.errors import ModelError
from server.nlu.gazetteer import MAX_VALUE_WORDS, EntityGazetteerFeaturizer
from server.nlu.message import Message
from server.nlu.pipeline import NLUPipeline
from server.nlu.tokenizer import tokenize
from server.training.nlu_yaml import read_nlu_yaml
from tests.line_budget import lines_run_in

DATA = """nlu:
- intent: screening
  examples: |
    - when is [fear chamber](movie_name) playing
    - is [fear chamber](movie_name) on tonight
    - when is [heat wave](movie_name) playing
- intent: creative_work
  examples: |
    - find the book [fear chamber](object_name)
    - find the book [fear](object_name)
    - find the song [chamber](object_name)
"""


def trained(
    config: dict[str, Any] | None = None,
) -> tuple[EntityGazetteerFeaturizer, list[Message]]:
    data = read_nlu_yaml(DATA)
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    featurizer = EntityGazetteerFeaturizer(config or {})
    featurizer.train(messages, data)
    return featurizer, messages


def block_of(featurizer: EntityGazetteerFeaturizer, text: str) -> dict[str, float]:
    message = Message(text, tokenize(text))
    featurizer.process(message)
    indices, values, width = message.blocks[-1]
    assert width == len(featurizer.types_) == 2
    return {featurizer.types_[i]: round(v, 4) for i, v in zip(indices, values, strict=True)}


def test_a_known_title_gives_its_types_by_their_share_of_its_annotations():
    featurizer, _ = trained()
    # "fear chamber" is a film twice and a book once; the longest match hides "fear" alone.
    found = block_of(featurizer, "i want to see fear chamber")
    assert found == {"movie_name": round(2 / 5**0.5, 4), "object_name": round(1 / 5**0.5, 4)}
    assert block_of(featurizer, "find heat wave") == {"movie_name": 1.0}
    # Whole words only: "heatwave" is not "heat wave".
    assert block_of(featurizer, "find heatwave") == {}


def test_a_training_message_sees_only_the_values_of_the_other_folds():
    featurizer, messages = trained({"folds": 2})
    # "heat wave" (message 2, fold 0) is annotated nowhere else: its own block stays empty,
    # as an unseen film's would at parse time.
    assert messages[2].blocks[-1] == ([], [], 2)
    # "fear chamber" in message 0 is found through messages 1 and 3 (fold 1): a film once,
    # a book once.
    indices, values, _ = messages[0].blocks[-1]
    assert indices == [0, 1] and values[0] == pytest.approx(values[1])


PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "word", "min_ngram": 1, "max_ngram": 2},
    {"name": "EntityGazetteerFeaturizer", "weight": 0.5},
    {"name": "LogisticRegressionClassifier"},
]


def test_the_values_persist_as_json_and_reload_to_the_same_parse(tmp_path: Path):
    pipeline = NLUPipeline.train(read_nlu_yaml(DATA), PIPELINE)
    pipeline.persist(tmp_path)
    reloaded = NLUPipeline.load(tmp_path)
    for text in ("find fear chamber", "when is heat wave playing", "hello"):
        assert reloaded.parse(text) == pipeline.parse(text)
    stored = json.dumps([json.loads(p.read_text()) for p in tmp_path.rglob("*.json")])
    assert '["heat", "wave"]' in stored


@pytest.mark.parametrize(
    "values",
    [None, [["fear"]], [[[], {"movie_name": 1}]], [[["fear"], {"movie_name": "1"}]]],
)
def test_malformed_values_fail_loading_with_the_components_name(values: Any):
    with pytest.raises(ModelError, match="EntityGazetteerFeaturizer: malformed entity values"):
        EntityGazetteerFeaturizer.from_state(
            {}, {"values": values}, Path("."), "", "EntityGazetteerFeaturizer"
        )


def test_idle_without_entities():
    data = read_nlu_yaml("nlu:\n- intent: greet\n  examples: |\n    - hello there\n")
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    featurizer = EntityGazetteerFeaturizer({})
    featurizer.train(messages, data)
    message = Message("hello", tokenize("hello"))
    featurizer.process(message)
    assert not messages[0].blocks and not message.blocks


def test_a_long_message_costs_a_few_lookups_a_word_whatever_the_longest_value():
    # A 300-word annotated value (a pasted paragraph) made every word of a message try 300
    # slices of up to 300 words: 18 s of CPU on the event loop for a 50,000-word message.
    paragraph = " ".join(["a"] * 299 + ["b"])
    data = read_nlu_yaml(
        "nlu:\n- intent: note\n  examples: |\n"
        f"    - note [{paragraph}](memo)\n    - note [a](memo) now\n"
        "- intent: greet\n  examples: |\n    - hello\n"
    )
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    featurizer = EntityGazetteerFeaturizer({})
    featurizer.train(messages, data)
    text = " ".join(["a"] * 2000)
    message = Message(text, tokenize(text))
    profile = cProfile.Profile()
    profile.enable()
    featurizer.process(message)
    profile.disable()
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    assert message.blocks[-1][1] == [featurizer.weight]  # "a", a memo, found 2000 times
    assert calls < 15 * 2000  # 11 a word (573,167 before: 286 a word)


def test_a_value_longer_than_training_keeps_fails_loading():
    # Training leaves out values over MAX_VALUE_WORDS; an archive holding one is not ours.
    values = [[["w"] * (MAX_VALUE_WORDS + 1), {"memo": 1}]]
    with pytest.raises(ModelError, match="EntityGazetteerFeaturizer: .*words"):
        EntityGazetteerFeaturizer.from_state(
            {}, {"values": values}, Path("."), "", "EntityGazetteerFeaturizer"
        )


def test_values_of_a_type_the_classifier_never_saw_fail_loading(tmp_path: Path):
    # One more type is one more column than the classifier's weights have: every parse
    # finding the value was an IndexError (a 500).
    NLUPipeline.train(read_nlu_yaml(DATA), PIPELINE).persist(tmp_path)
    manifest = tmp_path / "pipeline.json"
    pipeline = json.loads(manifest.read_text())
    (gazetteer,) = [c for c in pipeline["components"] if c["key"] == "EntityGazetteerFeaturizer"]
    gazetteer["state"]["values"].append([["zzz"], {"zz_type": 1}])
    manifest.write_text(json.dumps(pipeline))
    with pytest.raises(ModelError, match="features"):
        NLUPipeline.load(tmp_path)


def test_more_folds_than_messages_are_one_message_per_fold():
    # Before, `folds: 1000000000` built a billion folds: minutes, then a MemoryError.
    from server.nlu import gazetteer

    each_alone, messages = trained({"folds": 6})
    data = read_nlu_yaml(DATA)
    again = [Message(e.text, tokenize(e.text)) for e in data.examples]
    huge = EntityGazetteerFeaturizer({"folds": 1_000_000_000})
    lines_run_in(gazetteer.__file__, lambda: huge.train(again, data), 5_000)
    assert [m.blocks for m in again] == [m.blocks for m in messages]
    assert huge.values_ == each_alone.values_
