"""`botserver data split nlu`: NLU data split into training and test files (per intent, so
that every intent with two examples or more is in both), written back as Rasa 3 YAML."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from server.nlu.training_data import Example, NLUTrainingData
from server.training.nlu_yaml import nlu_yaml

TRAINING_FILE = "training_data.yml"
TEST_FILE = "test_data.yml"


def split_nlu(
    data: NLUTrainingData, training_fraction: float, seed: int | None = None
) -> tuple[NLUTrainingData, NLUTrainingData]:
    """Training and test data: `training_fraction` of each intent's examples (at least one
    and, with two or more, not all) for training. Synonyms, regexes, lookups and responses
    go to both, as in Rasa."""
    rng = random.Random(seed)
    by_intent: dict[str | None, list[Example]] = defaultdict(list)
    for example in data.examples:
        by_intent[example.intent].append(example)
    train: list[Example] = []
    test: list[Example] = []
    for examples in by_intent.values():
        shuffled = list(examples)
        rng.shuffle(shuffled)
        count = len(shuffled)
        keep = min(max(round(count * training_fraction), 1), max(count - 1, 1))
        train += shuffled[:keep]
        test += shuffled[keep:]

    def with_examples(examples: list[Example]) -> NLUTrainingData:
        return NLUTrainingData(
            examples=examples,
            synonyms=dict(data.synonyms),
            synonym_sources=dict(data.synonym_sources),
            synonym_texts={key: list(texts) for key, texts in data.synonym_texts.items()},
            regexes=list(data.regexes),
            lookups={name: list(items) for name, items in data.lookups.items()},
            responses=dict(data.responses),
        )

    return with_examples(train), with_examples(test)


def write_split(
    data: NLUTrainingData, out: Path, training_fraction: float, seed: int | None = None
) -> tuple[Path, Path]:
    """Writes `training_data.yml` and `test_data.yml` into `out`."""
    train, test = split_nlu(data, training_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / TRAINING_FILE, out / TEST_FILE)
    for part, path in zip((train, test), paths, strict=True):
        path.write_text(nlu_yaml(part), encoding="utf-8")
    return paths
