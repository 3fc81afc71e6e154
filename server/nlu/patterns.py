"""Regex and lookup-table patterns from the training data, compiled once and matched
against message text (shared by RegexFeaturizer and RegexEntityExtractor)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.nlu.message import Token
from server.nlu.training_data import NLUTrainingData


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
            patterns.append(Pattern(name, "|".join(f"(?:{r})" for r in regexes), "regex"))
    if use_lookup_tables:
        for name, elements in data.lookups.items():
            # Longest first so that "new york city" wins over "new york".
            ordered = sorted({e for e in elements if e}, key=len, reverse=True)
            if ordered:
                alternatives = "|".join(re.escape(e) for e in ordered)
                patterns.append(Pattern(name, f"(?:{alternatives})", "lookup"))
    return patterns


def compile_patterns(
    patterns: list[Pattern], case_sensitive: bool, use_word_boundaries: bool
) -> list[tuple[Pattern, re.Pattern[str]]]:
    flags = 0 if case_sensitive else re.IGNORECASE
    compiled = []
    for p in patterns:
        source = p.pattern
        if use_word_boundaries and p.kind == "lookup":
            source = rf"\b{source}\b"
        compiled.append((p, re.compile(source, flags)))
    return compiled


def token_matches(
    compiled: list[tuple[Pattern, re.Pattern[str]]], text: str, tokens: list[Token]
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
