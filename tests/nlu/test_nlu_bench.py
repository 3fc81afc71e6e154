"""bench/nlu.py on an evenly spread subset of the validation splits: it trains, scores and
writes its JSON (the full benchmark is run by hand; see docs/benchmarks.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared_data import SHARED

ROOT = Path(__file__).resolve().parents[2]
DATA = SHARED / "nlu"


@pytest.mark.timeout(120)
@pytest.mark.skipif(not DATA.exists(), reason="the shared NLU datasets are not on this machine")
def test_the_nlu_benchmark_runs_on_a_subset(tmp_path: Path) -> None:
    out = tmp_path / "nlu.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "nlu.py"),
            "--datasets",
            "snips,hwu64",
            "--split",
            "valid",
            "--limit",
            "200",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["machine"]["nproc"] >= 1 and report["machine"]["ram_gib"] > 0
    snips, hwu = report["results"]
    assert snips["split"] == "valid" and snips["train_examples"] <= 200
    assert snips["intent_accuracy"] > 0.7 and snips["entity_micro_f1"] > 0.3
    assert hwu["intent_accuracy"] > 0.1 and "entity_micro_f1" not in hwu
    assert 0 < hwu["parse_ms_p50"] <= hwu["parse_ms_p99"]
