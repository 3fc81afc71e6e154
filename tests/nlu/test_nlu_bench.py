"""bench/nlu.py on an evenly spread subset of the validation splits: it trains, scores and
writes its JSON (the full benchmark is run by hand; see docs/benchmarks.md)."""

import json
import runpy
import sys
from pathlib import Path

import pytest

from tests.shared_data import SHARED

ROOT = Path(__file__).resolve().parents[2]
DATA = SHARED / "nlu"


def run_bench(out: Path, *options: str) -> dict:
    """Run bench/nlu.py with `options`, writing to `out`, as its command line does (the
    script run as `__main__`); its JSON report. In this process: a process of its own
    re-imported NumPy, SciPy and scikit-learn, a CPU-second a run."""
    script = str(ROOT / "bench" / "nlu.py")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [script, *options, "--out", str(out)])
        patch.setattr(sys, "path", list(sys.path))  # the script puts the repository first
        runpy.run_path(script, run_name="__main__")
    return json.loads(out.read_text())


@pytest.mark.timeout(300)
@pytest.mark.skipif(not DATA.exists(), reason="the shared NLU datasets are not on this machine")
def test_the_nlu_benchmark_runs_on_a_subset(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path / "nlu.json", "--datasets", "snips,hwu64", "--split", "valid", "--limit", "200"
    )
    assert report["machine"]["nproc"] >= 1 and report["machine"]["ram_gib"] > 0
    snips, hwu = report["results"]
    assert snips["split"] == "valid" and snips["train_examples"] <= 200
    assert snips["intent_accuracy"] > 0.7 and snips["entity_micro_f1"] > 0.3
    assert hwu["intent_accuracy"] > 0.1 and "entity_micro_f1" not in hwu
    # Each wrong sentence is kept (text, gold, predicted), for bench/nlu_paired.py.
    assert hwu["intent_errors"] == round((1 - hwu["intent_accuracy"]) * hwu["test_examples"])
    assert len(hwu["intent_misses"]) == hwu["intent_errors"] > 0
    assert all(gold != predicted for _, gold, predicted in hwu["intent_misses"])
    assert 0 < hwu["parse_ms_p50"] <= hwu["parse_ms_p99"]


@pytest.mark.timeout(300)
@pytest.mark.skipif(not DATA.exists(), reason="the shared NLU datasets are not on this machine")
def test_cross_validation_mode_scores_every_training_sentence_once(tmp_path: Path) -> None:
    options = ["--datasets", "snips", "--split", "cv", "--folds", "3", "--limit", "150"]
    report = run_bench(tmp_path / "cv.json", *options)
    (snips,) = report["results"]
    assert snips["split"] == "cv" and snips["folds"] == 3
    assert len(snips["fold_accuracies"]) == 3 and snips["train_examples"] <= 150
    errors = round((1 - snips["intent_accuracy"]) * snips["train_examples"])
    assert snips["intent_errors"] == errors
    assert snips["intent_accuracy"] > 0.6 and snips["entity_micro_f1"] > 0.2


@pytest.mark.timeout(300)
@pytest.mark.skipif(not DATA.exists(), reason="the shared NLU datasets are not on this machine")
def test_entity_f1_of_a_pipeline_naming_the_crf_extractor() -> None:
    # Before: the bench scored DIETClassifier's entities only, 0.00 for such a pipeline.
    from bench import nlu

    named = nlu.PIPELINES["static_neighbours_chars_entity_types_sgd"]
    assert nlu.entity_extractor(named) == "CRFEntityExtractor"
    # Scored on the CRF and the classifier alone: the static embeddings' MiniLM token table
    # (5,000 tokens whatever the data) and the jackknifed CRFs of that pipeline were nine
    # tenths of this test's time, and the entity score reads neither.
    crf_first = nlu.PIPELINE[:4] + [
        {"name": "CRFEntityExtractor", "algorithm": "l2sgd"},
        {"name": "DIETClassifier", "entity_recognition": False},
        {"name": "EntitySynonymMapper"},
    ]
    snips = nlu.run("snips", crf_first, "valid", limit=150)
    assert snips["intent_accuracy"] > 0.6 and snips["entity_micro_f1"] > 0.3
