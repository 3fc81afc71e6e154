"""KeywordIntentClassifier: each training example is a keyword of its intent; a message that
holds one, as whole words, gets that intent at confidence 1.0, any other message no intent."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from server.errors import ModelError
from server.nlu.message import Message
from server.nlu.params import flag
from server.nlu.training_data import NLUTrainingData

logger = logging.getLogger(__name__)

NO_INTENT: dict[str, Any] = {"name": None, "confidence": 0.0}


def keyword_pattern(keyword: str, case_sensitive: bool) -> re.Pattern[str]:
    """The keyword as written (no regex syntax), not inside a longer word: an edge that is a
    word character must not touch another one ("hi" is not in "high")."""
    before = r"(?<!\w)" if re.match(r"\w", keyword) else ""
    after = r"(?!\w)" if re.search(r"\w\Z", keyword) else ""
    return re.compile(before + re.escape(keyword) + after, 0 if case_sensitive else re.IGNORECASE)


# Keywords are compared through the runs of this many characters they hold (a shorter one
# whole): a keyword inside another holds each of its runs.
GRAM = 3


def _inside_others(keywords: dict[str, str], case_sensitive: bool) -> dict[str, tuple[str, str]]:
    """Each keyword found (as a whole word) in a keyword of another intent: the first such
    keyword and its intent. Only the keywords holding its rarest run of `GRAM` characters,
    or its rarest word, are searched: comparing every pair took 55 s for 20,000 examples,
    and keywords of one run repeated ("aaaa", "abab") share all their runs."""
    texts = list(keywords)
    folded = texts if case_sensitive else _fold_case(texts)
    sizes = {min(len(text), GRAM) for text in folded}
    holding: dict[str, list[int]] = {}  # a run of characters: the keywords holding it
    for index, text in enumerate(folded):
        for gram in {run for size in sizes for run in _runs(text, size)}:
            holding.setdefault(gram, []).append(index)
    words = _words(texts, case_sensitive)
    holding_word: dict[str, list[int]] = {}  # a whole word: the keywords holding it
    for index, its_words in enumerate(words):
        for word in set(its_words):
            holding_word.setdefault(word, []).append(index)
    lengths = [len(text) for text in folded]
    intents = list(keywords.values())
    trees: dict[int, _Holders] = {}  # id of a long candidates list: its tree
    inside: dict[str, tuple[str, str]] = {}
    for keyword, needle, its_words in zip(texts, folded, words, strict=True):
        runs = _runs(needle, min(len(needle), GRAM))
        candidates = min((holding[run] for run in runs), key=len)
        if its_words and (case_sensitive or keyword.isascii()):
            candidates = min(candidates, *(holding_word[word] for word in its_words), key=len)
        intent = keywords[keyword]
        chunks: Iterable[list[int]] = (candidates,)
        if len(candidates) > _SCANNED:  # the first ones in turn, the rest through a tree
            tree = trees.get(id(candidates))
            if tree is None:
                tree = trees[id(candidates)] = _Holders(candidates, lengths, intents)
            chunks = tree.chunks(len(needle), intent)
        found = _first_holder(
            keyword, needle, intent, chunks, (texts, folded, intents), case_sensitive
        )
        if found is not None:
            inside[keyword] = (texts[found], intents[found])
    return inside


def _first_holder(
    keyword: str,
    needle: str,
    intent: str,
    chunks: Iterable[list[int]],
    keywords: tuple[list[str], list[str], list[str]],
    case_sensitive: bool,
) -> int | None:
    """The first of the candidates (in chunks, in order) of another intent than `intent`
    that holds `keyword` as whole words; None: none does. `keywords`: every keyword's text,
    folded text and intent."""
    texts, folded, intents = keywords
    pattern: re.Pattern[str] | None = None
    for chunk in chunks:
        for index in chunk:
            if intents[index] == intent or needle not in folded[index]:
                continue
            if pattern is None:
                pattern = keyword_pattern(keyword, case_sensitive)
            if pattern.search(texts[index]):
                return index
    return None


# Candidates lists this long are walked through a _Holders tree.
_SCANNED = 32


class _Holders:
    """The keywords holding one run or word (their indices, in training order), as a tree
    that finds, without a look at each, the next of them at least so long and of another
    intent than a keyword's: the others cannot hold it. Keywords written with the same few
    words ("a", "a b", "b a a"...) all hold their rarest word, and each was compared with
    every other (16,382 such examples: 2 s of CPU).

    A node keeps the longest keyword below it, its intent, and the longest of the others'
    intents: a keyword of intent I at least L long is below it when the longest is of
    another intent and at least L long, or the longest of the others' is at least L long."""

    def __init__(self, indices: list[int], lengths: list[int], intents: list[str]) -> None:
        self._indices = indices
        size = 1
        while size < len(indices):
            size *= 2
        self._size = size
        longest = [-1] * (2 * size)
        intent: list[str | None] = [None] * (2 * size)
        for at, index in enumerate(indices, start=size):
            longest[at] = lengths[index]
            intent[at] = intents[index]
        others = [-1] * (2 * size)
        for node in range(size - 1, 0, -1):
            first, second = 2 * node, 2 * node + 1
            if longest[second] > longest[first]:
                first, second = second, first
            longest[node], intent[node] = longest[first], intent[first]
            second_other = longest[second] if intent[second] != intent[first] else others[second]
            others[node] = max(others[first], second_other)
        self._longest, self._intent, self._others = longest, intent, others

    def chunks(self, length: int, intent: str) -> Iterator[list[int]]:
        """The indices in order, in chunks: the first _SCANNED, then from each keyword at
        least `length` long of another intent the next ones as they are, which the caller
        passes over at a fraction of a step down the tree; twice as many each time, so that
        where most are such keywords (that do not hold the caller's) the steps down the
        tree are few."""
        indices = self._indices
        size = _SCANNED
        yield indices[:size]
        at = self._next(1, 0, self._size, size, length, intent)
        while at >= 0:
            size *= 2
            yield indices[at : at + size]
            at += size
            at = self._next(1, 0, self._size, at, length, intent) if at < len(indices) else -1

    def _next(self, node: int, low: int, high: int, start: int, length: int, intent: str) -> int:
        """The first position from `start` on below `node` (positions low to high) of such a
        keyword; -1: none."""
        if (
            high <= start
            or self._others[node] < length
            and (self._longest[node] < length or self._intent[node] == intent)
        ):
            return -1
        if high - low == 1:
            return low
        middle = (low + high) // 2
        found = self._next(2 * node, low, middle, start, length, intent)
        if found < 0:
            found = self._next(2 * node + 1, middle, high, start, length, intent)
        return found


