"""The cost of one parse with and without this stop's NLU components (the gazetteer, the
entity-type featurizer and its carrier, the scenario term): profiled calls for a short
message and for a long one, each parsed once to warm caches and once under cProfile.
SNIPS (100 examples an intent) for the entity components, HWU64's train split (20 an
intent) for the scenario term; `--tagged` parses a message of N CRF-tagged words instead
("3 stars" repeated: one rating entity each).

    python bench/nlu_parse_cost.py [--words 10000] [--tagged]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.nlu.pipeline import NLUPipeline  # noqa: E402
from server.nlu.training_data import NLUTrainingData  # noqa: E402
from server.training.nlu_yaml import read_nlu_file  # noqa: E402

DATA = Path("/work/shared/nlu")
BASE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CRFEntityExtractor"},
]
TYPES = {"name": "EntityTypeFeaturizer", "folds": 3}


def _sample(path: Path, per_intent: int) -> NLUTrainingData:
    data = read_nlu_file(path)
    taken: dict[str | None, int] = {}
    kept = []
    for example in data.examples:
        taken[example.intent] = taken.get(example.intent, 0) + 1
        if taken[example.intent] <= per_intent:
            kept.append(example)
    data.examples = kept
    return data


def _cost(pipeline: NLUPipeline, text: str) -> str:
    pipeline.parse(text)
    profile = cProfile.Profile()
    started = time.process_time()
    profile.enable()
    result = pipeline.parse(text)
    profile.disable()
    seconds = time.process_time() - started
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    return f"{calls:,} calls, {len(result['entities']):,} entities, {seconds:.2f} s CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=10_000)
    parser.add_argument("--tagged", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    snips = _sample(DATA / "snips" / "rasa-yaml" / "train.yml", 100)
    hwu = _sample(DATA / "hwu64" / "rasa-yaml" / "jianguoz-split-train.yml", 20)
    runs: list[tuple[str, NLUTrainingData, list[dict[str, Any]], str, list[str]]] = [
        ("baseline", snips, [], "add the weeknd to my chill playlist", ["play", "the", "weeknd"]),
        ("+gazetteer", snips, [{"name": "EntityGazetteerFeaturizer"}], "", []),
        ("+entity types", snips, [TYPES], "", []),
        ("+entity types, carrier", snips, [{**TYPES, "carrier_weight": 0.5}], "", []),
        ("baseline (HWU64)", hwu, [], "wake me up at seven tomorrow", ["wake", "me", "up"]),
        ("+scenario_weight 1", hwu, [], "", []),
    ]
    short, words = "", [""]
    for name, data, extra, text, pattern in runs:
        short, words = text or short, pattern or words
        classifier: dict[str, Any] = {"name": "IntentClassifier"}
        if name.startswith("+scenario"):
            classifier["scenario_weight"] = 1
        base = BASE if data is snips else BASE[:2]
        pipeline = NLUPipeline.train(data, base + extra + [classifier])
        long = " ".join(["3 stars"] * (args.words // 2)) if args.tagged else ""
        long = long or " ".join((words * args.words)[: args.words])
        print(f"{name:24s} short: {_cost(pipeline, short)}; long: {_cost(pipeline, long)}")


if __name__ == "__main__":
    main()
