"""Benchmark the NLU pipeline on SNIPS, BANKING77 and HWU64 (standard test splits):
intent accuracy, entity F1, training time and parse latency.

    python bench/nlu.py [--datasets snips,banking77,hwu64] [--out bench/results/nlu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.nlu.evaluation import entity_report, predict  # noqa: E402
from server.nlu.pipeline import NLUPipeline  # noqa: E402
from server.training.nlu_yaml import read_nlu_file  # noqa: E402

DATA = ROOT.parent / "shared" / "nlu"
if not DATA.exists():
    DATA = Path("/work/shared/nlu")

# The standard splits: (train file, test file) under <dataset>/rasa-yaml/.
SPLITS = {
    "snips": ("train.yml", "test.yml"),
    "banking77": ("train.yml", "test.yml"),
    "hwu64": ("jianguoz-split-train.yml", "jianguoz-split-test.yml"),
}

PIPELINE = [
    {"name": "WhitespaceTokenizer"},
    {"name": "RegexFeaturizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "word", "min_ngram": 1, "max_ngram": 2},
    {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 6},
    {"name": "DIETClassifier"},
    {"name": "EntitySynonymMapper"},
]


def run(name: str) -> dict:
    train_file, test_file = SPLITS[name]
    train = read_nlu_file(DATA / name / "rasa-yaml" / train_file)
    test = read_nlu_file(DATA / name / "rasa-yaml" / test_file)
    started = time.perf_counter()
    pipeline = NLUPipeline.train(train, PIPELINE)
    train_seconds = time.perf_counter() - started
    predictions = predict(pipeline, test)
    hits = [
        e.base_intent == p for e, p in zip(predictions.examples, predictions.intents, strict=True)
    ]
    result = {
        "dataset": name,
        "train_examples": len(train.examples),
        "test_examples": len(test.examples),
        "intent_accuracy": sum(hits) / len(hits),
        "train_seconds": train_seconds,
    }
    if any(e.entities for e in test.examples):
        report = entity_report(predictions, "DIETClassifier")
        result["entity_micro_f1"] = report["micro avg"]["f1-score"]
    latencies = []
    texts = [e.text for e in test.examples[:500]]
    for text in texts * 2:
        t0 = time.perf_counter()
        pipeline.parse(text)
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    result["parse_ms_p50"] = latencies[len(latencies) // 2]
    result["parse_ms_p99"] = latencies[int(len(latencies) * 0.99)]
    return result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="snips,banking77,hwu64")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "nlu.json"))
    args = parser.parse_args()
    results = [run(name.strip()) for name in args.datasets.split(",") if name.strip()]
    print(
        f"{'dataset':<10} {'intent acc':>10} {'entity F1':>9} {'train s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7}"
    )
    for r in results:
        f1 = f"{r['entity_micro_f1'] * 100:.2f}" if "entity_micro_f1" in r else "-"
        print(
            f"{r['dataset']:<10} {r['intent_accuracy'] * 100:>9.2f}% {f1:>9} "
            f"{r['train_seconds']:>8.1f} {r['parse_ms_p50']:>7.3f} {r['parse_ms_p99']:>7.3f}"
        )
    import os

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "pipeline": PIPELINE,
    }
    out.write_text(json.dumps({"machine": meta, "results": results}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