def _words(texts: list[str], case_sensitive: bool) -> list[list[str]]:
    """The words (runs of word characters) of each text, folded as `_fold_case` folds them.

    A keyword matched as whole words in another text holds each of its words there as a whole
    word (its edges are word edges by the keyword's pattern, its inner non-word characters
    match only themselves), when its characters match only themselves or it is ASCII: an
    ASCII letter matches, without case, only letters (k the Kelvin sign, s the long s). Other
    characters without case can match a non-word character (the combining ypogegrammeni is
    an iota), so a keyword holding them is not compared through its words."""
    split = [_WORD.findall(text) for text in texts]
    if case_sensitive:
        return split
    folded = iter(_fold_case([word for its_words in split for word in its_words]))
    return [[next(folded) for _ in its_words] for its_words in split]


_WORD = re.compile(r"\w+")


def _runs(text: str, size: int) -> list[str]:
    """The runs of `size` characters of a text."""
    return [text[at : at + size] for at in range(len(text) - size + 1)]


def _fold_case(texts: list[str]) -> list[str]:
    """The texts with each character replaced by what stands for every character a regex
    without case takes for it: a keyword's match in a text is then found, folded, in the
    folded text. That is the uppercase of the lowercase (the long s, S and s are all S; the
    Kelvin sign, K and k are K), else the case fold (ΐ and its twin: a regex matches them)."""
    table: dict[int, str] = {}
    for char in set().union(*texts):
        lower = char.lower()[0]  # İ: i, as the regex engine lowers it (str.lower adds a dot)
        upper = lower.upper()
        table[ord(char)] = upper if len(upper) == 1 else lower.casefold()
    return [text.translate(table) for text in texts]


