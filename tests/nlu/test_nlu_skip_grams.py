"""The SkipGramFeaturizer: pairs of words a few words apart for the intent classifier."""

import json
from pathlib import Path
from typing import Any

import pytest

from server.errors import InvalidConfig
from server.nlu.message import Message
from server.nlu.pipeline import NLUPipeline
from server.nlu.skip_grams import SkipGramFeaturizer, skip_grams
from server.nlu.tokenizer import tokenize
from server.training.nlu_yaml import read_nlu_yaml


def test_pairs_skip_one_to_three_words_by_default():
    words = ["put", "a", "b", "c", "on"]
    assert skip_grams(words, 2, 4) == [
        "put~b",
        "put~c",
        "put~on",
        "a~c",
        "a~on",
        "b~on",
    ]
    assert skip_grams(["hi"], 2, 4) == []


# Both intents use "put" and "on" around a title, in opposite orders ("put <title> on" and a
# contrived "on <title> put"): with a title never seen in training, the words and adjacent
# pairs of either intent are no help, and the larger intent wins.
TITLES = ["alpha", "beta", "gamma", "delta", "kappa", "sigma", "omega", "theta"]
DATA = (
    "nlu:\n- intent: add_to_playlist\n  examples: |\n"
    + "".join(f"    - put {t} on\n" for t in TITLES[:4])
    + "- intent: play\n  examples: |\n"
    + "".join(f"    - on {t} put\n" for t in TITLES)
)
WORDS: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "word", "min_ngram": 1, "max_ngram": 2},
    {"name": "LogisticRegressionClassifier"},
]
WITH_SKIP_GRAMS = WORDS[:2] + [{"name": "SkipGramFeaturizer"}] + WORDS[2:]


def test_the_words_around_an_unseen_title_decide_the_intent(tmp_path: Path):
    data = read_nlu_yaml(DATA)
    words_only = NLUPipeline.train(data, WORDS)
    assert words_only.parse("put zeta on")["intent"]["name"] == "play"
    pipeline = NLUPipeline.train(data, WITH_SKIP_GRAMS)
    assert pipeline.parse("put zeta on")["intent"]["name"] == "add_to_playlist"
    assert pipeline.parse("on zeta put")["intent"]["name"] == "play"
    pipeline.persist(tmp_path)
    reloaded = NLUPipeline.load(tmp_path)
    for text in ("put zeta on", "on zeta put", "hello"):
        assert reloaded.parse(text) == pipeline.parse(text)
    # Learned state is data: the pairs' vocabulary as JSON (and their IDF as .npy).
    vocabularies = [json.loads(p.read_text()) for p in tmp_path.rglob("*vocabulary.json")]
    assert ["put~on"] in [[w for w in v if w == "put~on"] for v in vocabularies]


def test_weight_scales_the_block():
    data = read_nlu_yaml(DATA)
    plain, heavy = SkipGramFeaturizer({}), SkipGramFeaturizer({"weight": 2})
    for featurizer in (plain, heavy):
        featurizer.train([Message(e.text, tokenize(e.text)) for e in data.examples], data)
    one, two = (
        Message("put zeta on", tokenize("put zeta on")),
        Message("put zeta on", tokenize("put zeta on")),
    )
    plain.process(one)
    heavy.process(two)
    assert one.blocks[-1][0] == two.blocks[-1][0] != []
    assert two.blocks[-1][1] == pytest.approx([2 * v for v in one.blocks[-1][1]])


def test_gaps_out_of_order_are_refused():
    with pytest.raises(InvalidConfig, match="min_gap <= max_gap"):
        SkipGramFeaturizer({"min_gap": 3, "max_gap": 2})
