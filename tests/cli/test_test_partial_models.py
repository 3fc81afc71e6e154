"""`botserver test` on a model of one part (`train nlu`, `train core`): the part it lacks is
not tested, as in Rasa, and saying so, rather than failing every story or intent."""

from __future__ import annotations

import json
from pathlib import Path


def _train(run_cli, project: Path, part: str) -> Path:
    assert run_cli("train", part, "--out", f"{part}-models", cwd=project).code == 0
    [archive] = (project / f"{part}-models").glob("*.tar.gz")
    return archive


def test_an_nlu_only_model_tests_the_nlu_and_skips_the_stories(run_cli, starter_copy: Path) -> None:
    """Before: every test story failed (the model has no dialogue), exit 1 with
    --fail-on-prediction-errors."""
    model = str(_train(run_cli, starter_copy, "nlu"))
    result = run_cli("test", "-m", model, "--fail-on-prediction-errors", cwd=starter_copy)
    assert result.code == 0, result.err
    assert "no dialogue" in result.err
    assert (starter_copy / "results" / "intent_report.json").is_file()
    assert not (starter_copy / "results" / "story_report.json").exists()
    core = run_cli("test", "core", "-m", model, "--out", "core-results", cwd=starter_copy)
    assert core.code == 1
    assert "error:" in core.err and "no dialogue" in core.err
    assert not (starter_copy / "core-results" / "story_report.json").exists()


def test_a_core_only_model_tests_the_stories_and_skips_the_nlu(run_cli, starter_copy: Path) -> None:
    """Before: an intent_report.json of a model that understands no text (every intent
    wrong)."""
    model = str(_train(run_cli, starter_copy, "core"))
    result = run_cli("test", "-m", model, cwd=starter_copy)
    assert result.code == 0, result.err
    assert "no NLU" in result.err
    assert (starter_copy / "results" / "story_report.json").is_file()
    assert not (starter_copy / "results" / "intent_report.json").exists()
    # Without an NLU, the stories' user texts are not tested end to end: no intent rows,
    # every one "right", in story_report.json (the actions are its rows, as before).
    report = json.loads((starter_copy / "results" / "story_report.json").read_text())
    assert "utter_greet" in report
    assert "greet" not in report
    nlu = run_cli("test", "nlu", "-m", model, "--out", "nlu-results", cwd=starter_copy)
    assert nlu.code == 1
    assert "error:" in nlu.err and "no NLU" in nlu.err
