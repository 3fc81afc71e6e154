"""KeywordIntentClassifier as Rasa runs it: a message holding one of an intent's training
examples as whole words gets that intent at confidence 1.0, any other message no intent."""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.api.server import ServerOptions, build_app
from server.errors import ModelError
from server.nlu import keyword_classifier
from server.nlu.evaluation import evaluate, predict
from server.nlu.keyword_classifier import KeywordIntentClassifier
from server.nlu.pipeline import NLUPipeline
from server.nlu.training_data import Example, NLUTrainingData
from server.training.nlu_yaml import read_nlu_yaml
from tests.dialogue.conversation_fixtures import train_archive, write_files
from tests.serving import serving

NLU = """
nlu:
- intent: greet
  examples: |
    - hello
    - hi there
    - what's up?
- intent: goodbye
  examples: |
    - bye
    - see you
"""

KEYWORD_BOT = {
    "config.yml": "version: '3.1'\nlanguage: en\npipeline:\n- name: KeywordIntentClassifier\n"
    "policies:\n- name: RulePolicy\n",
    "domain.yml": "version: '3.1'\nintents: [greet, goodbye]\nresponses:\n"
    "  utter_greet: [{text: Hey!}]\n  utter_goodbye: [{text: Bye!}]\n"
    '  utter_default: [{text: "Sorry, I did not get that."}]\n',
    "data/nlu.yml": "version: '3.1'\n" + NLU,
    "data/rules.yml": "version: '3.1'\nrules:\n"
    "- rule: greet\n  steps: [{intent: greet}, {action: utter_greet}]\n"
    "- rule: bye\n  steps: [{intent: goodbye}, {action: utter_goodbye}]\n",
}

NO_INTENT = {"name": None, "confidence": 0.0}


def _pipeline(**options: object) -> NLUPipeline:
    return NLUPipeline.train(
        read_nlu_yaml(NLU, "nlu.yml"), [{"name": "KeywordIntentClassifier", **options}]
    )


def test_a_keyword_gives_its_intent_and_any_other_message_no_intent() -> None:
    # Before: the keyword classifier ran as our ML classifier, so "zzz" and "" came back as
    # the likeliest intent (goodbye at 0.52) with a ranking, and a rule answered them.
    pipeline = _pipeline()
    for text in ("hello", "oh hello friend", "well, bye!", "hi there"):
        parsed = pipeline.parse(text)
        assert parsed["intent"]["confidence"] == 1.0, text
        assert "intent_ranking" not in parsed
    assert pipeline.parse("oh hello friend")["intent"]["name"] == "greet"
    assert pipeline.parse("well, bye!")["intent"]["name"] == "goodbye"
    # As Rasa's: the keyword first in the training data decides, not the first in the text.
    assert pipeline.parse("bye, hello")["intent"]["name"] == "greet"
    for text in ("zzz", "", "hi", "hellooo", "goodbye", "Hello"):
        parsed = pipeline.parse(text)
        assert parsed["intent"] == NO_INTENT, text
        assert "intent_ranking" not in parsed


def test_a_keyword_pipeline_trains_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    # Before: "runs as botserver equivalents: KeywordIntentClassifier -> IntentClassifier",
    # and a tokenizer and n-gram featurizers were said to be added, which it does not use.
    with caplog.at_level(logging.WARNING):
        pipeline = _pipeline()
    assert [r.getMessage() for r in caplog.records] == []
    assert pipeline.warnings == []


def test_case_sensitive_false_matches_any_case() -> None:
    assert _pipeline(case_sensitive=False).parse("HELLO you")["intent"]["name"] == "greet"
    assert _pipeline(case_sensitive=True).parse("HELLO you")["intent"] == NO_INTENT
    # Without case, as Rasa's regex: a long s (U+017F) is an s, though no lowercase holds it.
    assert _pipeline(case_sensitive=False).parse("oh \u017fee you")["intent"]["name"] == "goodbye"


def test_a_keyword_is_matched_as_written_not_as_a_regex() -> None:
    pipeline = _pipeline()
    assert pipeline.parse("so what's up?")["intent"]["name"] == "greet"
    assert pipeline.parse("what's up")["intent"] == NO_INTENT
    assert pipeline.parse("what's u")["intent"] == NO_INTENT


