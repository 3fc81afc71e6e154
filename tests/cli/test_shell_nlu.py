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


FAQ_NLU = """version: "3.1"
nlu:
- intent: greet
  examples: |
    - hi
    - hello there
    - good morning
- intent: faq/ask_name
  examples: |
    - what is your name
    - who are you
    - tell me your name
- intent: faq/ask_age
  examples: |
    - how old are you
    - what is your age
    - when were you born
"""
FAQ_DOMAIN = """version: "3.1"
intents: [greet, faq]
responses:
  utter_faq/ask_name:
  - text: I am Bot.
  utter_faq/ask_age:
  - text: Younger than you think.
"""


def test_train_nlu_reads_the_retrieval_responses_of_the_domain_as_rasa(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rasa train nlu -d domain.yml`: the ResponseSelector answers with the domain's
    responses. Before: exit 2, `unrecognized arguments: -d domain.yml`."""
    (tmp_path / "nlu.yml").write_text(FAQ_NLU)
    (tmp_path / "domain.yml").write_text(FAQ_DOMAIN)
    trained = run_cli("train", "nlu", "-u", "nlu.yml", "-d", "domain.yml", cwd=tmp_path)
    assert trained.code == 0, trained.err
    monkeypatch.setattr("sys.stdin", io.StringIO("what is your name\n"))
    result = run_cli("shell", "nlu", cwd=tmp_path)
    assert result.code == 0, result.err
    [parse] = _parses(result.out)
    selected = parse["response_selector"]["default"]["response"]
    assert selected["intent_response_key"] == "faq/ask_name"
    assert selected["responses"] == [{"text": "I am Bot."}]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "nlu", "-u", "nlu.yml", "-d", "domian.yml"],
        # Before: "-d/--domain applies to `botserver train` (the whole model), not to
        # `botserver train nlu`"; Rasa's `train nlu` takes it.
        ["train", "-d", "domian.yml", "nlu", "-u", "nlu.yml"],
    ],
)
def test_train_nlu_with_a_domain_that_is_not_there(
    run_cli, tmp_path: Path, argv: list[str]
) -> None:
    (tmp_path / "nlu.yml").write_text(FAQ_NLU)
    result = run_cli(*argv, cwd=tmp_path)
    assert result.code == 1
    assert result.err.strip() == "error: --domain domian.yml: no such file or directory"


@pytest.mark.parametrize("nlu", [FAQ_NLU, FAQ_NLU.split("- intent: faq/ask_name")[0]])
def test_train_nlu_trains_beside_a_domain_yml_it_cannot_read_when_not_named(
    run_cli, tmp_path: Path, nlu: str
) -> None:
    """Rasa's `train nlu` reads no domain without `-d`; botserver reads domain.yml when it is
    there for the retrieval responses. One that does not read (being edited, or of a form
    botserver refuses) is a warning, and the NLU model is trained: before, exit 1 naming the
    domain, for NLU data with retrieval intents or without."""
    (tmp_path / "nlu.yml").write_text(nlu)
    (tmp_path / "domain.yml").write_text('version: "3.1"\nresponses:\n  utter_faq/ask_name: [\n')
    trained = run_cli("train", "nlu", "-u", "nlu.yml", cwd=tmp_path)
    assert trained.code == 0, trained.err
    assert list((tmp_path / "models").glob("*.tar.gz"))
    has_retrieval_intents = "faq/" in nlu
    assert ("domain.yml" in trained.err) is has_retrieval_intents
    named = run_cli("train", "nlu", "-u", "nlu.yml", "-d", "domain.yml", "--force", cwd=tmp_path)
    assert named.code == 1  # named, as in Rasa: read, and its mistakes are errors
    assert "domain.yml:4: invalid YAML" in named.err
