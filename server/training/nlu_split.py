"""`botserver data split nlu`: NLU data split into training and test files (per intent, so
that every intent with two examples or more is in both), written back as Rasa 3 YAML."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.nlu.training_data import Example, NLUTrainingData
from server.training.nlu_yaml import nlu_yaml
from server.training.yaml_io import dump_yaml

TRAINING_FILE = "training_data.yml"
TEST_FILE = "test_data.yml"
NLG_PREFIX = "nlg_"  # the responses' files: nlg_training_data.yml, nlg_test_data.yml


def split_nlu(
    data: NLUTrainingData, training_fraction: float, seed: int | None = None
) -> tuple[NLUTrainingData, NLUTrainingData]:
    """Training and test data: `training_fraction` of each intent's examples (at least one
    and, with two or more, not all) for training. Synonyms, regexes, lookups and responses
    go to both, as in Rasa (`write_split` writes the responses each part needs)."""
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
) -> tuple[Path, ...]:
    """Writes `training_data.yml` and `test_data.yml` into `out`, and, as Rasa, the responses
    their retrieval intents need into `nlg_training_data.yml` and `nlg_test_data.yml` beside
    them (a file only when it has some). Returns the files written."""
    train, test = split_nlu(data, training_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for part, name in ((train, TRAINING_FILE), (test, TEST_FILE)):
        path = out / name
        path.write_text(nlu_yaml(replace(part, responses={})), encoding="utf-8")
        written.append(path)
    for part, name in ((train, TRAINING_FILE), (test, TEST_FILE)):
        responses = _needed_responses(data.responses, part.examples)
        if responses:
            path = out / f"{NLG_PREFIX}{name}"
            document = {"version": "3.1", "responses": responses}
            path.write_text(dump_yaml(document), encoding="utf-8")
            written.append(path)
    return tuple(written)


def _needed_responses(
    responses: dict[str, list[dict[str, Any]]], examples: list[Example]
) -> dict[str, list[dict[str, Any]]]:
    """The responses of the retrieval intents (`faq/hours`: `utter_faq/hours`) of `examples`
    that have a text, as Rasa writes beside each part: not those no example asks for."""
    needed = {f"utter_{e.intent}" for e in examples if e.intent and "/" in e.intent}
    return {
        key: variations
        for key, variations in responses.items()
        if key in needed and any(isinstance(v, dict) and v.get("text") for v in variations)
    }
