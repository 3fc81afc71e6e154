"""SkipGramFeaturizer: pairs of words a few words apart (`put~on` in "put <title> on
<playlist>"), TF-IDF weighted and L2-normalised, as one sparse block for the intent
classifier: the frame of a sentence around an entity of any length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.errors import InvalidConfig
from server.nlu.count_vectors import CountVectorsFeaturizer
from server.nlu.message import Message, Token
from server.nlu.params import number
from server.nlu.training_data import NLUTrainingData


def skip_grams(words: list[str], min_gap: int, max_gap: int) -> list[str]:
    """`a~b` for each pair of words whose positions differ by `min_gap` to `max_gap`
    (adjacent words have a gap of 1: the word bigrams already hold them)."""
    count = len(words)
    return [
        f"{words[i]}~{words[j]}"
        for i in range(count)
        for j in range(i + min_gap, min(count, i + max_gap + 1))
    ]


class SkipGramFeaturizer:
    """Learns a vocabulary of skip-grams and their IDF weights (a word CountVectorsFeaturizer
    over the pairs); `weight` scales the block against the other featurizers' blocks."""

    def __init__(self, config: dict[str, Any], name: str = "SkipGramFeaturizer"):
        self.config = config
        self.name = name
        self.min_gap = number(config, "min_gap", 2, name, whole=True, minimum=1)
        self.max_gap = number(config, "max_gap", 4, name, whole=True, minimum=1)
        if self.max_gap < self.min_gap:
            raise InvalidConfig(f"{name}: need min_gap <= max_gap")
        self.weight = number(config, "weight", 1.0, name, minimum=0)
        self.vectors_ = self._vectors()

    def _vectors(self) -> CountVectorsFeaturizer:
        return CountVectorsFeaturizer(
            {"analyzer": "word", "min_ngram": 1, "max_ngram": 1, "lowercase": False},
            f"{self.name}.vectors",
        )

    def _pairs(self, message: Message) -> Message:
        words = [t.text.lower() for t in message.tokens]
        pairs = skip_grams(words, self.min_gap, self.max_gap)
        return Message("", [Token(p, 0, 0) for p in pairs])

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        pairs = [self._pairs(m) for m in messages]
        self.vectors_ = self._vectors()
        self.vectors_.train(pairs, data)
        for message, features in zip(messages, pairs, strict=True):
            message.blocks.append(self._scaled(features))

    def process(self, message: Message) -> None:
        pairs = self._pairs(message)
        self.vectors_.process(pairs)
        message.blocks.append(self._scaled(pairs))

    def _scaled(self, pairs: Message) -> tuple[list[int], list[float], int]:
        indices, values, width = pairs.blocks[-1]
        if self.weight == 1:
            return indices, values, width
        return indices, [v * self.weight for v in values], width

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return self.vectors_.state(directory, prefix)

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> SkipGramFeaturizer:
        featurizer = cls(config, name)
        vectors = featurizer._vectors()
        featurizer.vectors_ = CountVectorsFeaturizer.from_state(
            vectors.config, state, directory, prefix, vectors.name
        )
        return featurizer
