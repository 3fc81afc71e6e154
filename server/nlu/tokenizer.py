"""WhitespaceTokenizer: words split on whitespace, punctuation trimmed from their ends (or
dropped by Rasa 3's rules), each token keeping its exact character span in the message."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import regex  # type: ignore[import-untyped]

from server.errors import InvalidConfig
from server.nlu.message import Message, Token
from server.nlu.params import flag

# The `regex` module's \w takes in combining marks: "हिन्दी" is one word with its final vowel
# sign, which `re`'s \w leaves out (the trimming below used to cut it off).
#
# `punctuation: trim` (the default): punctuation is trimmed from both ends of each
# whitespace-separated word; `$` and `%` stay ("10%"), and so does an apostrophe inside a
# word ("I'm"). A word is what lies from its first kept character to its last, found in one
# linear search: a word of a letter, 99,998 apostrophes and a letter used to take 290 s
# (a trailing-punctuation regex was tried from each of its positions).
_TRIMMED = regex.compile(r"[\w#@&$%](?:[^\s\x1c-\x1f]*[\w#@&$%])?")

# `punctuation: rasa`: Rasa 3 drops, scanning the text left to right, the first of these
# that matches:
# (1) a run of punctuation (anything but word characters, `#`, `@`, `&`) just before
#     whitespace or the end of the text: "ok!", "10%";
# (2) such a run just after whitespace or the start, unless a digit or whitespace follows
#     it: "'quoted", but "-5";
# (3) a run of characters that are neither word nor URL characters, with neither digits
#     nor whitespace on either side: "I'm", "hi👍there", but "10'000".
# Rasa finds them with one backtracking regex, which takes time quadratic in the length of a
# run of punctuation it cannot drop ("a!!!…!1": 7 s for 8,000 characters). Every match lies
# within one run of punctuation that has a character other than whitespace in it (a run of
# whitespace only drops whitespace), so each such run is found (the lookbehind and the
# possessive repeats keep the search linear) and scanned once, with the same result.
_PUNCTUATION = regex.compile(r"(?<![^\w#@&])(?:\s*+[^\w#@&\s])++\s*+")
_NOT_URL = regex.compile(r"[^\w._~:/?#\[\]()@!$&*+,;=-]+")  # within a run of punctuation
_ANY_PUNCTUATION = regex.compile(r"[^\w#@&\s]")
_WORD = regex.compile(r"[^\s\x1c-\x1f]+")  # Rasa splits words with str.split()
_DIGITS = frozenset("0123456789")


def _is_space(char: str) -> bool:
    """Whitespace as the rules' \\s sees it (str.isspace() also takes in \\x1c-\\x1f)."""
    return char.isspace() and not "\x1c" <= char <= "\x1f"


