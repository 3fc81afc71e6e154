"""Training-data regexes that can backtrack exponentially are searched with a time limit: a
crafted message cannot hold a parse thread, and the regex still matches what it should."""

from __future__ import annotations

import logging
import time

import pytest

from server.nlu.patterns import Pattern, compile_patterns
from server.nlu.pipeline import NLUPipeline
from server.nlu.training_data import EntityAnnotation, Example, NLUTrainingData

PIPELINE = [
    {"name": "WhitespaceTokenizer"},
    {"name": "RegexFeaturizer"},
    {"name": "RegexEntityExtractor"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "LogisticRegressionClassifier"},
]


def _pipeline() -> NLUPipeline:
    data = NLUTrainingData(
        examples=[
            Example("hello", "greet"),
            Example("bye", "bye"),
            Example("my code is aaa", "inform", [EntityAnnotation(11, 14, "aaa", "code")]),
        ],
        regexes=[("code", "^(a+)+$"), ("code", r"\baa+\b")],
    )
    return NLUPipeline.train(data, PIPELINE)


def test_a_message_crafted_against_a_backtracking_regex_parses_at_once() -> None:
    pipeline = _pipeline()
    started = time.thread_time()  # CPU seconds: the host's other work does not count
    for _ in range(3):
        result = pipeline.parse("a" * 27 + "!")
    # Before: `re` tried every split of the a's, about 12 s for 27 of them, twice as long for
    # each one more (a few hundred characters: longer than the universe has existed).
    assert time.thread_time() - started < 2
    assert result["intent"]["name"]


def test_a_search_over_the_time_limit_counts_as_no_match_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    [(_, bounded)] = compile_patterns(
        [Pattern("code", "^(a|aa)+$", "regex")], case_sensitive=False, use_word_boundaries=True
    )
    with caplog.at_level(logging.WARNING):
        found = [list(bounded.finditer("a" * 60 + "!")) for _ in range(3)]
        matched = [m.group() for m in bounded.finditer("AAAA")]
    assert found == [[], [], []]
    assert matched == ["AAAA"]
    assert [r.message for r in caplog.records] == [
        "The regex 'code' of the training data took longer than 0.05 s on a message and was "
        "skipped; it can backtrack exponentially (a repeated group that repeats or alternates "
        "inside), rewrite it."
    ]


def test_a_backtracking_regex_still_matches_what_it_should() -> None:
    entities = _pipeline().parse("aaaa")["entities"]
    assert [(e["entity"], e["value"]) for e in entities] == [("code", "aaaa")]


def test_a_regex_with_inline_flags_trains_and_matches_as_in_rasa() -> None:
    """Before, `(?i)[a-z]{2}-\\d{3}` (with another regex of the name, or alone) stopped
    training with a traceback ("global flags not at the start of the expression"); Rasa
    compiles each regex alone, where the flag applies. Now it is scoped to its own regex."""
    data = NLUTrainingData(
        examples=[
            Example("hello", "greet"),
            Example("order ab-123", "order", [EntityAnnotation(6, 12, "ab-123", "order_id")]),
        ],
        regexes=[("order_id", r"(?i)[a-z]{2}-\d{3}"), ("order_id", r"#\d{6}")],
    )
    pipeline = NLUPipeline.train(data, [*PIPELINE[:2], {**PIPELINE[2], "case_sensitive": True}])
    found = [
        (e["value"], e["extractor"])
        for e in pipeline.parse("is XY-555 or #123456 here")["entities"]
    ]
    assert found == [("XY-555", "RegexEntityExtractor"), ("#123456", "RegexEntityExtractor")]


def test_regexes_with_groups_of_the_same_name_each_match_as_in_rasa() -> None:
    """Before, two regexes of one name that both define `(?P<n>...)` stopped training with
    "redefinition of group name", and a `\\1` in the second referred to the first's group
    (so `xx` was not found). Rasa matches each regex alone; now these too."""
    data = NLUTrainingData(
        examples=[
            Example("hello", "greet"),
            Example("code aa", "inform", [EntityAnnotation(5, 7, "aa", "code")]),
        ],
        regexes=[("code", r"(?P<n>\d)-(?P=n)"), ("code", r"\b(?P<n>[a-z])\1\b")],
    )
    pipeline = NLUPipeline.train(data, PIPELINE[:3])
    found = [e["value"] for e in pipeline.parse("try 7-7 or xx")["entities"]]
    assert found == ["7-7", "xx"]


def test_a_regex_matching_no_characters_gives_no_entity() -> None:
    """`[0-9]*` matches nothing before each letter of `zip 12345`; Rasa gives each such
    match as an entity valued "" (docs/differences-from-rasa.md), we only the number."""
    data = NLUTrainingData(
        examples=[
            Example("hello", "greet"),
            Example("zip 10115", "inform", [EntityAnnotation(4, 9, "10115", "zip")]),
        ],
        regexes=[("zip", "[0-9]*")],
    )
    pipeline = NLUPipeline.train(data, PIPELINE[:3])
    found = [(e["start"], e["end"], e["value"]) for e in pipeline.parse("zip 12345")["entities"]]
    assert found == [(4, 9, "12345")]
