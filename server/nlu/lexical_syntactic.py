"""LexicalSyntacticFeaturizer: word-shape, affix and position features of each token and
its neighbours, pooled into one L2-normalised sparse sentence block."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from server.errors import InvalidConfig, ModelError
from server.nlu.message import Message, Token
from server.nlu.state_files import expect, read_json, write_json


def _token_features(token: Token) -> list[str]:
    word = token.text
    features = [f"suffix3={word[-3:].lower()}", f"prefix3={word[:3].lower()}"]
    if word.isupper():
        features.append("upper")
    if word.istitle():
        features.append("title")
    if any(c.isdigit() for c in word):
        features.append("digit")
    return features


def sentence_features(tokens: list[Token]) -> list[str]:
    features: list[str] = []
    last = len(tokens) - 1
    for position, token in enumerate(tokens):
        own = _token_features(token)
        if position == 0:
            features.extend(f"BOS:{f}" for f in own)
        if position == last:
            features.extend(f"EOS:{f}" for f in own)
        features.extend(own)
    return features


# The feature names Rasa's LexicalSyntacticFeaturizer knows (its `features` windows).
RASA_FEATURES = frozenset(
    {"BOS", "EOS", "low", "upper", "title", "digit", "prefix5", "prefix2", "suffix5"}
    | {"suffix3", "suffix2", "suffix1", "pos", "pos2"}
)


def check_features(config: dict[str, Any], name: str) -> None:
    """Rasa refuses a `features` value that is not a list of windows of known names; so do
    we, though the features we compute are a fixed set (see docs/differences-from-rasa.md)."""
    windows = config.get("features")
    if windows is None:
        return
    if not isinstance(windows, list) or not all(isinstance(w, list) for w in windows):
        raise InvalidConfig(
            f"{name}: 'features' must be a list of lists of feature names, such as "
            f"[[low, title], [BOS, EOS, low, prefix5], [low, title]], not {windows!r}"
        )
    for window in windows:
        for feature in window:
            if not isinstance(feature, str) or feature not in RASA_FEATURES:
                raise InvalidConfig(
                    f"{name}: unknown feature {feature!r} in 'features'; use some of "
                    + ", ".join(sorted(RASA_FEATURES))
                )


class LexicalSyntacticFeaturizer:
    def __init__(self, config: dict[str, Any], name: str = "LexicalSyntacticFeaturizer"):
        check_features(config, name)
        self.config = config
        self.name = name
        self.vocabulary_: dict[str, int] = {}

    def train(self, messages: list[Message], data: Any) -> None:
        seen: set[str] = set()
        all_features = [sentence_features(m.tokens) for m in messages]
        for features in all_features:
            seen.update(features)
        self.vocabulary_ = {f: i for i, f in enumerate(sorted(seen))}
        for message, features in zip(messages, all_features, strict=True):
            message.blocks.append(self._block(features))

    def process(self, message: Message) -> None:
        message.blocks.append(self._block(sentence_features(message.tokens)))

    def _block(self, features: list[str]) -> tuple[list[int], list[float], int]:
        counts = Counter(self.vocabulary_[f] for f in features if f in self.vocabulary_)
        indices = sorted(counts)
        norm = math.sqrt(sum(c * c for c in counts.values())) or 1.0
        return indices, [counts[i] / norm for i in indices], len(self.vocabulary_)

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        write_json(directory, f"{prefix}vocabulary.json", list(self.vocabulary_))
        return {}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> LexicalSyntacticFeaturizer:
        featurizer = cls(config, name)
        names = expect(read_json(directory, f"{prefix}vocabulary.json"), list, "vocabulary")
        if not all(isinstance(n, str) for n in names):
            raise ModelError(f"{name}: vocabulary must hold strings")
        featurizer.vocabulary_ = {n: i for i, n in enumerate(names)}
        return featurizer
