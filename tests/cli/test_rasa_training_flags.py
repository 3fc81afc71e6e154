"""Rasa's `rasa train` flags in a team's CI scripts: each is taken, and does what it can here."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.models.archive import read_metadata


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--num-threads", "4"], None),
        (["--endpoints", "endpoints.yml"], None),
        (["--persist-nlu-data"], "--persist-nlu-data"),
        (["--debug-plots"], "--debug-plots"),
        (["--finetune"], "--finetune: botserver has no incremental training"),
        (["--finetune", "models", "--epoch-fraction", "0.5"], "--finetune models"),
        (["--epoch-fraction", "0.5"], "--epoch-fraction"),
    ],
    ids=[
        "num-threads",
        "endpoints",
        "persist-nlu-data",
        "debug-plots",
        "finetune",
        "finetune-model",
        "epoch-fraction",
    ],
)
def test_rasas_training_flags_are_taken(
    run_cli, starter_copy: Path, argv: list[str], said: str | None
) -> None:
    """Before, exit 2: `unrecognized arguments: --finetune`, or for a flag with a value
    `argument WHAT: invalid choice: '4' (choose from 'core', 'nlu')`."""
    result = run_cli("train", *argv, cwd=starter_copy)
    assert result.code == 0, result.err
    assert "invalid choice" not in result.err
    if said is not None:
        assert said in result.err
    for part in ("core", "nlu"):
        assert run_cli("train", part, *argv, cwd=starter_copy).code == 0
        if argv[0] != "--finetune":  # it takes an optional model: `core` would be one
            assert run_cli("train", *argv, part, cwd=starter_copy).code == 0


def test_augmentation_sets_how_many_glued_stories_the_ml_policy_learns_from(
    run_cli, starter_copy: Path
) -> None:
    result = run_cli(
        "train", "--augmentation", "0", "--fixed-model-name", "plain", cwd=starter_copy
    )
    assert result.code == 0, result.err
    policies = read_metadata(starter_copy / "models" / "plain.tar.gz")["policies"]
    [ml] = [p for p in policies if p["name"] == "MLPolicy"]
    assert ml["augmentation_factor"] == 0
    assert all("augmentation_factor" not in p for p in policies if p is not ml)
    # Another factor is another model; the same factor is up to date.
    assert run_cli("train", "--dry-run", "--augmentation", "0", cwd=starter_copy).code == 0
    assert run_cli("train", "--dry-run", "--augmentation", "7", cwd=starter_copy).code == 1
    result = run_cli("train", "core", "--augmentation", "0", "--out", "dialogue", cwd=starter_copy)
    assert result.code == 0, result.err
    [archive] = (starter_copy / "dialogue").glob("core-*.tar.gz")
    [ml] = [p for p in read_metadata(archive)["policies"] if p["name"] == "MLPolicy"]
    assert ml["augmentation_factor"] == 0


def test_a_negative_augmentation_is_refused(run_cli, starter_copy: Path) -> None:
    result = run_cli("train", "--augmentation", "-1", cwd=starter_copy)
    assert result.code == 2
    assert "--augmentation: must be 0 or more" in result.err


def test_data_given_twice_reads_both(run_cli, starter_copy: Path) -> None:
    """`--data a --data b` trained on b alone (argparse's last value wins, as in Rasa): here
    the model had no NLU and no stories, without a word."""
    result = run_cli(
        "train", "--data", "data/nlu.yml", "--data", "data/stories.yml", "data/rules.yml",
        "--fixed-model-name", "both", "--force", cwd=starter_copy,
    )  # fmt: skip
    assert result.code == 0, result.err
    metadata = read_metadata(starter_copy / "models" / "both.tar.gz")
    assert metadata["training_type"] == "both"  # the NLU too
    validate = run_cli("data", "validate", "--data", "data/nlu.yml", "--data", "data/stories.yml",
                       "data/rules.yml", cwd=starter_copy)  # fmt: skip
    assert validate.code == 0, validate.err
    assert "has no examples" not in validate.err


def test_a_part_after_finetune_is_not_read_as_the_model(run_cli, starter_copy: Path) -> None:
    """`--finetune` takes an optional model: `train --finetune core` read `core` as the model
    and trained the whole project."""
    before = sorted((starter_copy / "models").iterdir())
    result = run_cli("train", "--finetune", "core", "--force", cwd=starter_copy)
    assert result.code == 2
    assert "botserver train core --finetune" in result.err
    assert sorted((starter_copy / "models").iterdir()) == before
