"""bench/nlu.py's training files: train only (Protocol A) or, with `--train-with-valid`,
train + valid for the test run (Protocol B), duplicates kept and counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import nlu

TRAIN = """version: "3.1"
nlu:
- intent: alarm_set
  examples: |
    - wake me up
    - set an alarm
- intent: alarm_query
  examples: |
    - which alarms are set
"""
VALID = """version: "3.1"
nlu:
- intent: alarm_set
  examples: |
    - wake me up
    - alarm at six
- intent: alarm_query
  examples: |
    - wake me up
"""


def write_split(directory: Path, train: str, valid: str) -> Path:
    directory.mkdir(parents=True)
    (directory / train).write_text(TRAIN)
    (directory / valid).write_text(VALID)
    return directory


def test_the_test_run_trains_on_the_train_split_only_by_default() -> None:
    assert nlu.training_files("hwu64", "test") == ("jianguoz-split-train.yml",)
    assert nlu.training_files("snips", "test") == ("train.yml",)
    assert nlu.training_files("hwu64", "valid") == ("jianguoz-split-train.yml",)


def test_train_with_valid_adds_the_validation_split_to_the_test_runs_training() -> None:
    assert nlu.training_files("hwu64", "test", with_valid=True) == (
        "jianguoz-split-train.yml",
        "jianguoz-split-valid.yml",
    )
    assert nlu.training_files("snips", "test", with_valid=True) == ("train.yml", "valid.yml")
    # BANKING77's original train split already is DialoGLUE's train + valid.
    assert nlu.training_files("banking77", "test", with_valid=True) == ("train.yml",)


def test_train_with_valid_is_refused_where_the_validation_split_is_scored() -> None:
    with pytest.raises(ValueError, match="--split test"):
        nlu.training_files("hwu64", "valid", with_valid=True)


def test_the_files_are_concatenated_and_duplicates_between_them_counted_and_kept(
    tmp_path: Path,
) -> None:
    directory = write_split(tmp_path / "hwu64", "train.yml", "valid.yml")

    data, duplicates = nlu.read_training(directory, ("train.yml", "valid.yml"))

    assert [(e.text, e.intent) for e in data.examples] == [
        ("wake me up", "alarm_set"),
        ("set an alarm", "alarm_set"),
        ("which alarms are set", "alarm_query"),
        ("wake me up", "alarm_set"),
        ("alarm at six", "alarm_set"),
        ("wake me up", "alarm_query"),
    ]
    # "wake me up" as alarm_set is in both files; as alarm_query it is another labelled
    # sentence.
    assert duplicates == 1


def test_one_file_has_no_duplicates_between_files(tmp_path: Path) -> None:
    directory = write_split(tmp_path / "banking77", "train.yml", "valid.yml")

    data, duplicates = nlu.read_training(directory, ("train.yml",))

    assert len(data.examples) == 3
    assert duplicates == 0
