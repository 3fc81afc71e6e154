"""A project without stories or rules trains an NLU-only model, served as Rasa 3.6 serves one:
messages are understood and logged, no action is predicted or run."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.models.archive import read_metadata
from tests.cli.model_client import model_client


def _without_dialogue(project: Path) -> None:
    (project / "data" / "stories.yml").unlink()
    (project / "data" / "rules.yml").unlink()


def _intent(event: dict) -> str | None:
    return (event.get("parse_data") or {}).get("intent", {}).get("name")


def test_train_without_stories_or_rules_trains_an_nlu_model_as_rasa(
    run_cli, starter_copy: Path
) -> None:
    """Rasa 3.6: "No stories present. Just a Rasa NLU model will be trained.", and an
    `nlu-` archive. Before: a full model whose dialogue was the default rules alone."""
    _without_dialogue(starter_copy)
    trained = run_cli("train", "--out", "nlu_models", cwd=starter_copy)
    assert trained.code == 0, trained.err
    assert "No stories present. Just a Rasa NLU model will be trained." in trained.err
    [archive] = (starter_copy / "nlu_models").glob("*.tar.gz")
    assert archive.name.startswith("nlu-")
    metadata = read_metadata(archive)
    assert metadata["training_type"] == "nlu"
    assert metadata["policies"] == []
    # The whole domain is kept (Rasa's NLU-only model has it): `execute` can utter its responses.
    assert "utter_greet" in metadata["domain"]["responses"]

    again = run_cli("train", "--out", "nlu_models", cwd=starter_copy)
    assert again.code == 0, again.err
    assert len(list((starter_copy / "nlu_models").glob("*.tar.gz"))) == 1  # up to date
    assert run_cli("train", "--dry-run", "--out", "nlu_models", cwd=starter_copy).code == 0
    # `botserver test core` names the model's making, not `train nlu` alone.
    tested = run_cli("test", "core", "-m", str(archive), cwd=starter_copy)
    assert tested.code == 1
    assert "no dialogue (it was trained without stories or rules" in tested.err


def test_an_nlu_only_model_stays_up_to_date_whatever_its_unused_policies(
    run_cli, starter_copy: Path
) -> None:
    """The policies of an NLU-only project are not trained: a policy botserver lacks does
    not stop its training (past validation), nor the next `botserver train` that finds the
    model up to date (before: it trained, then "the policy 'NoSuchPolicy' is not provided")."""
    _without_dialogue(starter_copy)
    config = starter_copy / "config.yml"
    config.write_text(
        config.read_text().split("policies:")[0] + "policies:\n  - name: NoSuchPolicy\n"
    )
    for _ in range(2):
        trained = run_cli("train", "--skip-validation", "--out", "nlu_models", cwd=starter_copy)
        assert trained.code == 0, trained.err
    assert len(list((starter_copy / "nlu_models").glob("nlu-*.tar.gz"))) == 1


@pytest.mark.parametrize(
    ("domain", "refusal"),
    [
        ("version: '3.1'\n", "Encountered empty domain during validation"),
        (None, "error: domain.yml: domain file not found"),
    ],
    ids=["empty", "missing"],
)
def test_train_with_an_empty_domain_trains_the_nlu_alone_as_rasa(
    run_cli, starter_copy: Path, domain: str | None, refusal: str
) -> None:
    """Validation refuses an empty or missing domain, as Rasa's; past it
    (`--skip-validation`) the rules are left out and the NLU trained alone, as Rasa 3.6
    does (before, a missing domain stopped it: "domain file not found")."""
    if domain is None:
        (starter_copy / "domain.yml").unlink()
    else:
        (starter_copy / "domain.yml").write_text(domain)
    (starter_copy / "data" / "stories.yml").unlink()  # its slot would stop Rasa too
    refused = run_cli("train", "--out", "nlu_models", cwd=starter_copy)
    assert refused.code == 1
    assert refusal in refused.err
    trained = run_cli("train", "--skip-validation", "--out", "nlu_models", cwd=starter_copy)
    assert trained.code == 0, trained.err
    assert "Core training was skipped because no valid domain file was found" in trained.err
    assert "is used in rule" not in trained.err  # the rules are not trained
    [archive] = (starter_copy / "nlu_models").glob("*.tar.gz")
    assert archive.name.startswith("nlu-")
    assert read_metadata(archive)["training_type"] == "nlu"
    # A dry run reads the project as the training did (before, a missing domain was an
    # error to it): up to date.
    dry = run_cli(
        "train", "--skip-validation", "--dry-run", "--out", "nlu_models", cwd=starter_copy
    )
    assert dry.code == 0, dry.err


def test_train_without_nlu_data_names_the_core_model_as_rasa(run_cli, starter_copy: Path) -> None:
    (starter_copy / "data" / "nlu.yml").unlink()
    trained = run_cli("train", "--out", "core_models", cwd=starter_copy)
    assert trained.code == 0, trained.err
    assert "No NLU data present. Just a Rasa Core model will be trained." in trained.err
    [archive] = (starter_copy / "core_models").glob("*.tar.gz")
    assert archive.name.startswith("core-")
    assert read_metadata(archive)["training_type"] == "core"
    tested = run_cli("test", "nlu", "-m", str(archive), "--nlu", "data", cwd=starter_copy)
    assert tested.code == 1
    assert "no NLU (it was trained without NLU examples" in tested.err


@pytest.mark.parametrize("command", [("train",), ("train", "nlu")], ids=["train", "train-nlu"])
async def test_an_nlu_only_model_logs_messages_and_runs_no_action(
    run_cli, starter_copy: Path, command: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """As Rasa's processor with an NLU model: the message is parsed and logged after the
    session start, the bot says nothing (before: the default rules ran, a `/restart`
    restarted the conversation)."""
    if command == ("train",):
        _without_dialogue(starter_copy)
    trained = run_cli(*command, "--out", "nlu_models", cwd=starter_copy)
    assert trained.code == 0, trained.err
    logging.getLogger().addHandler(caplog.handler)  # `train` set up the CLI's logging
    [archive] = (starter_copy / "nlu_models").glob("*.tar.gz")
    async with model_client(archive) as client:
        for text in ("hello", "/restart"):
            replies = await client.post(
                "/webhooks/rest/webhook", json={"sender": "ana", "message": text}
            )
            assert replies.status_code == 200
            assert replies.json() == []
        tracker = (await client.get("/conversations/ana/tracker")).json()
        kinds = [(e["event"], e.get("name") or _intent(e)) for e in tracker["events"]]
        assert kinds == [
            ("action", "action_session_start"),
            ("session_started", None),
            ("action", "action_listen"),
            ("user", "greet"),
            ("user", "restart"),
        ]
        assert "No dialogue model (an NLU-only model)" in caplog.text
        assert caplog.text.count("No dialogue model") == 1  # once per model, not per turn

        # What needs a prediction is refused, and changes nothing.
        for path, body in (
            ("/conversations/ana/predict", None),
            ("/conversations/ana/trigger_intent", {"name": "greet"}),
            ("/model/predict", []),
        ):
            refused = await client.post(path, json=body)
            assert refused.status_code == 409, (path, refused.text)
            assert refused.json()["reason"] == "Conflict"
            assert "NLU-only" in refused.json()["message"]
        # Its stories cannot be tested either: there is no dialogue to predict them (before:
        # a 200 scoring the default rules as if they were the model's).
        story = "stories:\n- story: s\n  steps:\n  - intent: greet\n  - action: utter_greet\n"
        refused = await client.post(
            "/model/test/stories", content=story, headers={"Content-Type": "text/yml"}
        )
        assert refused.status_code == 409, refused.text
        assert "NLU-only" in refused.json()["message"]
        after = (await client.get("/conversations/ana/tracker")).json()
        assert after["events"] == tracker["events"]

        # A named action runs, as in Rasa.
        executed = await client.post("/conversations/ana/execute", json={"name": "action_restart"})
        assert executed.status_code == 200, executed.text
        every = await client.get("/conversations/ana/tracker", params={"include_events": "ALL"})
        events = every.json()["events"]
        assert [e["event"] for e in events[-2:]] == ["action", "restart"]

        # A reminder set on the conversation is dropped when due, with a warning (as a
        # turn, it would run no action; before, it failed inside the reminder's timer).
        due = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        reminder = {"event": "reminder", "intent": "greet", "date_time": due, "name": "r"}
        posted = await client.post(
            "/conversations/ana/tracker/events",
            params={"execute_side_effects": "true"},
            json=[reminder],
        )
        assert posted.status_code == 200, posted.text
        for _ in range(100):
            if "reminder 'r' for ana dropped" in caplog.text:
                break
            await asyncio.sleep(0.1)
        assert "reminder 'r' for ana dropped: the model is NLU-only" in caplog.text

        parsed = (await client.post("/model/parse", json={"text": "hello"})).json()
        assert parsed["intent"]["name"] == "greet"


async def test_status_names_each_model_kind_and_put_model_swaps_between_them(
    run_cli, starter_copy: Path
) -> None:
    """`GET /status` says what the loaded model holds (Rasa's status does not: botserver's
    own key); PUT /model swaps a full model for an NLU-only one and back, the turns
    following the model."""
    models = starter_copy / "models"
    [full] = models.glob("*.tar.gz")
    core = run_cli("train", "core", "--out", "models", cwd=starter_copy)
    assert core.code == 0, core.err
    [core_model] = models.glob("core-*.tar.gz")
    _without_dialogue(starter_copy)
    assert run_cli("train", "--out", "models", cwd=starter_copy).code == 0
    [nlu_model] = models.glob("nlu-*.tar.gz")
    async with model_client(full) as client:
        for archive, kind, replies in (
            (full, "both", True),
            (nlu_model, "nlu", False),
            (core_model, "core", True),
            (full, "both", True),
        ):
            put = await client.put("/model", json={"model_file": str(archive)})
            assert put.status_code == 204, put.text
            status = (await client.get("/status")).json()
            assert (status["model_file"], status["training_type"]) == (archive.name, kind)
            turn = await client.post(
                "/webhooks/rest/webhook", json={"sender": kind, "message": "/greet"}
            )
            assert bool(turn.json()) is replies, (kind, turn.json())


def test_an_empty_domain_without_nlu_data_trains_nothing(run_cli, starter_copy: Path) -> None:
    """Only the NLU would be trained, and there is none: an error, not a model knowing nothing."""
    (starter_copy / "domain.yml").write_text("version: '3.1'\n")
    (starter_copy / "data" / "nlu.yml").unlink()
    trained = run_cli("train", "--skip-validation", "--out", "empty", cwd=starter_copy)
    assert trained.code == 1
    assert "the domain is empty, so only the NLU would be trained" in trained.err
    assert not (starter_copy / "empty").exists()
