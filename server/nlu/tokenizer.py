"""WhitespaceTokenizer: split on whitespace and trim punctuation around words."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from server.errors import InvalidConfig
from server.nlu.message import Message, Token

_WORD = re.compile(r"\S+")
# Punctuation trimmed from both ends of a whitespace-separated word.
_LEAD = re.compile(r"^[^\w#@&$%]+")
_TRAIL = re.compile(r"[^\w#@&$%]+$")


def tokenize(text: str) -> list[Token]:
    """Whitespace tokens with leading/trailing punctuation removed; empty ones dropped."""
    tokens = []
    for match in _WORD.finditer(text):
        word = match.group()
        start = match.start()
        lead = _LEAD.match(word)
        cut_start = lead.end() if lead else 0
        trail = _TRAIL.search(word, cut_start)
        cut_end = trail.start() if trail else len(word)
        if cut_end <= cut_start:
            continue
        tokens.append(Token(word[cut_start:cut_end], start + cut_start, start + cut_end))
    if not tokens and text.strip():
        # Only emoji or punctuation ("👍", ":)"): the text is one token, as in Rasa, so such
        # a message has features to classify rather than none.
        stripped = text.strip()
        start = text.index(stripped)
        tokens.append(Token(stripped, start, start + len(stripped)))
    return tokens


class WhitespaceTokenizer:
    """Splits text into tokens; the options Rasa accepts are read and ignored."""

    def __init__(self, config: dict[str, Any], name: str = "WhitespaceTokenizer"):
        self.config = config
        self.name = name
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
        message.tokens = tokenize(message.text)

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> WhitespaceTokenizer:
        return cls(config, name)
