"""`botserver train core`: the dialogue trained alone, and served as Rasa serves such a model."""

from __future__ import annotations

import tarfile
from pathlib import Path

import httpx
import pytest

from server.api.server import ServerOptions, build_app
from server.models.archive import read_metadata


def _archives(project: Path, pattern: str = "*.tar.gz") -> list[Path]:
    return sorted((project / "models").glob(pattern))


async def test_a_core_model_answers_intent_messages_as_rasa_does(
    run_cli, starter_copy: Path
) -> None:
    """Before, `train core` was "invalid choice: 'core'" (exit 2)."""
    result = run_cli(
        "train", "core", "-d", "domain.yml", "-s", "data/stories.yml", "data/rules.yml",
        cwd=starter_copy,
    )  # fmt: skip
    assert result.code == 0, result.err
    [archive] = _archives(starter_copy, "core-*.tar.gz")  # Rasa's name for a core model
    assert f"Your model is trained and saved at 'models/{archive.name}'" in result.out
    with tarfile.open(archive) as tar:
        members = tar.getnames()
    assert "components/policies/ensemble.json" in members
    assert not any(m.startswith("components/nlu") for m in members)
    assert read_metadata(archive)["training_type"] == "core"

    app = build_app(
        ServerOptions(
            model_path=archive,
            enable_api=True,
            endpoints={"tracker_store": {"type": "in_memory"}},
            models_dir=starter_copy / "models",
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            replies = await client.post(
                "/webhooks/rest/webhook", json={"sender": "ana", "message": "/greet"}
            )
            assert replies.status_code == 200
            assert replies.json()[0]["text"].startswith("Hello! I'm the starter bot.")

            parsed = (await client.post("/model/parse", json={"text": "/goodbye"})).json()
            assert parsed["intent"] == {"name": "goodbye", "confidence": 1.0}
            # Without NLU, text is not understood: no intent, as Rasa's core-only model.
            text = (await client.post("/model/parse", json={"text": "hello there"})).json()
            assert text["intent"] == {"name": None, "confidence": 0.0}
            # In Rasa's order: before, `text` came last.
            assert list(text) == ["text", "intent", "entities"]
            assert text["text"] == "hello there"


def test_train_after_train_core_trains_the_nlu_too(run_cli, starter_copy: Path) -> None:
    for archive in _archives(starter_copy):
        archive.unlink()
    core = run_cli("train", "core", cwd=starter_copy)
    assert core.code == 0, core.err
    again = run_cli("train", "core", cwd=starter_copy)
    assert "Nothing changed since the last training" in again.out

    # The same files, but the dialogue-only model is not the full model.
    assert run_cli("train", "--dry-run", cwd=starter_copy).code == 1
    full = run_cli("train", cwd=starter_copy)
    assert full.code == 0, full.err
    assert "Your model is trained" in full.out
    newest = max(_archives(starter_copy), key=lambda p: p.stat().st_mtime)
    assert not newest.name.startswith("core-")
    assert read_metadata(newest)["training_type"] == "both"


def test_fixed_model_name_and_out(run_cli, starter_copy: Path) -> None:
    result = run_cli(
        "train", "core", "--out", "dialogue", "--fixed-model-name", "moves", cwd=starter_copy
    )
    assert result.code == 0, result.err
    assert (starter_copy / "dialogue" / "moves.tar.gz").is_file()


def test_train_nlu_archives_are_named_as_rasa_names_them(run_cli, starter_copy: Path) -> None:
    result = run_cli("train", "nlu", "--out", "nlu-models", cwd=starter_copy)
    assert result.code == 0, result.err
    [archive] = (starter_copy / "nlu-models").glob("*.tar.gz")
    assert archive.name.startswith("nlu-")  # it had no prefix, as a full model


E2E_STORY = (
    'version: "3.1"\nstories:\n- story: typed\n  steps:\n  - user: hi\n  - action: utter_greet\n'
)


@pytest.mark.parametrize(
    ("files", "argv", "message"),
    [
        ({}, ["-d", "nowhere.yml"], "error: nowhere.yml: domain file not found"),
        ({}, ["-s", "nowhere"], "error: nowhere: training data not found"),
        ({"d.yml": "intents: [\n"}, ["-d", "d.yml"], "error: d.yml:2: invalid YAML"),
        ({"d.yml": "\n"}, ["-d", "d.yml"], "error: d.yml: the domain is empty"),
        (
            {"s/nlu.yml": 'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n'},
            ["-s", "s"],
            "error: s/nlu.yml: no stories or rules: give them with --stories",
        ),
        (
            {"e2e.yml": E2E_STORY},
            ["-s", "e2e.yml"],
            "error: e2e.yml:5: story 'typed' is end-to-end (it holds the text of a message); "
            "train it with `botserver train`",
        ),
    ],
    ids=["no-domain", "no-stories", "broken-domain", "empty-domain", "only-nlu", "e2e-story"],
)
def test_bad_input_is_one_error_line_and_exit_1(
    run_cli, starter_copy: Path, files: dict[str, str], argv: list[str], message: str
) -> None:
    for name, text in files.items():
        (starter_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (starter_copy / name).write_text(text)
    before = _archives(starter_copy)
    result = run_cli("train", "core", *argv, cwd=starter_copy)
    assert result.code == 1
    assert message in result.err
    assert "Traceback" not in result.err
    assert _archives(starter_copy) == before


def test_flags_given_before_core_are_kept(run_cli, starter_copy: Path) -> None:
    """Before, `core`'s own defaults replaced them: `train --out elsewhere core` wrote to
    models/, and `train -d other.yml core` trained on domain.yml."""
    (starter_copy / "other.yml").write_text((starter_copy / "domain.yml").read_text())
    (starter_copy / "domain.yml").unlink()
    result = run_cli(
        "train", "-d", "other.yml", "--out", "elsewhere", "--fixed-model-name", "m", "core",
        cwd=starter_copy,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert (starter_copy / "elsewhere" / "m.tar.gz").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train", "--dry-run", "core"],
            "--dry-run applies to `botserver train` (the whole "
            "model), not to `botserver train core`, which reads -s/--stories",
        ),
        (["train", "--signing-key", "k.pem", "core"], "--signing-key applies to `botserver"),
    ],
    ids=["dry-run", "signing-key"],
)
def test_whole_model_flags_before_a_part_are_refused(
    run_cli, starter_copy: Path, argv: list[str], message: str
) -> None:
    before = _archives(starter_copy)
    result = run_cli(*argv, cwd=starter_copy)
    assert result.code == 1
    assert message in result.err
    assert _archives(starter_copy) == before


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (["train", "--data", "data", "core"], "botserver train core -s data"),
        (["train", "--data", "a.yml", "b.yml", "nlu", "-v"], "botserver train nlu -u a.yml b.yml"),
        (
            ["data", "validate", "--data", "data", "stories", "--max-history", "3"],
            "botserver data validate stories --data data",
        ),
    ],
    ids=["train-core", "train-nlu", "validate-stories"],
)
def test_a_part_after_data_is_not_read_as_a_data_path(
    run_cli, starter_copy: Path, argv: list[str], meant: str
) -> None:
    """Before, `--data` took the part as one more path: `train --data data core` trained the
    whole model on `data` and `core` and failed with "core: training data not found"."""
    before = _archives(starter_copy)
    result = run_cli(*argv, cwd=starter_copy)
    assert result.code == 2
    assert "after --data was read as a data path (--data takes one or more)" in result.err
    assert f"name it first: {meant}\n" in result.err
    assert _archives(starter_copy) == before


def test_a_data_path_named_like_a_part_is_still_data(run_cli, starter_copy: Path) -> None:
    (starter_copy / "data").rename(starter_copy / "core")
    result = run_cli("train", "--data", "core", "--fixed-model-name", "m", cwd=starter_copy)
    assert result.code == 0, result.err
    assert (starter_copy / "models" / "m.tar.gz").is_file()
