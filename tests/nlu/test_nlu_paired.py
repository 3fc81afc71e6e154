"""bench/nlu_paired.py: two bench/nlu.py reports of one split compared sentence by sentence."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.nlu_paired import main  # noqa: E402


def report(path: Path, misses: list[list[str]], split: str = "test") -> Path:
    result = {
        "dataset": "hwu64",
        "split": split,
        "test_examples": 20,
        "intent_errors": len(misses),
        "intent_misses": misses,
    }
    path.write_text(json.dumps({"results": [result]}))
    return path


def test_sentences_right_in_only_one_run_are_counted_with_their_sign_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A repeated sentence is wrong once in a and twice in b: one of its copies counts for a.
    wake = ["wake me at 7", "alarm_set", "alarm_query"]
    others = [[f"sentence {i}", "iot_cleaning", "alarm_set"] for i in range(5)]
    code = main(
        [
            str(report(tmp_path / "a.json", [wake])),
            str(report(tmp_path / "b.json", [wake, wake, *others])),
        ]
    )
    line = capsys.readouterr().out.splitlines()[1].split()
    assert code == 0
    assert line[:2] == ["hwu64", "test"] and line[2:5] == ["1", "/", "7"]
    # Right only in a: the second copy and the five others; only in b: none.
    assert line[5:8] == ["6", "/", "0"]
    assert line[8] == "0.031"  # 2 / 2**6


def test_runs_of_different_splits_are_refused_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = report(tmp_path / "a.json", [], split="test")
    b = report(tmp_path / "b.json", [], split="valid")
    assert main([str(a), str(b)]) == 2
    assert "did not score the same sentences" in capsys.readouterr().err


def test_a_report_without_misses_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"results": [{"dataset": "hwu64", "split": "test"}]}))
    assert main([str(old), str(report(tmp_path / "b.json", []))]) == 2
    assert "before bench/nlu.py kept its misses" in capsys.readouterr().err
