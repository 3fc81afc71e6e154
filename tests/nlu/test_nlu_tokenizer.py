"""The WhitespaceTokenizer: punctuation trimmed from words (the default) or dropped by Rasa
3's rules (`punctuation: rasa`), with exact character spans either way."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.errors import InvalidConfig
from server.nlu.pipeline import NLUPipeline
from server.nlu.tokenizer import tokenize
from server.training.nlu_yaml import read_nlu_yaml


def spans(text: str, punctuation: str = "rasa") -> list[tuple[str, int, int]]:
    return [(t.text, t.start, t.end) for t in tokenize(text, punctuation)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An apostrophe inside a word splits it (it used to be kept: "I'm", "l'été").
        ("I'm ok", [("I", 0, 1), ("m", 2, 3), ("ok", 4, 6)]),
        ("l'été", [("l", 0, 1), ("été", 2, 5)]),
        # Punctuation at a word's end goes, "%" included (it used to stay: "10%").
        ("10% off", [("10", 0, 2), ("off", 4, 7)]),
        # A leading "-" or "(" before a digit stays (it used to go: "5", "555").
        ("-5 degrees", [("-5", 0, 2), ("degrees", 3, 10)]),
        ("(555) 123", [("(555", 0, 4), ("123", 6, 9)]),
        # Emoji between letters separate words (it used to be one token "hi👍there").
        ("hi👍there", [("hi", 0, 2), ("there", 3, 8)]),
    ],
)
def test_words_are_split_as_rasa_splits_them(text: str, expected: list) -> None:
    """`punctuation: rasa` (before, there was no such option)."""
    assert spans(text) == expected


@pytest.mark.parametrize("punctuation", ["trim", "rasa"])
def test_combining_marks_are_part_of_a_word(punctuation: str) -> None:
    """Before, a word's final vowel sign was trimmed as punctuation ("हिन्द", "म")."""
    assert spans("हिन्दी में", punctuation) == [("हिन्दी", 0, 6), ("में", 7, 10)]


def test_digits_urls_and_tags_keep_their_inner_punctuation() -> None:
    assert spans("pay $1'000.50 to a.b@c.com, see http://x.io/?q=1 #tag @me!") == [
        ("pay", 0, 3),
        ("$1'000.50", 4, 13),
        ("to", 14, 16),
        ("a.b@c.com", 17, 26),
        ("see", 28, 31),
        ("http://x.io/?q=1", 32, 48),
        ("#tag", 49, 53),
        ("@me", 54, 57),
    ]


@pytest.mark.parametrize("punctuation", ["trim", "rasa"])
@pytest.mark.parametrize("run", ["'", "!"])
def test_a_long_run_of_punctuation_takes_linear_time(run: str, punctuation: str) -> None:
    """Before, "a" + 20,000 apostrophes + "a" took 4 s of CPU holding the GIL (the trimming
    regex was quadratic: with 99,998 apostrophes, a message within the 100,000-character
    limit, 290 s); Rasa's own regex is as slow on a run of "!" before a digit."""
    text = "a" + run * 20_000 + ("a" if run == "'" else "1")
    started = time.thread_time()
    tokens = tokenize(text, punctuation)
    assert time.thread_time() - started < 1.0
    split = run == "'" and punctuation == "rasa"
    assert [t.text for t in tokens] == (["a", "a"] if split else [text])


ENTITY_DATA = """
nlu:
- intent: set_volume
  examples: |
    - set the volume to [10](level)%
    - volume [25](level)% please
    - turn it up to [80](level)%
    - make it [40](level)%
    - [60](level)% volume
    - volume at [15](level)%
- intent: weather
  examples: |
    - what's [Berlin](city)'s weather
    - how is [Paris](city)'s weather today
    - [Rome](city)'s weather please
    - tell me [Oslo](city)'s forecast
    - is [Lima](city)'s weather nice
    - [Kyiv](city)'s weather
"""


def test_an_entity_next_to_punctuation_is_the_annotated_words_only() -> None:
    """With `punctuation: rasa` (as with the default before, when the option did not
    exist), the CRF tagged whole tokens "30%" and "Madrid's": the entity values were "30%"
    and "Madrid's", not the "30" and "Madrid" annotated in training."""
    pipeline = NLUPipeline.train(
        read_nlu_yaml(ENTITY_DATA),
        [
            {"name": "WhitespaceTokenizer", "punctuation": "rasa"},
            {"name": "CountVectorsFeaturizer"},
            {"name": "DIETClassifier"},
        ],
    )
    for text, value in [("set the volume to 30%", "30"), ("what's Madrid's weather", "Madrid")]:
        entities = pipeline.parse(text)["entities"]
        assert [(e["value"], text[e["start"] : e["end"]]) for e in entities] == [(value, value)]


def test_a_loaded_model_splits_words_as_it_was_trained_to(tmp_path: Path) -> None:
    """The server parses with the persisted model: `punctuation: rasa` must survive it."""
    data = read_nlu_yaml(
        "nlu:\n- intent: greet\n  examples: |\n    - hello\n    - I'm here\n"
        "- intent: bye\n  examples: |\n    - goodbye\n    - see you\n"
    )
    config = [{"name": "WhitespaceTokenizer", "punctuation": "rasa"}, {"name": "DIETClassifier"}]
    NLUPipeline.train(data, config).persist(tmp_path)
    assert NLUPipeline.load(tmp_path).parse("I'm ok")["text_tokens"] == [[0, 1], [2, 3], [4, 6]]


def test_case_insensitive_tokens_give_the_same_parse_in_any_case() -> None:
    """`case_sensitive: false` lowercases the tokens; before, it was ignored, and with a
    case-keeping featurizer "HELLO" was a word the model had never seen."""
    data = read_nlu_yaml(
        "nlu:\n- intent: greet\n  examples: |\n    - hello\n    - hi there\n"
        "- intent: bye\n  examples: |\n    - goodbye\n    - see you\n"
    )
    pipeline = NLUPipeline.train(
        data,
        [
            {"name": "WhitespaceTokenizer", "case_sensitive": False},
            {"name": "CountVectorsFeaturizer", "lowercase": False},
            {"name": "DIETClassifier"},
        ],
    )
    upper, lower = pipeline.parse("HELLO"), pipeline.parse("hello")
    assert upper["intent"] == lower["intent"] and upper["intent"]["name"] == "greet"
    assert upper["text_tokens"] == [[0, 5]]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ({"case_sensitive": "maybe"}, "'case_sensitive' must be true or false"),
        ({"punctuation": "strip"}, "'punctuation' must be 'trim' or 'rasa', not 'strip'"),
        ({"intent_tokenization_flag": "x"}, "'intent_tokenization_flag' must be true or false"),
        ({"intent_split_symbol": 5}, "'intent_split_symbol' must be a non-empty string"),
    ],
)
def test_a_bad_tokenizer_option_names_the_tokenizer_and_key(option: dict, expected: str) -> None:
    """Before, these values were accepted and had no effect."""
    data = read_nlu_yaml(
        "nlu:\n- intent: a\n  examples: |\n    - x\n- intent: b\n  examples: |\n    - y\n"
    )
    with pytest.raises(InvalidConfig, match=f"^WhitespaceTokenizer: {expected}"):
        NLUPipeline.train(data, [{"name": "WhitespaceTokenizer", **option}])
