"""`botserver shell nlu`, and `shell` on an NLU-only model: each message's parse, as Rasa's."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

NLU_PROMPT = "Next message:"


def _parses(out: str) -> list[dict]:
    """The JSON objects printed after the greeting line, between the prompts."""
    body = out.split("\n", 1)[1]
    chunks = [c.strip() for c in body.split(NLU_PROMPT)]
    return [json.loads(c) for c in chunks if c]


def test_shell_nlu_prints_each_messages_parse(
    run_cli, moodbot_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `unrecognized arguments: nlu`, exit 2."""
    monkeypatch.setattr("sys.stdin", io.StringIO("hello there\nI am sad\n"))
    result = run_cli("shell", "nlu", "-m", str(moodbot_model), cwd=tmp_path)
    assert result.code == 0, result.err
    assert result.out.startswith("NLU model loaded.")
    greeting, sad = _parses(result.out)
    assert greeting["text"] == "hello there"
    assert greeting["intent"]["name"] == "greet"
    assert sad["intent"]["name"] == "mood_unhappy"
    assert {"entities", "intent_ranking"} <= greeting.keys()
    assert not (tmp_path / "botserver.db").exists()  # no conversation is kept


def test_shell_on_an_nlu_only_model_prints_the_parse(
    run_cli, starter_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Rasa's shell on an NLU-only model. Before: nothing but the prompts."""
    assert run_cli("train", "nlu", "--out", "nlu-models", cwd=starter_copy).code == 0
    [archive] = (starter_copy / "nlu-models").glob("*.tar.gz")
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    result = run_cli("shell", "-m", str(archive), cwd=starter_copy)
    assert result.code == 0, result.err
    [parse] = _parses(result.out)
    assert parse["intent"]["name"] == "greet"