class KeywordIntentClassifier:
    def __init__(self, config: dict[str, Any], name: str = "KeywordIntentClassifier"):
        self.config = config
        self.name = name
        self.case_sensitive = flag(config, "case_sensitive", True, name)
        # (keyword, intent) in training order: the first keyword found decides.
        self.keywords_: list[tuple[str, str]] = []
        # Per keyword, in the same order: a text every match of it holds (None: none known,
        # see `_needle`), its pattern and its intent.
        self._compiled: list[tuple[str | None, re.Pattern[str], str]] = []

    @property
    def intents(self) -> list[str]:
        return sorted({intent for _, intent in self.keywords_})

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        keywords: dict[str, str] = {}
        ambiguous: set[str] = set()
        for example in data.examples:
            intent, text = example.base_intent, example.text
            if not intent or not text.strip():
                continue
            known = keywords.setdefault(text, intent)
            if known != intent and text not in ambiguous:
                ambiguous.add(text)
                logger.warning(
                    "%s: '%s' is an example of intents '%s' and '%s', so it is no keyword "
                    "of either. Keep it in one intent only.",
                    self.name,
                    text,
                    known,
                    intent,
                )
        for text in ambiguous:
            del keywords[text]
        inside = _inside_others(keywords, self.case_sensitive)
        for keyword, (other, other_intent) in inside.items():
            # Rasa drops it too: it could never be told from the longer keyword.
            logger.warning(
                "%s: keyword '%s' of intent '%s' is part of '%s', a keyword of intent "
                "'%s', so it is no keyword. Reword one of the two examples.",
                self.name,
                keyword,
                keywords[keyword],
                other,
                other_intent,
            )
        self.keywords_ = [(k, i) for k, i in keywords.items() if k not in inside]
        self._compile()

    def _compile(self) -> None:
        self._compiled = [
            (self._needle(k), keyword_pattern(k, self.case_sensitive), i) for k, i in self.keywords_
        ]

    def _needle(self, keyword: str) -> str | None:
        """What a text must hold for the keyword's pattern to match it: the keyword itself,
        or without case its ASCII lowercase (compared with an ASCII text's). A substring
        test costs a fraction of a regex search, which tries each position in turn: a
        1,000-character message against formbot's 279 keywords took 4 ms on the loop."""
        if self.case_sensitive:
            return keyword
        return keyword.lower() if keyword.isascii() else None

    def intent_of(self, text: str) -> str | None:
        if self.case_sensitive:
            haystack: str | None = text
        else:
            # Without case, regex matching folds more than ASCII (the Kelvin sign is a k):
            # only an ASCII text lowercased holds every ASCII keyword the pattern finds.
            haystack = text.lower() if text.isascii() else None
        for needle, pattern, intent in self._compiled:
            if haystack is not None and needle is not None and needle not in haystack:
                continue
            if pattern.search(text):
                return intent
        return None

    def process(self, message: Message) -> None:
        intent = self.intent_of(message.text)
        # A classifier before this one keeps its intent when no keyword is found.
        if intent is not None:
            message.intent = {"name": intent, "confidence": 1.0}
        elif message.intent is None:
            message.intent = dict(NO_INTENT)

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {"keywords": [[k, i] for k, i in self.keywords_]}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> KeywordIntentClassifier:
        classifier = cls(config, name)
        pairs = state.get("keywords")
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
            for p in pairs
        ):
            raise ModelError(f"{name}: the stored keywords are not [keyword, intent] pairs")
        classifier.keywords_ = [(k, i) for k, i in pairs]
        classifier._compile()
        return classifier
