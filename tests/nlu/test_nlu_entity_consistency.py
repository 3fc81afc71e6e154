"""IntentEntityConsistency: an intent whose training examples never annotate an entity type
the message holds loses confidence to one whose examples do."""

from pathlib import Path
from typing import Any

import pytest

from server.errors import InvalidConfig, ModelError
from server.nlu.entity_consistency import IntentEntityConsistency
from server.nlu.message import Message
from server.nlu.pipeline import NLUPipeline
from server.training.nlu_yaml import read_nlu_yaml

# "i want to see" opens only find_book's examples; film titles are only find_movie's.
DATA = """
nlu:
- intent: find_movie
  examples: |
    - showtimes for [the matrix](movie_name)
    - is [alien](movie_name) on tonight
    - book seats for [heat](movie_name) at the cinema
    - find times for [jaws](movie_name)
    - when does [the matrix](movie_name) start
    - show me [alien](movie_name) at the cinema
    - find [jaws](movie_name) showtimes
- intent: find_book
  examples: |
    - i want to see [emma](book_name)
    - i want to see the novel [dune](book_name)
    - i want to see [ulysses](book_name)
    - i want to see [beloved](book_name) please
    - i want to see a copy of [persuasion](book_name)
    - i want to see [dune](book_name)
- intent: thank
  examples: |
    - thanks a lot
    - thank you kindly
"""

CHECKED: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CRFEntityExtractor"},
    {"name": "LogisticRegressionClassifier"},
    {"name": "IntentEntityConsistency", "penalty": 10},
]
PIPELINE = CHECKED[:-1]


def trained() -> tuple[NLUPipeline, NLUPipeline]:
    """The pipeline with the check, and the same trained components without it."""
    checked = NLUPipeline.train(read_nlu_yaml(DATA), CHECKED)
    plain = NLUPipeline(checked._components[:-1], "en", [], checked.entities)
    return plain, checked


def test_a_film_title_is_not_a_book_search_even_in_a_book_sentence():
    without, pipeline = trained()
    plain = without.parse("i want to see the matrix")
    assert [e["entity"] for e in plain["entities"]] == ["movie_name"]
    assert plain["intent"]["name"] == "find_book"  # the words say book, the title film

    checked = pipeline.parse("i want to see the matrix")
    assert checked["entities"] == plain["entities"]
    assert checked["intent"]["name"] == "find_movie"
    ranking = checked["intent_ranking"]
    assert ranking[0] == checked["intent"]
    assert [r["confidence"] for r in ranking] == sorted(
        (r["confidence"] for r in ranking), reverse=True
    )
    assert sum(r["confidence"] for r in ranking) == pytest.approx(
        sum(r["confidence"] for r in plain["intent_ranking"])
    )


def test_no_entity_or_an_untrained_type_leaves_the_ranking_alone():
    plain, checked = trained()
    for text in ("thanks a lot", "thank you kindly"):
        assert checked.parse(text) == plain.parse(text)
    consistency = next(c for k, c in checked._components if k == "IntentEntityConsistency")
    message = Message("i want to see it")
    message.intent_ranking = [
        {"name": "find_book", "confidence": 0.7},
        {"name": "find_movie", "confidence": 0.3},
    ]
    message.intent = dict(message.intent_ranking[0])
    message.entities = [{"entity": "time", "start": 0, "end": 1, "value": "x"}]  # e.g. Duckling
    consistency.process(message)
    assert message.intent == {"name": "find_book", "confidence": 0.7}


def test_its_state_survives_persistence(tmp_path: Path):
    pipeline = NLUPipeline.train(read_nlu_yaml(DATA), CHECKED)
    pipeline.persist(tmp_path)
    reloaded = NLUPipeline.load(tmp_path)
    for text in ("i want to see the matrix", "find emma", "thanks a lot"):
        assert reloaded.parse(text) == pipeline.parse(text)


def test_penalty_zero_is_off_and_a_negative_one_is_refused():
    data = read_nlu_yaml(DATA)
    off = NLUPipeline.train(data, [*PIPELINE, {"name": "IntentEntityConsistency", "penalty": 0}])
    assert off.parse("i want to see the matrix")["intent"]["name"] == "find_book"
    with pytest.raises(InvalidConfig, match="penalty"):
        NLUPipeline.train(data, [*PIPELINE, {"name": "IntentEntityConsistency", "penalty": -1}])


def test_a_malformed_state_fails_loading():
    with pytest.raises(ModelError, match="malformed"):
        IntentEntityConsistency.from_state({}, {"types": {"a": "b"}}, Path("."), "c0_", "x")
