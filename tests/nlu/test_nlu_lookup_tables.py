"""Lookup tables are matched as sets of their elements: what the alternation of the elements
(longest first, within word boundaries) finds, without compiling or trying 100,000 of them."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from server.nlu.message import Message
from server.nlu.patterns import Pattern, compile_patterns, patterns_from_data
from server.nlu.regex_featurizer import RegexFeaturizer
from server.nlu.tokenizer import tokenize
from server.nlu.training_data import NLUTrainingData

# Characters where ignoring case is more than lower(): `ſ` is `s`, `ς` is `σ`, `ı` is `i`,
# `İ` lowers to two characters, and `+`, `|`, `\` and `(` are escaped in the alternation.
TRICKY = list("abAB _-+.1é|\\(ſsSKkσςΣİiıI\n")


def _words(count: int) -> list[str]:
    """`count` distinct made-up words (one in five a pair of words), no common prefix."""
    syllables = ["ka", "zo", "mi", "ra", "bel", "tor", "an", "quin", "ve", "lu", "dor", "sa"]
    words = []
    for number in range(count):
        spread, parts = number * 7919 % 12**5, []
        while spread:
            spread, digit = divmod(spread, 12)
            parts.append(syllables[digit])
        word = "".join(parts) or "o"
        words.append(f"{word} {word[:2]}n" if number % 5 == 0 else word)
    return words


def _spans(matcher: Any, text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in matcher.finditer(text) if m.end() > m.start()]


@pytest.mark.parametrize("case_sensitive", [True, False])
@pytest.mark.parametrize("word_boundaries", [True, False])
def test_a_lookup_table_finds_what_the_alternation_of_its_elements_finds(
    case_sensitive: bool, word_boundaries: bool
) -> None:
    draw = random.Random(1)

    def text(longest: int) -> str:
        return "".join(draw.choice(TRICKY) for _ in range(draw.randint(1, longest)))

    for _ in range(400):
        elements = [text(4) for _ in range(draw.randint(1, 8))]
        (pattern,) = patterns_from_data(NLUTrainingData(lookups={"x": elements}))
        source = rf"\b{pattern.pattern}\b" if word_boundaries else pattern.pattern
        alternation = re.compile(source, 0 if case_sensitive else re.IGNORECASE)
        ((_, lookup),) = compile_patterns([pattern], case_sensitive, word_boundaries)
        for _ in range(5):
            message = text(15)
            assert _spans(lookup, message) == _spans(alternation, message), (elements, message)


def test_a_lookup_pattern_of_another_shape_is_still_a_regex() -> None:
    """A stored lookup pattern that is no alternation of escaped elements (not one training
    writes) is compiled as it is."""
    pattern = Pattern("x", "(?:ab|c[d])", "lookup")
    ((_, matcher),) = compile_patterns([pattern], True, True)
    assert _spans(matcher, "ab cd c[d]") == [(0, 2, "ab"), (3, 5, "cd")]
    # Escaped elements, but not longest first: the first that matches wins, as before.
    pattern = Pattern("x", r"(?:new|new\ york)", "lookup")
    ((_, matcher),) = compile_patterns([pattern], False, True)
    assert _spans(matcher, "New York") == [(0, 3, "New")]


def test_100000_lookup_elements_train_and_load_without_an_alternation_of_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before, the elements were one regex alternation: Python's `re` parsed and compiled its
    1,000,000 characters at training and at each load (1.6 s of CPU each), and a parse of a
    short message tried every element at every place (3 ms of CPU, p50 12 ms through the
    pipeline, 0.08 ms without the table). Now no regex of them is compiled, and a parse
    looks up a few slices of the message."""
    words = _words(100_000)
    compiled: list[int] = []
    real_compile = re.compile

    def counting_compile(source: Any, flags: int = 0) -> Any:
        compiled.append(len(source))
        return real_compile(source, flags)

    monkeypatch.setattr(re, "compile", counting_compile)
    data = NLUTrainingData(lookups={"place": words})
    featurizer = RegexFeaturizer({})
    featurizer.train([], data)
    loaded = RegexFeaturizer.from_state({}, featurizer.state(tmp_path, ""), tmp_path, "", "R")
    assert sum(compiled) < 10_000, f"{sum(compiled):,} characters of regex compiled"

    ((_, lookup),) = loaded._compiled
    probes: list[str] = []
    holds = lookup._holds

    def counted(key: str) -> bool:
        probes.append(key)
        return holds(key)

    lookup._holds = counted
    text = f"hello there, I live in {words[12345]} now"
    message = Message(text, tokens=tokenize(text))
    loaded.process(message)
    assert message.token_patterns is not None
    assert message.token_patterns[5:-1] == [{"place"}] * len(words[12345].split())
    assert message.token_patterns[:5] == [set()] * 5
    assert len(probes) < 100, f"{len(probes)} slices looked up for a message of 9 words"
    assert words[12345] in probes