def test_a_keyword_of_two_intents_or_inside_another_intents_keyword_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = read_nlu_yaml(
        "nlu:\n- intent: greet\n  examples: |\n    - hey\n    - good morning\n"
        "- intent: mood\n  examples: |\n    - hey\n    - good\n",
        "nlu.yml",
    )
    with caplog.at_level(logging.WARNING):
        pipeline = NLUPipeline.train(data, [{"name": "KeywordIntentClassifier"}])
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "'hey'" in said and "'good'" in said
    assert pipeline.parse("hey")["intent"] == NO_INTENT
    assert pipeline.parse("good")["intent"] == NO_INTENT
    assert pipeline.parse("good morning")["intent"]["name"] == "greet"


def test_stored_keywords_of_the_wrong_shape_refuse_to_load(tmp_path: Path) -> None:
    _pipeline().persist(tmp_path)
    manifest = json.loads((tmp_path / "pipeline.json").read_text())
    keyword = manifest["components"][-1]
    assert keyword["state"]["keywords"][0] == ["hello", "greet"]
    for bad in (None, "hello", [["hello"]], [["hello", 1]], [{"hello": "greet"}]):
        keyword["state"]["keywords"] = bad
        (tmp_path / "pipeline.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelError, match="KeywordIntentClassifier"):
            NLUPipeline.load(tmp_path)


async def test_a_message_without_a_keyword_gets_the_fallback_not_a_rule(tmp_path: Path) -> None:
    # Before: "zzz" was read as goodbye and the bot said "Bye!". As in Rasa, no rule applies
    # to a message without an intent: RulePolicy's fallback runs action_default_fallback.
    model = train_archive(write_files(KEYWORD_BOT, tmp_path), tmp_path / "models")
    options = ServerOptions(
        model_path=model,
        endpoints={"tracker_store": {"type": "in_memory"}},
        enable_api=True,
        models_dir=model.parent,
    )
    async with serving(build_app(options)) as url, httpx.AsyncClient(base_url=url) as bot:
        parsed = (await bot.post("/model/parse", json={"text": "zzz"})).json()
        replies = {
            text: (
                await bot.post("/webhooks/rest/webhook", json={"sender": "u", "message": text})
            ).json()
            for text in ("hello", "zzz", "see you soon")
        }
        tracker = (await bot.get("/conversations/u/tracker")).json()
    assert parsed == {"text": "zzz", "intent": NO_INTENT, "entities": [], "text_tokens": [[0, 3]]}
    assert [[m["text"] for m in replies[t]] for t in replies] == [
        ["Hey!"],
        ["Sorry, I did not get that."],
        ["Bye!"],
    ]
    fallback = [e for e in tracker["events"] if e.get("name") == "action_default_fallback"]
    assert [e["policy"] for e in fallback] == ["RulePolicy"]


def test_nlu_evaluation_labels_a_message_without_intent_as_rasa_does(tmp_path: Path) -> None:
    """As Rasa's `test nlu` and `POST /model/test/intents`: a message that got no intent is
    predicted "" (no intent can be named so). Before, "None" in the reports, the name of
    a real intent in many bots (LUIS exports have one): an example of it that no keyword
    matched was scored right."""
    test = read_nlu_yaml(
        "nlu:\n- intent: None\n  examples: |\n    - whatever\n"
        "- intent: greet\n  examples: |\n    - hello\n    - good morning\n",
        "test.yml",
    )
    summary = evaluate(_pipeline(), test, tmp_path, plot=False)
    report = json.loads((tmp_path / "intent_report.json").read_text())
    errors = json.loads((tmp_path / "intent_errors.json").read_text())
    assert summary["intent_evaluation"]["accuracy"] == 1 / 3
    assert report["None"]["recall"] == 0.0
    assert report["greet"]["confused_with"] == {"": 1}
    assert [(e["text"], e["intent_prediction"]["name"]) for e in errors] == [
        ("whatever", ""),
        ("good morning", ""),
    ]
    assert predict(_pipeline(), test).intents == ["", "greet", ""]


class _CountedPattern:
    """A keyword's pattern that counts its searches."""

    searches = 0

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern

    def search(self, text: str) -> re.Match[str] | None:
        _CountedPattern.searches += 1
        return self.pattern.search(text)


@pytest.mark.parametrize("case_sensitive", [True, False])
def test_a_message_is_searched_only_for_the_keywords_it_holds(
    monkeypatch: pytest.MonkeyPatch, load_bot: Any, case_sensitive: bool
) -> None:
    """A regex search tries each position of the text in turn: before, each message was
    searched for every keyword, and a 1,000-character one against formbot's 279 keywords
    held the event loop 4.2 ms (0.1 ms now)."""
    made = keyword_classifier.keyword_pattern
    monkeypatch.setattr(
        keyword_classifier,
        "keyword_pattern",
        lambda keyword, case_sensitive: _CountedPattern(made(keyword, case_sensitive)),
    )
    pipeline = NLUPipeline.train(
        load_bot("formbot"), [{"name": "KeywordIntentClassifier", "case_sensitive": case_sensitive}]
    )
    text = "qwerty uiop " * 90
    _CountedPattern.searches = 0
    assert pipeline.parse(text)["intent"] == NO_INTENT
    assert _CountedPattern.searches == 0
    assert pipeline.parse(text.upper() + "Hello")["intent"]["name"] == "greet"
    assert _CountedPattern.searches <= 3  # the keywords the text holds, "Hello" among them


class _CountedText(str):
    """An example's text that counts the substring tests made on it."""

    tests = 0

    def __contains__(self, other: object) -> bool:
        _CountedText.tests += 1
        return super().__contains__(other)  # type: ignore[operator]


@pytest.mark.parametrize("case_sensitive", [True, False])
def test_training_compares_each_keyword_with_the_few_that_may_hold_it(
    monkeypatch: pytest.MonkeyPatch, case_sensitive: bool
) -> None:
    """A keyword found inside another intent's keyword is dropped: before, each keyword was
    compared with every other (3,998,000 substring tests or regex searches for these 2,000
    examples; 20,000 took 55 s of CPU, 200 s without case). Now only with the keywords that
    share its rarest few characters. What is dropped, and why, is unchanged."""
    made = keyword_classifier.keyword_pattern
    monkeypatch.setattr(
        keyword_classifier,
        "keyword_pattern",
        lambda keyword, case_sensitive: _CountedPattern(made(keyword, case_sensitive)),
    )
    words = [f"w{n}x" for n in range(500)]
    texts = [f"{words[n % 500]} {words[n * 7 % 500]} {words[n * 13 % 491]}" for n in range(2000)]
    examples = [Example(_CountedText(text), f"intent{n % 20}") for n, text in enumerate(texts)]
    examples += [Example(_CountedText(t), "short") for t in ("W1X", "w2x", "\u017ftop")]
    examples.append(Example(_CountedText("stop now"), "stop"))  # a long s is an s, without case
    classifier = KeywordIntentClassifier({"case_sensitive": case_sensitive})
    _CountedText.tests = _CountedPattern.searches = 0

    classifier.train([], NLUTrainingData(examples))

    assert _CountedText.tests + _CountedPattern.searches < 20 * len(examples)
    dropped = {k for k, _ in classifier.keywords_} ^ {e.text for e in examples}
    assert dropped == ({"w2x"} if case_sensitive else {"W1X", "w2x", "\u017ftop"})


@pytest.mark.parametrize("case_sensitive", [True, False])
def test_keywords_of_a_few_repeated_characters_are_compared_with_the_few_that_may_hold_them(
    monkeypatch: pytest.MonkeyPatch, case_sensitive: bool
) -> None:
    """Keywords made of a few characters repeated ("aaa", "abab", "abba": here every word of
    a and b up to 10 letters) share all their runs of three characters: each was compared
    with every other (8,194 such examples took 2.7 s of CPU, 32,770 took 56 s; now 0.3 s
    and 1.2 s). A keyword found as whole words in another holds each of its words as a
    whole word of the other: it is compared only with the keywords holding its rarest word.
    What is dropped is unchanged: "a" and "ab", inside "a ab" (a keyword of another
    intent), and without case "abab" and "AbAb" (each inside the other)."""
    made = keyword_classifier.keyword_pattern
    monkeypatch.setattr(
        keyword_classifier,
        "keyword_pattern",
        lambda keyword, case_sensitive: _CountedPattern(made(keyword, case_sensitive)),
    )
    texts = ["".join(p) for n in range(1, 11) for p in itertools.product("ab", repeat=n)]
    examples = [Example(_CountedText(text), f"intent{n % 3}") for n, text in enumerate(texts)]
    examples += [Example(_CountedText(t), "other") for t in ("a ab", "AbAb")]
    classifier = KeywordIntentClassifier({"case_sensitive": case_sensitive})
    _CountedText.tests = _CountedPattern.searches = 0

    classifier.train([], NLUTrainingData(examples))

    assert _CountedText.tests + _CountedPattern.searches < 20 * len(examples)
    dropped = {k for k, _ in classifier.keywords_} ^ {e.text for e in examples}
    assert dropped == ({"a", "ab"} if case_sensitive else {"a", "ab", "abab", "AbAb"})


class _CountedIntent(str):
    """An intent's name that counts the comparisons made with it: one for each keyword
    looked at (its intent first), and for each step down a tree of them."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        _CountedIntent.comparisons += 1
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        _CountedIntent.comparisons += 1
        return str.__ne__(self, other)

    __hash__ = str.__hash__


@pytest.mark.parametrize("order", ["shortest first", "longest first"])
@pytest.mark.parametrize("intents", [1, 3])
@pytest.mark.parametrize("case_sensitive", [True, False])
def test_keywords_that_repeat_one_word_are_not_compared_with_every_other(
    case_sensitive: bool, intents: int, order: str
) -> None:
    """ "a", "a a", "a a a"...: each holds the rarest word of every other, and was compared
    with each (500 such examples: 125,000 to 250,000 intents compared, but 2,200 longest
    first in three intents, where the first other is a holder). Now the keywords of its own
    intent and those shorter than it are passed over, a tree's few steps at a time (2,200
    to 18,400). What is dropped is unchanged: with three intents, every keyword inside a
    longer one of another intent, the first such named. Counted, not traced: tracing each
    line made these cases take 50 s."""
    texts = ["a" + " a" * n for n in range(500)]
    if order == "longest first":
        texts.reverse()
    keywords: dict[str, str] = {t: _CountedIntent(f"i{n % intents}") for n, t in enumerate(texts)}
    _CountedIntent.comparisons = 0

    found = keyword_classifier._inside_others(keywords, case_sensitive)

    assert _CountedIntent.comparisons < 60 * len(keywords), _CountedIntent.comparisons
    if intents == 1:
        assert found == {}
        return
    assert set(found) == set(texts) - {max(texts, key=len)}
    for keyword, (other, _) in found.items():
        first = next(o for o in texts if keywords[o] != keywords[keyword] and keyword in o)
        assert other == first


@pytest.mark.parametrize("scanned", ["in turn", "through a tree"])
@pytest.mark.parametrize("case_sensitive", [True, False])
def test_the_keywords_found_inside_others_are_those_every_pair_would_find(
    monkeypatch: pytest.MonkeyPatch, case_sensitive: bool, scanned: str
) -> None:
    """Compared only through their shared characters, folded as the regex engine folds them
    without case (long s, Kelvin sign, dotted and dotless i, final sigma, ΐ and its twin, the
    st ligatures), keywords are found inside others exactly as a search in every other finds
    them: also when the candidates are walked through a tree (past the first 32, made 1
    here, as these keywords are fewer), which passes over those of the same intent or
    shorter."""
    if scanned == "through a tree":
        monkeypatch.setattr(keyword_classifier, "_SCANNED", 1)
    alphabet = [*"abkKsSiI ?!-.'_", *"\u017f\u212a\u0130\u0131ςσΣßẞΐΐﬅﬆéÉ\u0345ι好µμϐβǅǆ"]
    alphabet += ["\U00010400", "\U00010428", "\U0001e900", "\U0001e922", "\U0001f600"]
    rng = random.Random(5)
    for _ in range(200):
        keywords = {
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))): f"i{rng.randint(0, 3)}"
            for _ in range(rng.randint(1, 30))
        }
        every_pair = {
            keyword
            for keyword, intent in keywords.items()
            if any(
                keyword_classifier.keyword_pattern(keyword, case_sensitive).search(other)
                for other, other_intent in keywords.items()
                if other_intent != intent
            )
        }
        found = keyword_classifier._inside_others(keywords, case_sensitive)
        assert set(found) == every_pair, keywords
        for keyword, (other, _) in found.items():  # the warning names the first, as before
            pattern = keyword_classifier.keyword_pattern(keyword, case_sensitive)
            first = next(
                text
                for text, intent in keywords.items()
                if intent != keywords[keyword] and pattern.search(text)
            )
            assert other == first, keywords


def test_every_character_a_regex_without_case_takes_for_another_folds_the_same() -> None:
    """The case fold behind the search for keywords inside others, checked against the regex
    engine itself for every character that has a case (or is one's lowercase): a pair it
    matches without case folds to the same text, or a keyword inside another is missed."""
    every = (chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF)
    cased = [c for c in every if c != c.lower() or c != c.upper() or c != c.casefold()]
    characters = sorted({*cased, *"".join(c.lower() + c.upper() + c.casefold() for c in cased)})
    assert len(characters) > 2500  # the cased characters of Unicode, and their cases
    folded = dict(zip(characters, keyword_classifier._fold_case(characters), strict=True))
    text = "".join(characters)
    mismatched = [
        (char, match.group())
        for char in characters
        for match in re.finditer(re.escape(char), text, re.IGNORECASE)
        if folded[char] != folded[match.group()]
    ]
    assert mismatched == []