def _dropped_in_run(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The spans rules (1)-(3) drop in the run of punctuation text[start:end], found as
    Rasa's regex finds them: the first rule that matches at a position, its longest match."""
    size = len(text)
    if end == size:  # (1) at the run's first character: "ok?"
        return [(start, end)]
    last_space = last_solid = -1
    for i in range(start, end):
        if _is_space(text[i]):
            last_space = i
        else:
            last_solid = i
    # A match may end where the run does if a character other than a digit follows it.
    open_end = end < size and text[end] not in _DIGITS
    not_url = [m.span() for m in _NOT_URL.finditer(text, start, end)]
    next_url = 0
    dropped: list[tuple[int, int]] = []
    at = start
    while at < end:
        stop = last_space if last_space > at else -1  # (1): up to the run's last whitespace
        # (2): the run after the whitespace at `at`, or else from the start of the text; up
        # to its end, or else up to its last non-whitespace character.
        after_space = at + 1 if at + 1 < end and _is_space(text[at]) else -1
        for first in (after_space, 0 if at == 0 else -1):
            if stop < 0 and first >= 0:
                stop = end if open_end else last_solid if last_solid > first else -1
        while next_url < len(not_url) and not_url[next_url][1] <= at:
            next_url += 1
        if (
            stop < 0
            and next_url < len(not_url)
            and not_url[next_url][0] <= at
            and at > 0
            and text[at - 1] not in _DIGITS
            and not _is_space(text[at - 1])
        ):
            # (3): up to the end of the non-URL characters, or else up to their last
            # character; no whitespace follows `at` in the run, or (1) would have matched.
            url_end = not_url[next_url][1]
            if url_end < size and text[url_end] not in _DIGITS:
                stop = url_end
            else:
                stop = url_end - 1
        if stop > at:
            dropped.append((at, stop))
            at = stop
        else:
            at += 1
    return dropped


def _trimmed_words(text: str) -> list[tuple[int, int]]:
    return [word.span() for word in _TRIMMED.finditer(text)]


def _rasa_words(text: str) -> Iterator[tuple[int, int]]:
    kept_from = 0
    runs = _PUNCTUATION.finditer(text) if _ANY_PUNCTUATION.search(text) else ()
    for run in runs:
        for drop_start, drop_end in _dropped_in_run(text, *run.span()):
            for word in _WORD.finditer(text, kept_from, drop_start):
                yield word.span()
            kept_from = drop_end
    for word in _WORD.finditer(text, kept_from):
        yield word.span()


PUNCTUATION_STYLES = ("trim", "rasa")


def tokenize(text: str, punctuation: str = "trim", lowercase: bool = False) -> list[Token]:
    """The words of `text` with their spans (`punctuation`: "trim" or "rasa", see above); a
    text with none (only emoji or punctuation: "👍", ":)") is one token of the whole
    (stripped) text, as in Rasa, so it still has features."""
    words = _rasa_words(text) if punctuation == "rasa" else _trimmed_words(text)
    tokens = [Token(text[start:end], start, end) for start, end in words]
    if not tokens and text.strip():
        stripped = text.strip()
        start = text.index(stripped)
        tokens.append(Token(stripped, start, start + len(stripped)))
    if lowercase:
        tokens = [Token(t.text.lower(), t.start, t.end) for t in tokens]
    return tokens


class WhitespaceTokenizer:
    """Splits text into tokens. `punctuation: rasa` splits words as Rasa 3 does (see above);
    `case_sensitive: false` lowercases the tokens (their spans stay those of the text);
    `intent_tokenization_flag` and `intent_split_symbol` are checked and have nothing to act
    on (intent names are labels here, not featurized)."""

    def __init__(self, config: dict[str, Any], name: str = "WhitespaceTokenizer"):
        self.config = config
        self.name = name
        self.case_sensitive = flag(config, "case_sensitive", True, name)
        self.punctuation = config.get("punctuation", "trim")
        if self.punctuation not in PUNCTUATION_STYLES:
            raise InvalidConfig(
                f"{name}: 'punctuation' must be 'trim' or 'rasa', not {self.punctuation!r}"
            )
        flag(config, "intent_tokenization_flag", False, name)
        symbol = config.get("intent_split_symbol", "_")
        if not isinstance(symbol, str) or not symbol:
            raise InvalidConfig(
                f"{name}: 'intent_split_symbol' must be a non-empty string, not {symbol!r}"
            )
        pattern = config.get("token_pattern")
        if pattern is not None:
            # Not applied (the pipeline warns), but one Rasa cannot compile is a mistake.
            try:
                re.compile(str(pattern))
            except re.error as e:
                raise InvalidConfig(
                    f"{name}: 'token_pattern' {pattern!r} is not a valid regex: {e}"
                ) from None

    def train(self, messages: list[Message], data: Any) -> None:
        for message in messages:
            self.process(message)

    def process(self, message: Message) -> None:
        message.tokens = tokenize(message.text, self.punctuation, not self.case_sensitive)

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> WhitespaceTokenizer:
        return cls(config, name)
