"""EntityGazetteerFeaturizer: the entity values of the training examples, found again in a
message (longest match on token boundaries), as one small block for the intent classifier:
each entity type, weighted by its share of the matched value's annotations."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from server.errors import ModelError
from server.nlu.message import Message
from server.nlu.params import number
from server.nlu.training_data import NLUTrainingData

Values = dict[tuple[str, ...], Counter[str]]
# The values as a tree of words: a word -> the values going on with it; None -> the types of
# the value ending there.
Trie = dict[str | None, Any]

# A longer value is left out: it hardly recurs word for word, and each word of a message
# costs up to this many steps (a pasted 300-word paragraph made a 50,000-word message cost
# 18 s of CPU before the values became a tree).
MAX_VALUE_WORDS = 32


def value_trie(values: Values) -> Trie:
    """The tree `gazetteer_types` walks, of `values`."""
    root: Trie = {}
    for words, types in values.items():
        node = root
        for word in words:
            node = node.setdefault(word, {})
        node[None] = types
    return root


def gazetteer_types(words: list[str], values: Trie) -> dict[str, float]:
    """The types of the known values in `words`, each match the longest one starting at its
    word (the scan resumes after it), each type weighted by its share of that value's
    annotations."""
    found: dict[str, float] = {}
    i = 0
    while i < len(words):
        node = values
        types: Counter[str] | None = None
        end = i + 1
        for j in range(i, len(words)):
            child = node.get(words[j])
            if child is None:
                break
            node = child
            if node.get(None):
                types, end = node[None], j + 1
        if types:
            total = types.total()
            for kind, count in types.items():
                found[kind] = found.get(kind, 0.0) + count / total
        i = end
    return found


def _annotated_values(message: Message, example: Any) -> list[tuple[tuple[str, ...], str]]:
    out = []
    for entity in example.entities:
        words = tuple(
            t.text.lower() for t in message.tokens if t.start < entity.end and t.end > entity.start
        )
        if 0 < len(words) <= MAX_VALUE_WORDS:
            out.append((words, entity.entity))
    return out


class EntityGazetteerFeaturizer:
    """Learns every training entity value (as tokens) with its types' counts. A training
    message sees only the values of the other `folds` (message i is in fold i mod `folds`),
    so that its block looks like an unseen message's; a parse sees every value. The block
    (one column per type) is L2-normalised and scaled by `weight`."""

    def __init__(self, config: dict[str, Any], name: str = "EntityGazetteerFeaturizer"):
        self.config = config
        self.name = name
        self.folds = number(config, "folds", 5, name, whole=True, minimum=2)
        self.weight = number(config, "weight", 1.0, name, minimum=0)
        self.types_: list[str] = []
        self.values_: Values = {}
        self._trie: Trie = {}
        self._columns: dict[str, int] = {}  # each type's column in the block

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        annotated = [_annotated_values(m, e) for m, e in zip(messages, data.examples, strict=True)]
        # Folds beyond one per message hold no message (`folds: 10**9` built them all).
        folds = min(self.folds, max(len(messages), 2))
        per_fold: list[Values] = [{} for _ in range(folds)]
        everything: Values = {}
        for i, found in enumerate(annotated):
            for words, kind in found:
                everything.setdefault(words, Counter())[kind] += 1
                for fold in range(folds):
                    if fold != i % folds:
                        per_fold[fold].setdefault(words, Counter())[kind] += 1
        self._set(everything)
        if not self.types_:
            return
        tries = [value_trie(values) for values in per_fold]
        for i, message in enumerate(messages):
            message.blocks.append(self._block(message, tries[i % folds]))

    def _set(self, values: Values) -> None:
        self.values_ = values
        self.types_ = sorted({kind for kinds in values.values() for kind in kinds})
        self._columns = {kind: i for i, kind in enumerate(self.types_)}
        self._trie = value_trie(values)

    def process(self, message: Message) -> None:
        if not self.types_:
            return  # idle: no training example holds an entity
        message.blocks.append(self._block(message, self._trie))

    def _block(self, message: Message, values: Trie) -> tuple[list[int], list[float], int]:
        words = [t.text.lower() for t in message.tokens]
        found = gazetteer_types(words, values)
        columns = self._columns
        pairs = sorted((columns[k], v) for k, v in found.items() if k in columns)
        norm = math.sqrt(sum([v * v for _, v in pairs]))
        if norm == 0:
            return [], [], len(self.types_)
        scale = self.weight / norm
        return [c for c, _ in pairs], [v * scale for _, v in pairs], len(self.types_)

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {
            "values": [
                [list(words), dict(sorted(kinds.items()))]
                for words, kinds in sorted(self.values_.items())
            ]
        }

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> EntityGazetteerFeaturizer:
        featurizer = cls(config, name)
        rows = state.get("values")
        values: Values = {}
        if not isinstance(rows, list):
            raise ModelError(f"{name}: malformed entity values")
        for row in rows:
            if not (
                isinstance(row, list)
                and len(row) == 2
                and isinstance(row[0], list)
                and row[0]
                and all(isinstance(w, str) for w in row[0])
                and isinstance(row[1], dict)
                and all(
                    isinstance(k, str) and isinstance(c, int) and c > 0 for k, c in row[1].items()
                )
            ):
                raise ModelError(f"{name}: malformed entity values")
            if len(row[0]) > MAX_VALUE_WORDS:
                raise ModelError(
                    f"{name}: an entity value of {len(row[0])} words (training keeps values "
                    f"of at most {MAX_VALUE_WORDS})"
                )
            values[tuple(row[0])] = Counter(row[1])
        featurizer._set(values)
        return featurizer
