"""Regex and lookup-table patterns from the training data, compiled once and matched
against message text (shared by RegexFeaturizer and RegexEntityExtractor)."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from re import _parser as sre_parse  # type: ignore[attr-defined]
from re._casefix import _EXTRA_CASES  # type: ignore[import-not-found]
from typing import Any

import regex as regex_engine  # type: ignore[import-untyped]

from server.nlu.message import Token
from server.nlu.training_data import NLUTrainingData

logger = logging.getLogger(__name__)

# How long one risky pattern may search one message (see `_Bounded`).
MATCH_TIMEOUT_SECONDS = 0.05


@dataclass(frozen=True)
class Pattern:
    """A named pattern; `kind` is "regex" or "lookup"."""

    name: str
    pattern: str
    kind: str


def patterns_from_data(
    data: NLUTrainingData, use_regexes: bool = True, use_lookup_tables: bool = True
) -> list[Pattern]:
    patterns: list[Pattern] = []
    if use_regexes:
        grouped: dict[str, list[str]] = {}
        for name, regex in data.regexes:
            grouped.setdefault(name, []).append(regex)
        for name, regexes in grouped.items():
            if len(regexes) > 1 and any(_GROUP_REFERENCES.search(r) for r in regexes):
                # Joined, `(?P<x>...)` twice would not compile and `\1` would name another
                # regex's group: such regexes are matched one by one, as Rasa matches them.
                patterns.extend(Pattern(name, _scoped_flags(r), "regex") for r in regexes)
                continue
            joined = "|".join(f"(?:{_scoped_flags(r)})" for r in regexes)
            patterns.append(Pattern(name, joined, "regex"))
    if use_lookup_tables:
        for name, elements in data.lookups.items():
            # Longest first so that "new york city" wins over "new york".
            ordered = sorted({e for e in elements if e}, key=len, reverse=True)
            if ordered:
                alternatives = "|".join(re.escape(e) for e in ordered)
                patterns.append(Pattern(name, f"(?:{alternatives})", "lookup"))
    return patterns


# A named group or a reference to a group, which joining regexes would break.
_GROUP_REFERENCES = re.compile(r"\(\?P[<=]|\\[1-9]|\\g<")
_LEADING_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")


def _scoped_flags(regex: str) -> str:
    """`(?i)[a-z]{2}` as `(?i:[a-z]{2})`: inline flags, which Python accepts only at the start
    of a whole pattern, scoped to this regex so that it can join the others of its name (it
    is matched as Rasa matches it alone)."""
    flags = ""
    while match := _LEADING_FLAGS.match(regex):
        flags += match.group(1)
        regex = regex[match.end() :]
    return f"(?{flags}:{regex})" if flags else regex


def compile_patterns(
    patterns: list[Pattern], case_sensitive: bool, use_word_boundaries: bool
) -> list[tuple[Pattern, Matcher]]:
    flags = 0 if case_sensitive else re.IGNORECASE
    compiled: list[tuple[Pattern, Matcher]] = []
    for p in patterns:
        source = p.pattern
        if p.kind == "lookup":
            elements = _lookup_elements(source)
            if elements is not None:
                compiled.append((p, _Lookup(elements, case_sensitive, use_word_boundaries)))
                continue
        if use_word_boundaries and p.kind == "lookup":
            source = rf"\b{source}\b"
        if p.kind == "regex" and _may_backtrack(source):
            compiled.append((p, _Bounded(p.name, source, flags)))
        else:
            compiled.append((p, re.compile(source, flags)))
    return compiled


def _lookup_elements(source: str) -> list[str] | None:
    """A lookup pattern's elements, read back from the alternation `patterns_from_data` wrote
    (`(?:a|b\\ c|...)`, each escaped, longest first); None for a pattern of another shape
    (one whose first matching element may be a shorter one), compiled as a regex instead."""
    if not (source.startswith("(?:") and source.endswith(")")):
        return None
    body = source[3:-1]
    parts = _ESCAPED_ELEMENT.findall(body)
    elements = [_UNESCAPE.sub(r"\1", part) if "\\" in part else part for part in parts]
    if "|".join(parts) != body or "|".join(map(re.escape, elements)) != body:
        return None
    if any(len(a) < len(b) for a, b in itertools.pairwise(elements)):
        return None
    return elements


# An escaped element of a lookup's alternation: escaped characters, or any but `|` and `\`.
_ESCAPED_ELEMENT = re.compile(r"(?:\\.|[^\\|])+", re.DOTALL)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
# The lowercase letters Python's `re` takes for one another when it ignores case (`s` and
# `ſ`, `σ` and `ς`, `i` and `ı`...), each mapped to the smallest of its kind.
_SAME_LETTER = {c: min(c, *others) for c, others in _EXTRA_CASES.items()}
_WORD_BOUNDARY = re.compile(r"\b")


def _fold(text: str) -> str:
    """`text` as `re.IGNORECASE` compares it, one character for each of its characters."""
    folded = text.replace("\u0130", "i").lower()  # (İ: the one whose lowercase is two)
    return folded.translate(_SAME_LETTER)


class _Found:
    """A match of a lookup element, as much of `re.Match` as the components read."""

    __slots__ = ("_text", "_start", "_end")

    def __init__(self, text: str, start: int, end: int) -> None:
        self._text, self._start, self._end = text, start, end

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end

    def group(self) -> str:
        return self._text[self._start : self._end]


class _Lookup:
    """A lookup table matched as a set: where a match may start (a word boundary, with
    `word_boundaries`), the text's slice of each element length, longest first, is looked up.
    It finds what `\\b(?:e1|e2|...)\\b` finds (longest first), without the alternation: Python's
    `re` took seconds to compile one of 100,000 elements (at training and at each load) and
    12 ms to search a short message, trying each element at each place."""

    def __init__(self, elements: list[str], case_sensitive: bool, word_boundaries: bool) -> None:
        self._case_sensitive = case_sensitive
        self._word_boundaries = word_boundaries
        keys = elements if case_sensitive else [_fold(e) for e in elements]
        self._holds = frozenset(keys).__contains__
        self._lengths = sorted({len(e) for e in elements}, reverse=True)

    def finditer(self, text: str) -> Iterator[_Found]:
        keys = text if self._case_sensitive else _fold(text)
        size = len(text)
        if self._word_boundaries:
            starts: Any = [m.start() for m in _WORD_BOUNDARY.finditer(text)]
            ends: Any = set(starts)
        else:
            starts, ends = range(size), None
        free = 0  # (matches do not overlap: the next one starts at the end of the last)
        for start in starts:
            if start < free:
                continue
            for length in self._lengths:
                end = start + length
                if end <= size and (ends is None or end in ends) and self._holds(keys[start:end]):
                    yield _Found(text, start, end)
                    free = end
                    break


class _Bounded:
    """A pattern that can take exponential time on a crafted message, such as `(a+)+$`: it is
    searched with a time limit (the `regex` engine; `re` has none), and a search over the limit
    counts as no match. One user message must not hold a parse thread for hours."""

    def __init__(self, name: str, source: str, flags: int) -> None:
        self.name = name
        self._regex = regex_engine.compile(
            source, regex_engine.IGNORECASE if flags & re.IGNORECASE else 0
        )
        self._warned = False

    def finditer(self, text: str) -> Iterator[Any]:
        try:
            return iter(list(self._regex.finditer(text, timeout=MATCH_TIMEOUT_SECONDS)))
        except TimeoutError:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "The regex '%s' of the training data took longer than %.2f s on a message "
                    "and was skipped; it can backtrack exponentially (a repeated group that "
                    "repeats or alternates inside), rewrite it.",
                    self.name,
                    MATCH_TIMEOUT_SECONDS,
                )
            return iter(())


Matcher = re.Pattern[str] | _Bounded | _Lookup


def _may_backtrack(source: str) -> bool:
    """Whether a repeat holds another repeat or an alternation: the shapes (`(a+)+`,
    `(a|a)*`) that backtrack exponentially. Plain patterns keep the faster `re` engine."""
    try:
        return _nested_repeat(sre_parse.parse(source), False)
    except Exception:  # a pattern `re` cannot parse fails in re.compile with its message
        return False


_REPEATS = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT}


def _nested_repeat(items: Any, inside_repeat: bool) -> bool:
    for op, av in items:
        if op in _REPEATS:
            _low, high, sub = av
            repeats = high > 1
            if repeats and inside_repeat:
                return True
            if _nested_repeat(sub, inside_repeat or repeats):
                return True
        elif op is sre_parse.BRANCH:
            if inside_repeat:
                return True
            if any(_nested_repeat(sub, inside_repeat) for sub in av[1]):
                return True
        elif op is sre_parse.SUBPATTERN:
            if _nested_repeat(av[-1], inside_repeat):
                return True
        elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            if _nested_repeat(av[1], inside_repeat):
                return True
        elif op is sre_parse.GROUPREF_EXISTS:
            if any(sub is not None and _nested_repeat(sub, inside_repeat) for sub in av[1:]):
                return True
    return False


def token_matches(
    compiled: list[tuple[Pattern, Matcher]], text: str, tokens: list[Token]
) -> tuple[list[int], list[set[str]]]:
    """Which patterns match the text at all, and which patterns cover each token."""
    matched: list[int] = []
    per_token: list[set[str]] = [set() for _ in tokens]
    for index, (pattern, regex) in enumerate(compiled):
        found = False
        for match in regex.finditer(text):
            if match.end() == match.start():
                continue
            found = True
            for position, token in enumerate(tokens):
                if token.start < match.end() and token.end > match.start():
                    per_token[position].add(pattern.name)
        if found:
            matched.append(index)
    return matched, per_token
