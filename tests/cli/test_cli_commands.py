"""Each `botserver` command's happy path and its bad-input path, run in process."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server import RASA_COMPAT_VERSION, __version__
from tests.cli.model_client import model_client

COMMANDS = [
    ["init"],
    ["train"],
    ["train", "nlu"],
    ["train", "core"],
    ["run"],
    ["shell"],
    ["test"],
    ["visualize"],
    ["data", "validate"],
    ["data", "validate", "stories"],
    ["data", "split", "nlu"],
    ["data", "split", "stories"],
    ["data", "convert", "nlu"],
    ["data", "migrate"],
    ["prune"],
    ["export"],
]

REPO = Path(__file__).resolve().parents[2]  # the subprocess runs this checkout


def test_version_is_laid_out_as_rasas(run_cli) -> None:
    """`rasa --version`'s lines, the Rasa version being the one botserver serves. Before, the
    one line `botserver 0.1.0`: a bug report lacked the Python and system it ran on, and
    `rasa --version | grep "Rasa Version"` found nothing."""
    import platform

    result = run_cli("--version")
    assert result.code == 0
    lines = result.out.splitlines()
    # Rasa's six lines first, in its order: a script reading the first line (`rasa --version
    # | head -1`) reads the Rasa version; botserver's own line comes after them, where Rasa
    # prints a plugin's (Rasa Pro's). Before, botserver's line was the first.
    assert lines[0] == f"Rasa Version      :         {RASA_COMPAT_VERSION}"
    assert lines[1] == f"Minimum Compatible Version: {RASA_COMPAT_VERSION}"
    assert lines[2].startswith("Rasa SDK Version  :         ")
    assert lines[3] == f"Python Version    :         {platform.python_version()}"
    assert lines[4] == f"Operating System  :         {platform.platform()}"
    assert lines[5] == f"Python Path       :         {sys.executable}"
    assert lines[6] == f"botserver Version :         {__version__}"
    assert len(lines) == 7


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["PYTHONUNBUFFERED=1", "buffered"])
def test_version_read_by_a_pipe_that_closes_early_ends_without_a_traceback(
    unbuffered: str,
) -> None:
    """`botserver --version | head -1`, as docs/configuration.md shows it: `head` closes the
    pipe after the first line. Before, with PYTHONUNBUFFERED=1 (the Dockerfile sets it), the
    later lines met the closed pipe: a BrokenPipeError traceback and exit 1, one run in two.
    Here the pipe is closed before anything is written, so every write meets it."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": unbuffered}
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import sys, cli; sys.exit(cli.main(['--version']))"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr.decode()) == (0, "")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_says_each_default_once(run_cli, command: list[str]) -> None:
    """Before, a flag whose help says its default in words got argparse's too: `--config`
    read `(default: config.yml, or Rasa's defaults without it) (default: None)`."""
    help_text = " ".join(run_cli(*command, "--help").out.split())
    assert re.findall(r"\(default: [^)]*\) \(default: [^)]*\)", help_text) == []


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_examples(run_cli, command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.code == 0
    assert f"usage: botserver {' '.join(command)}" in result.out
    if command != ["train", "nlu"]:
        assert "examples:" in result.out
        assert "  botserver " in result.out.split("examples:")[1]


def test_no_command_prints_help(run_cli) -> None:
    result = run_cli()
    assert result.code == 1
    assert "COMMAND" in result.out and "botserver init --no-prompt" in result.out


def test_unknown_flag_fails_before_anything_starts(run_cli) -> None:
    result = run_cli("run", "--enable-apii")
    assert result.code == 2
    assert "unrecognized arguments: --enable-apii" in result.err
    assert "usage: botserver run" in result.err
    assert "did you mean --enable-api?" in result.err


def test_a_flag_in_the_wrong_case_is_told_the_flag_meant(run_cli) -> None:
    """Before: `unrecognized arguments: --ENABLE-API` and no "did you mean"."""
    result = run_cli("run", "--ENABLE-API")
    assert result.code == 2
    assert "unrecognized arguments: --ENABLE-API (did you mean --enable-api?)" in result.err


@pytest.mark.parametrize(
    ("argv", "unknown"),
    [
        (["test", "--stories-at", "http://x/stories.yml"], "--stories-at http://x/stories.yml"),
        (["train", "--epochs", "5"], "--epochs 5"),
        (["data", "validate", "--max-histroy", "3"], "--max-histroy 3"),
        (["shell", "--model-dir", "models"], "--model-dir models"),
    ],
    ids=["test", "train", "data-validate", "shell"],
)
def test_an_unknown_flag_with_a_value_is_named(run_cli, argv: list[str], unknown: str) -> None:
    """Before, the value was read as the command's part: `argument what: invalid choice:
    'http://x/stories.yml' (choose from 'core', 'nlu')`, naming no flag."""
    result = run_cli(*argv)
    assert result.code == 2
    assert f"unrecognized arguments: {unknown}" in result.err
    assert "invalid choice" not in result.err


COMPARISON = "Rasa's comparison mode (several configs, each trained on parts of the data)"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["test", "core", "-r", "2"], f"-r is of {COMPARISON}"),
        (["test", "nlu", "--runs", "2"], f"--runs is of {COMPARISON}"),
        (["test", "nlu", "-p", "10", "20"], f"-p is of {COMPARISON}"),
        (["test", "--percentages", "10"], f"--percentages is of {COMPARISON}"),
        (["train", "core", "--percentages", "0", "5"], f"--percentages is of {COMPARISON}"),
        (["train", "core", "--runs=2"], f"--runs is of {COMPARISON}"),
        (["test", "core", "--evaluate-model-directory"], f"is of {COMPARISON}"),
        (["test", "core", "-c", "a.yml", "b.yml"], f"-c takes one config: {COMPARISON}"),
        (["train", "core", "--config", "a.yml", "b.yml"], f"takes one config: {COMPARISON}"),
        (["test", "--url", "http://x/stories.yml"], "--url (Rasa's, deprecated) fetched"),
    ],
)
def test_a_rasa_flag_botserver_lacks_says_so(
    run_cli, tmp_path: Path, argv: list[str], said: str
) -> None:
    """Before: argparse's bare `unrecognized arguments: -r 2`, read as a typo."""
    for name in ("a.yml", "b.yml"):
        (tmp_path / name).write_text("language: en\n")
    result = run_cli(*argv, cwd=tmp_path)
    assert result.code == 2
    [error] = [line for line in result.err.splitlines() if ": error: " in line]
    assert said in error, error
    assert "unrecognized arguments" not in error


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["interactive"], "GET /conversations/<id>/story"),
        (["interactive", "core", "-m", "models"], "GET /conversations/<id>/story"),
        (["x"], "/inspect"),
        (["telemetry", "enable"], "sends no telemetry"),
        (["evaluate", "markers", "all"], "not offered"),
    ],
    ids=["interactive", "interactive-core", "x", "telemetry", "evaluate"],
)
def test_a_rasa_command_botserver_lacks_says_so(run_cli, argv: list[str], said: str) -> None:
    """Before: `invalid choice: 'interactive' (choose from 'init', ...)`, as for a typo."""
    result = run_cli(*argv)
    assert result.code == 2
    assert f"`rasa {argv[0]}` has no botserver equivalent" in result.err
    assert said in result.err
    assert "invalid choice" not in result.err


def test_bad_flag_value_is_explained(run_cli) -> None:
    result = run_cli("run", "--port", "fivethousand")
    assert result.code == 2
    assert "argument -p/--port: invalid int value: 'fivethousand'" in result.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "-p", "70000"], "argument -p/--port: must be from 1 to 65535, not 70000"),
        (["run", "-p", "0"], "argument -p/--port: must be from 1 to 65535, not 0"),
        (["run", "--request-max-size", "-1"], "--request-max-size: must be 0 or more, not -1"),
        (["test", "nlu", "--cross-validation", "-f", "1"], "-f/--folds: must be 2 or more"),
        (["prune", "--older-than-days", "-1"], "must be a number above 0, not -1"),
        (["prune", "--older-than-days", "nan"], "must be a number above 0, not nan"),
    ],
    ids=["port-too-high", "port-zero", "negative-body-size", "one-fold", "negative-age", "nan-age"],
)
def test_a_flag_value_out_of_range_is_refused(
    run_cli, tmp_path: Path, argv: list[str], message: str
) -> None:
    # Were the value accepted, the command would stop at this file (exit 1), not serve.
    (tmp_path / "endpoints.yml").write_text("tracker_store: [\n")
    result = run_cli(*argv, cwd=tmp_path)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train", "--out", "{file}"], "--out"),
        (["train", "nlu", "--out", "{file}/models"], "--out"),
        (["test", "--out", "{file}"], "--out"),
        (["init", "--no-prompt", "--init-dir", "{file}"], "--init-dir"),
    ],
    ids=["train", "train-nlu", "test", "init"],
)
def test_an_output_path_under_a_file_fails_before_any_work(
    run_cli, starter_copy: Path, argv: list[str], flag: str
) -> None:
    file = starter_copy / "notes.txt"
    file.write_text("not a directory")
    result = run_cli(*(a.replace("{file}", str(file)) for a in argv), cwd=starter_copy)
    assert result.code == 1
    assert f"{flag} {file}" in result.err and "is a file, not a directory" in result.err
    assert "training" not in result.err  # refused before training, not after
    assert file.read_text() == "not a directory"


@pytest.mark.parametrize("command", [["train"], ["train", "nlu"]], ids=["train", "train-nlu"])
def test_a_fixed_model_name_that_cannot_be_written_fails_before_training(
    run_cli, starter_copy: Path, command: list[str]
) -> None:
    """Before, `--fixed-model-name ../x` (or a name a directory holds) trained the whole model,
    then failed on the name; now it is refused before any training."""
    path_like = run_cli(*command, "--fixed-model-name", "../x", "--force", cwd=starter_copy)
    assert path_like.code == 1
    assert "Invalid fixed model name '../x': use a plain file name" in path_like.err
    assert "training" not in path_like.err

    (starter_copy / "models" / "taken.tar.gz").mkdir()
    taken = run_cli(*command, "--fixed-model-name", "taken", "--force", cwd=starter_copy)
    assert taken.code == 1
    assert "Cannot write the model to models/taken.tar.gz: it is a directory" in taken.err
    assert "training" not in taken.err
    assert not (starter_copy / "x.tar.gz").exists()


def test_a_log_file_that_cannot_be_opened_is_a_clear_error(run_cli, tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("")
    result = run_cli("train", "--log-file", str(tmp_path / "logs" / "out.log"), cwd=tmp_path)
    assert result.code == 1
    assert f"error: --log-file {tmp_path / 'logs' / 'out.log'}: Not a directory" in result.err


def test_more_folds_than_examples_is_a_clear_error(run_cli, starter_copy: Path) -> None:
    result = run_cli("test", "nlu", "--cross-validation", "--folds", "1000", cwd=starter_copy)
    assert result.code == 1
    assert "cannot cross-validate in 1000 folds: the NLU data has" in result.err
    assert "Traceback" not in result.err


def test_init_from_an_installed_wheel_writes_no_python_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip compiles every .py file a wheel installs: an installed botserver's starter
    actions sit beside `__pycache__/*.pyc`, which init copied into the user's project."""
    from server.training import starter

    installed = tmp_path / "site-packages" / "starter_project"
    shutil.copytree(starter.STARTER_DIR, installed)
    cache = installed / "actions" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "actions.cpython-311.pyc").write_bytes(b"\xa7\r\r\n")
    monkeypatch.setattr(starter, "STARTER_DIR", installed)

    written = starter.write_starter_project(tmp_path / "mybot")

    names = sorted(p.relative_to(tmp_path / "mybot").as_posix() for p in written)
    assert "actions/actions.py" in names and "actions/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")], names
    assert not (tmp_path / "mybot" / "actions" / "__pycache__").exists()


def test_init_writes_a_project_and_trains_it(run_cli, tmp_path: Path) -> None:
    result = run_cli("init", "--no-prompt", "--init-dir", "mybot", cwd=tmp_path)
    assert result.code == 0, result.err
    project = tmp_path / "mybot"
    for name in (
        "config.yml",
        "domain.yml",
        "endpoints.yml",
        "credentials.yml",
        "data/nlu.yml",
        "data/stories.yml",
        "data/rules.yml",
        "tests/test_stories.yml",
        "actions/__init__.py",
        "actions/actions.py",
    ):
        assert (project / name).is_file(), name
    # As `rasa init`'s: the folder a Rasa team looks for, saying how rasa-sdk serves it.
    assert "python -m rasa_sdk --actions actions" in (project / "actions/actions.py").read_text()
    assert len(list((project / "models").glob("*.tar.gz"))) == 1
    assert "botserver run --enable-api" in result.out


def test_init_into_a_project_names_the_file_it_would_overwrite(run_cli, tmp_path: Path) -> None:
    """Before: "config.yml already exist(s)"."""
    (tmp_path / "mybot").mkdir()
    (tmp_path / "mybot" / "config.yml").write_text("language: en\n")
    result = run_cli("init", "--no-prompt", "--init-dir", "mybot", cwd=tmp_path)
    assert result.code == 1
    assert "error: mybot/config.yml already exists; choose an empty --init-dir" in result.err


def test_train_skips_unchanged_project_and_force_retrains(run_cli, starter_copy: Path) -> None:
    before = sorted((starter_copy / "models").glob("*.tar.gz"))
    skipped = run_cli("train", cwd=starter_copy)
    assert skipped.code == 0
    assert "Nothing changed since the last training" in skipped.out
    assert "--force" in skipped.out
    assert sorted((starter_copy / "models").glob("*.tar.gz")) == before

    time.sleep(1.1)  # archive names carry the second they were trained
    forced = run_cli("train", "--force", cwd=starter_copy)
    assert forced.code == 0, forced.err
    assert "Your model is trained and saved at" in forced.out
    assert len(list((starter_copy / "models").glob("*.tar.gz"))) == len(before) + 1


def test_train_dry_run_exit_codes_say_whether_to_train(run_cli, starter_copy: Path) -> None:
    models = sorted((starter_copy / "models").glob("*.tar.gz"))
    up_to_date = run_cli("train", "--dry-run", cwd=starter_copy)
    assert (up_to_date.code, up_to_date.err) == (0, "")
    assert "No training required" in up_to_date.out

    assert run_cli("train", "--dry-run", "--force", cwd=starter_copy).code == 8

    nlu = starter_copy / "data" / "nlu.yml"
    nlu.write_text(nlu.read_text() + "    - good evening\n")
    changed = run_cli("train", "--dry-run", cwd=starter_copy)
    assert changed.code == 1
    assert "needs to be retrained" in changed.out
    assert sorted((starter_copy / "models").glob("*.tar.gz")) == models  # nothing trained


@pytest.mark.parametrize(
    "command", [["train"], ["train", "nlu"], ["test", "nlu", "--cross-validation"]]
)
def test_a_config_named_but_missing_is_refused(
    run_cli, starter_copy: Path, command: list[str]
) -> None:
    models = sorted((starter_copy / "models").glob("*.tar.gz"))
    result = run_cli(*command, "--config", "confg.yml", cwd=starter_copy)
    assert result.code == 2  # it used to train with Rasa's default pipeline and policies
    assert "--config: no such file: 'confg.yml'" in result.err
    assert sorted((starter_copy / "models").glob("*.tar.gz")) == models


def test_without_config_yml_validate_and_train_use_rasas_defaults(
    run_cli, starter_copy: Path
) -> None:
    (starter_copy / "config.yml").unlink()
    validated = run_cli("data", "validate", cwd=starter_copy)
    assert validated.code == 0, validated.out
    assert run_cli("train", "--dry-run", cwd=starter_copy).code == 1


def test_a_changed_response_in_the_domain_retrains(run_cli, starter_copy: Path) -> None:
    domain = starter_copy / "domain.yml"
    text = domain.read_text()
    assert "Hello! I'm the starter bot." in text
    domain.write_text(text.replace("Hello! I'm the starter bot.", "Hi, what can I do?"))
    # it said "Nothing changed since the last training" and kept serving the old text
    assert run_cli("train", "--dry-run", cwd=starter_copy).code == 1
    trained = run_cli("train", cwd=starter_copy)
    assert "Your model is trained" in trained.out, trained.out

    domain.write_text(domain.read_text() + "# a comment changes nothing the model holds\n")
    assert run_cli("train", "--dry-run", cwd=starter_copy).code == 0


def test_train_on_a_broken_file_names_file_and_line(run_cli, starter_copy: Path) -> None:
    (starter_copy / "data" / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n  - [oops\n'
    )
    result = run_cli("train", "--force", cwd=starter_copy)
    assert result.code == 1
    assert "nlu.yml:" in result.err
    assert "Traceback" not in result.err


# A value of config.yml or domain.yml that JSON cannot hold, the model keeping both as JSON.
NOT_JSON = {
    "config-date": ("config.yml", "  - name: RulePolicy\n", "    when: 2020-01-01\n", "when"),
    "config-set": ("config.yml", "  - name: RulePolicy\n", "    tags: !!set {a, b}\n", "tags"),
    "config-binary": ("config.yml", "  - name: RulePolicy\n", "    key: !!binary aGk=\n", "key"),
    "slot-initial-value": (
        "domain.yml",
        "    influence_conversation: false\n",
        "    initial_value: 2020-01-01\n",
        "initial_value",
    ),
}


@pytest.mark.parametrize(("file", "after", "line", "key"), NOT_JSON.values(), ids=NOT_JSON.keys())
def test_train_on_a_value_json_cannot_hold_names_file_line_and_key(
    run_cli, starter_copy: Path, file: str, after: str, line: str, key: str
) -> None:
    """Before, a date as a policy's option trained, then failed writing the model's metadata
    with a traceback ("Object of type date is not JSON serializable") and exit 1."""
    path = starter_copy / file
    text = path.read_text()
    assert after in text
    text = text.replace(after, after + line, 1)
    path.write_text(text)
    line_number = text[: text.index(line)].count("\n") + 1
    models_before = sorted((starter_copy / "models").iterdir())
    result = run_cli("train", "--force", cwd=starter_copy)
    assert result.code == 1, result.out
    assert f"error: {file}:{line_number}: the value of '{key}' (" in result.err, result.err
    assert "which a model cannot hold" in result.err
    assert "Traceback" not in result.err
    assert "Your model is trained" not in result.out
    assert sorted((starter_copy / "models").iterdir()) == models_before


NOTHING_TO_TRAIN = {
    "train": ("nlu: []", False),
    "dry-run": ("nlu: []", True),
    # Rasa's reader skips a lookup table without examples (before: an empty model trained).
    "empty-lookup-text": ('nlu:\n- lookup: city\n  examples: ""', False),
    "empty-lookup-list": ("nlu:\n- lookup: city\n  examples: []", False),
}


@pytest.mark.parametrize(("nlu", "dry_run"), NOTHING_TO_TRAIN.values(), ids=NOTHING_TO_TRAIN.keys())
def test_train_a_project_with_nothing_to_train_is_an_error(
    run_cli, tmp_path: Path, nlu: str, dry_run: bool
) -> None:
    """No stories, rules or NLU examples: Rasa 3.6 says "No training data given" and trains
    nothing. Before, `botserver train` wrote a model that knew nothing and said it was
    trained (exit 0)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet]\n')
    (tmp_path / "data" / "nlu.yml").write_text(f'version: "3.1"\n{nlu}\n')
    result = run_cli("train", *(["--dry-run"] if dry_run else []), cwd=tmp_path)
    assert result.code == 1, result.out
    assert "error: data: no training data: no stories, rules or NLU examples" in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_train_validates_the_project_first_as_rasa_does(run_cli, starter_copy: Path) -> None:
    domain = starter_copy / "domain.yml"
    domain.write_text(domain.read_text() + "forms:\n  order_form:\n    required_slots: [nowhere]\n")
    models = sorted((starter_copy / "models").iterdir())

    refused = run_cli("train", "--force", cwd=starter_copy)
    assert refused.code == 1
    assert "form 'order_form' requires slot 'nowhere'" in refused.err
    assert "Project validation completed with errors" in refused.err
    assert "train anyway with --skip-validation" in refused.err
    assert sorted((starter_copy / "models").iterdir()) == models  # nothing trained

    anyway = run_cli("train", "--force", "--skip-validation", cwd=starter_copy)
    assert anyway.code == 0, anyway.err
    assert len(list((starter_copy / "models").iterdir())) == len(models) + 1


@pytest.mark.parametrize("command", [("train", "--force"), ("data", "validate")])
def test_an_intent_listed_twice_in_the_domain_stops_train_and_validate(
    run_cli, starter_copy: Path, command: tuple[str, ...]
) -> None:
    """As Rasa 3.6 refuses such a domain ("Intents are not unique!"). Before, a warning,
    and the project trained (data validate passed)."""
    domain = starter_copy / "domain.yml"
    domain.write_text(domain.read_text().replace("  - thanks\n", "  - thanks\n  - greet\n", 1))
    result = run_cli(*command, cwd=starter_copy)
    assert result.code == 1
    # (data validate says its errors on stdout, train on stderr)
    said = "error: domain.yml:7: intent 'greet' is listed twice: list each intent once"
    assert said in result.out + result.err


@pytest.mark.parametrize("action", ["action_goodbye", "utter_goodby"])
def test_train_stops_on_a_story_action_the_domain_lacks(
    run_cli, starter_copy: Path, action: str
) -> None:
    """As Rasa 3.6's training stops on it (ActionNotFoundException), after its validation
    failed on an `action_` one and only warned of an `utter_` one; `--skip-validation`
    does not get past it, so the refusal does not send the user there. Before, an `utter_`
    typo trained with a warning, and `--skip-validation` trained either."""
    stories = starter_copy / "data" / "stories.yml"
    stories.write_text(stories.read_text().replace("action: utter_goodbye", f"action: {action}", 1))
    models = sorted((starter_copy / "models").iterdir())

    for flags in ([], ["--skip-validation"]):
        refused = run_cli("train", "--force", *flags, cwd=starter_copy)
        assert refused.code == 1
        assert f"error: data/stories.yml:12: action '{action}' is used in story" in refused.err
        assert "skip-validation" not in refused.err
    assert "nothing was trained: add it to the domain, or correct the name" in refused.err
    assert sorted((starter_copy / "models").iterdir()) == models


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        ("domain.yml", "responses:", "responses:\n  utter_broken: hello"),
        ("config.yml", "pipeline:", "pipeline:\n  - name: NoSuchComponent"),
    ],
)
def test_train_offers_no_skip_validation_for_a_file_it_cannot_read(
    run_cli, starter_copy: Path, file: str, old: str, new: str
) -> None:
    """A domain that cannot be read, or a config.yml naming a component there is not,
    stops `--skip-validation` training too: the refusal no longer sends the user there.
    Before, it said "train anyway with --skip-validation", which then failed the same."""
    path = starter_copy / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    refused = run_cli("train", "--force", cwd=starter_copy)
    assert refused.code == 1
    assert "Project validation completed with errors" in refused.err
    assert "skip-validation" not in refused.err
    anyway = run_cli("train", "--force", "--skip-validation", cwd=starter_copy)
    assert anyway.code == 1


def test_train_without_a_domain_still_offers_skip_validation(run_cli, starter_copy: Path) -> None:
    """`--skip-validation` reads a missing domain as an empty one and trains an NLU-only
    model, as Rasa does: the refusal still says so. Before, the hint was dropped for every
    file validation could not read, this one too."""
    (starter_copy / "domain.yml").unlink()
    refused = run_cli("train", "--force", cwd=starter_copy)
    assert refused.code == 1
    assert "domain file not found" in refused.err
    assert "train anyway with --skip-validation" in refused.err
    anyway = run_cli("train", "--force", "--skip-validation", cwd=starter_copy)
    assert anyway.code == 0, anyway.err
    assert any(p.name.startswith("nlu-") for p in (starter_copy / "models").iterdir())


def test_rasas_own_rules_example_trains_despite_its_warnings_as_in_rasa(
    run_cli, tmp_path: Path
) -> None:
    """Rasa's examples/rules labels NLU examples with intents its domain lacks: Rasa 3.6's
    validator warns of them and trains (they fail it only with warnings made failing);
    with --fail-on-validation-warnings it stops, as Rasa does."""
    from tests.shared_data import BOTS

    bot = tmp_path / "rules"
    shutil.copytree(BOTS / "rules", bot)
    trained = run_cli("train", cwd=bot)
    assert trained.code == 0, trained.err
    assert len(list((bot / "models").iterdir())) == 1

    strict = run_cli("train", "--force", "--fail-on-validation-warnings", cwd=bot)
    assert strict.code == 1
    assert "labeled with intent 'chitchat'. This intent is not listed in your domain" in (
        strict.err
    )
    assert "Project validation completed with errors" in strict.err
    assert len(list((bot / "models").iterdir())) == 1  # nothing more trained


def test_fail_on_validation_warnings_refuses_to_train_on_a_warning(
    run_cli, starter_copy: Path
) -> None:
    # An intent without examples, used in no story: as Rasa's, this warning never stops it.
    domain = starter_copy / "domain.yml"
    domain.write_text(domain.read_text().replace("intents:\n", "intents:\n  - unused_intent\n", 1))
    assert run_cli("train", "--force", "--fail-on-validation-warnings", cwd=starter_copy).code == 0
    nlu = starter_copy / "data" / "nlu.yml"
    nlu.write_text(nlu.read_text() + "\n- intent: order_pizza\n  examples: |\n    - a pizza\n")
    assert run_cli("train", "--force", cwd=starter_copy).code == 0  # a warning, as in Rasa

    strict = run_cli("train", "--force", "--fail-on-validation-warnings", cwd=starter_copy)
    assert strict.code == 1
    assert "labeled with intent 'order_pizza'. This intent is not listed in your domain" in (
        strict.err
    )
    assert "intent 'unused_intent' is in the domain but has no examples" in strict.err
    assert "--fail-on-validation-warnings" in strict.err


def test_data_validate_good_project(run_cli, starter_copy: Path) -> None:
    result = run_cli("data", "validate", cwd=starter_copy)
    assert result.code == 0
    assert "The project is valid" in result.out


def test_data_validate_reports_a_deeply_nested_file_instead_of_crashing(
    starter_copy: Path,
) -> None:
    """Found by fuzzing: 50,000 nested lists (100 KB) overflowed libyaml's C stack, and the
    process died of a segmentation fault after a minute of CPU (in the server too, for a
    YAML request body). A subprocess, so that a crash is a failed test, not a dead run."""
    nlu = starter_copy / "data" / "nlu.yml"
    nlu.write_text('version: "3.1"\nnlu:\n- ' + "[" * 50_000 + "]" * 50_000 + "\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "data", "validate"],
        cwd=starter_copy,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-500:]
    assert "data/nlu.yml:3: the document nests more than 100 levels deep" in result.stdout


def test_data_validate_broken_project(run_cli, starter_copy: Path) -> None:
    stories = starter_copy / "data" / "stories.yml"
    stories.write_text(
        stories.read_text()
        + "\n- story: broken\n  steps:\n  - intent: no_such_intent\n  - action: action_nothing\n"
    )
    result = run_cli("data", "validate", cwd=starter_copy)
    assert result.code == 1
    assert "no_such_intent" in result.out
    assert "error: data/stories.yml:41: action 'action_nothing'" in result.out
    assert "Validation failed" in result.out


def _story_naming(starter_copy: Path, *steps: str) -> None:
    stories = starter_copy / "data" / "stories.yml"
    stories.write_text(
        stories.read_text()
        + "\n- story: odd one\n  steps:\n"
        + "".join(f"  - {step}\n" for step in steps)
    )


@pytest.mark.parametrize(
    "step",
    ["intent: no_such_intent", "action: utter_nothing"],
)
def test_a_story_intent_or_response_the_domain_lacks_is_a_warning_as_in_rasa(
    run_cli, starter_copy: Path, step: str
) -> None:
    """Rasa 3.6's `verify_intents_in_stories` and `verify_utterances_in_stories` warn of
    these and fail only with --fail-on-warnings. Before, exit 1 either way."""
    _story_naming(starter_copy, "intent: thanks", step)
    name = step.split(": ")[1]
    assert any(
        line.startswith("warning: data/stories.yml:") and f"'{name}'" in line
        for line in _only_warned(run_cli, starter_copy)
    )


@pytest.mark.parametrize("run_by_a_story", [False, True])
def test_an_utter_action_listed_without_a_response_fails_the_flag_only_when_run(
    run_cli, starter_copy: Path, run_by_a_story: bool
) -> None:
    """Rasa's validator fails --fail-on-warnings on such an action a story runs ("not a valid
    utterance action"); of one no story runs, only its domain reader warns. Before, botserver
    failed the flag on both (an NLG server's response is often listed so)."""
    domain = starter_copy / "domain.yml"
    domain.write_text(domain.read_text() + "actions:\n  - utter_from_nlg\n")
    if run_by_a_story:
        _story_naming(starter_copy, "intent: thanks", "action: utter_from_nlg")
    strict = run_cli("data", "validate", "--fail-on-warnings", cwd=starter_copy)
    assert strict.code == (1 if run_by_a_story else 0), strict.out
    assert "action 'utter_from_nlg' is listed in the domain but has no response" in strict.out


def test_a_story_action_the_domain_lacks_is_an_error_as_in_rasa(
    run_cli, starter_copy: Path
) -> None:
    # Rasa's `verify_actions_in_stories_rules` fails on an `action_` name without the flag.
    _story_naming(starter_copy, "intent: thanks", "action: action_nothing")
    result = run_cli("data", "validate", cwd=starter_copy)
    assert result.code == 1
    assert "error: data/stories.yml:" in result.out
    assert "action 'action_nothing'" in result.out


def test_what_rasas_validator_does_not_check_never_fails_it(run_cli, starter_copy: Path) -> None:
    """A slot, or an action named without `action_`/`utter_`, that the domain lacks: Rasa's
    validator says nothing and passes, --fail-on-warnings too. botserver warns of them and
    passes. Before, exit 1 either way."""
    _story_naming(
        starter_copy, "intent: thanks", "slot_was_set:\n    - no_slot: 1", "action: nothing"
    )
    for flags in ([], ["--fail-on-warnings"]):
        result = run_cli("data", "validate", *flags, cwd=starter_copy)
        assert result.code == 0, result.out
        assert "slot 'no_slot'" in result.out
        assert "action 'nothing'" in result.out
    assert "does not fail on the 2 that Rasa's validator never fails on" in result.out


def test_a_failed_validation_says_which_warnings_failed_it(run_cli, starter_copy: Path) -> None:
    """A Rasa config (DIETClassifier) and one warning about the data: --fail-on-warnings fails
    on the data's warning only, and the summary says so, where it used to read "0 errors, 2
    warnings" as if the config's notice had failed the check too."""
    config = starter_copy / "config.yml"
    config.write_text(config.read_text().replace("IntentClassifier", "DIETClassifier"))
    _story_naming(starter_copy, "intent: thanks", "action: utter_nothing")
    strict = run_cli("data", "validate", "--fail-on-warnings", cwd=starter_copy)
    assert strict.code == 1
    assert strict.out.splitlines()[-1] == (
        "Validation failed: 0 errors, 2 warnings; --fail-on-warnings fails on 1, "
        "not on the 1 about config.yml."
    )


def _only_warned(run_cli, project: Path) -> list[str]:
    """`data validate`'s lines, having checked it passes, and fails with --fail-on-warnings
    (as Rasa's validator does on its warnings)."""
    result = run_cli("data", "validate", cwd=project)
    strict = run_cli("data", "validate", "--fail-on-warnings", cwd=project)
    assert (result.code, strict.code) == (0, 1), result.out
    assert "Validation failed: 0 errors," in strict.out
    return result.out.splitlines()


def test_an_nlu_intent_missing_from_the_domain_is_a_warning_as_in_rasa(
    run_cli, starter_copy: Path
) -> None:
    """Rasa 3.6's words; as in Rasa (its `verify_intents` fails only with
    --fail-on-warnings), exit 0 without the flag. Before, exit 1 either way."""
    nlu = starter_copy / "data" / "nlu.yml"
    nlu.write_text(nlu.read_text() + "\n- intent: order_pizza\n  examples: |\n    - a pizza\n")

    assert (
        "warning: There is a message in the training data labeled with intent 'order_pizza'. "
        "This intent is not listed in your domain. You should need to add that intent to your "
        "domain file!"
    ) in _only_warned(run_cli, starter_copy)


def test_an_intent_no_story_or_rule_uses_is_a_warning_as_in_rasa(
    run_cli, starter_copy: Path
) -> None:
    """Rasa's `verify_intents_in_stories` warns (before, nothing was said), and, as for an
    intent without NLU examples or a response no story uses, keeps its result:
    --fail-on-warnings passes on it. Before, botserver failed it there."""
    nlu = starter_copy / "data" / "nlu.yml"
    nlu.write_text(nlu.read_text() + "\n- intent: order_pizza\n  examples: |\n    - a pizza\n")
    domain = starter_copy / "domain.yml"
    domain.write_text(
        domain.read_text()
        .replace("intents:\n", "intents:\n  - order_pizza\n  - unheard\n", 1)
        .replace("responses:\n", "responses:\n  utter_unused:\n  - text: never said\n", 1)
    )
    unused_at = domain.read_text().splitlines().index("  utter_unused:") + 1

    strict = run_cli("data", "validate", "--fail-on-warnings", cwd=starter_copy)

    assert strict.code == 0, strict.out
    lines = strict.out.splitlines()
    assert "warning: domain.yml:4: intent 'order_pizza' is not used in any story or rule" in lines
    assert [line for line in lines if "is not used in any story" in line] == [
        "warning: domain.yml:4: intent 'order_pizza' is not used in any story or rule",
        "warning: domain.yml:5: intent 'unheard' is not used in any story or rule",
        f"warning: domain.yml:{unused_at}: response 'utter_unused' is "
        "not used in any story or rule",
    ]
    assert "warning: domain.yml:5: intent 'unheard' is in the domain but has no examples" in (
        strict.out
    )
    assert lines[-1].startswith("The project is valid (")


def test_an_example_under_two_intents_is_a_warning_as_in_rasa(run_cli, starter_copy: Path) -> None:
    # Before, nothing was said: Rasa's `verify_example_repetition_in_intents` warns.
    nlu = starter_copy / "data" / "nlu.yml"
    nlu.write_text(
        nlu.read_text()
        + '\n- intent: greet\n  examples: |\n    - [good]{"entity": "x"} bye\n'
        + "\n- intent: goodbye\n  examples: |\n    - good bye\n"
    )

    assert (
        "warning: The example 'good bye' was found labeled with multiple different intents in "
        "the training data. Each annotated message should only appear with one intent. You "
        "should fix that conflict The example is labeled with: goodbye, greet."
    ) in _only_warned(run_cli, starter_copy)


def test_an_empty_domain_fails_validation_as_in_rasa(run_cli, starter_copy: Path) -> None:
    # Before: "The project is valid", exit 0. Rasa 3.6 stops: "Encountered empty domain".
    (starter_copy / "domain.yml").write_text('version: "3.1"\n')

    result = run_cli("data", "validate", cwd=starter_copy)

    assert result.code == 1, result.out
    assert "error: domain.yml: Encountered empty domain during validation" in result.out


def test_a_mapping_policy_trigger_fails_validation_as_in_rasa(run_cli, starter_copy: Path) -> None:
    # Before: "The project is valid", and `triggers` did nothing. Rasa 3.6 fails on it.
    domain = starter_copy / "domain.yml"
    domain.write_text(
        domain.read_text().replace("  - greet\n", "  - greet:\n      triggers: utter_greet\n", 1)
    )

    result = run_cli("data", "validate", cwd=starter_copy)

    assert result.code == 1, result.out
    assert (
        "warning: domain.yml:4: The intent greet in the domain file is using the MappingPolicy "
        "format which has now been deprecated. Please migrate to RulePolicy."
    ) in result.out.splitlines(), result.out


REFUSED_CONFIG_ITEMS = [
    # (the section, the item written at line 6 of config.yml, what the error says)
    ("pipeline", "- name: FooBarComponent", "Unknown NLU component 'FooBarComponent'"),
    ("pipeline", "- name: FallbackClassifier\n  threshold: high", "'threshold' must be a"),
    ("pipeline", "- name: DIETClassifier\n- name: CountVectorsFeaturizer", "comes before every"),
    ("policies", "- name: FooPolicy", "the policy 'FooPolicy' is not provided by botserver"),
    # Before: trained as TEDPolicy; Rasa 3.6 finds no TEDPolicy in rasa.core.policies.
    ("policies", "- name: rasa.core.policies.TEDPolicy", "Rasa's TEDPolicy is rasa.core."),
]


@pytest.mark.parametrize(
    ("section", "item", "expected"),
    REFUSED_CONFIG_ITEMS,
    ids=["unknown-component", "bad-parameter", "classifier-first", "unknown-policy", "rasa-path"],
)
def test_data_validate_refuses_a_config_that_cannot_train_as_train_does(
    run_cli, starter_copy: Path, section: str, item: str, expected: str
) -> None:
    # Before: "The project is valid", exit 0; the user learned it only at `botserver train`.
    fillers = {"pipeline": "- name: WhitespaceTokenizer", "policies": "- name: RulePolicy"}
    other = "policies" if section == "pipeline" else "pipeline"
    (starter_copy / "config.yml").write_text(
        f"language: en\n{other}:\n{fillers[other]}\n{section}:\n{fillers[section]}\n{item}\n"
    )

    validated = run_cli("data", "validate", cwd=starter_copy)
    trained = run_cli("train", cwd=starter_copy)

    assert validated.code == 1, validated.out
    errors = [line for line in validated.out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: config.yml:6: "), validated.out
    assert expected in errors[0]
    assert trained.code == 1
    assert errors[0] in trained.err.splitlines()  # word for word what train says


def _add_stories(project: Path, text: str) -> None:
    stories = project / "data" / "stories.yml"
    stories.write_text(stories.read_text() + text)


def test_a_story_conflict_is_a_warning_as_in_rasa(run_cli, starter_copy: Path) -> None:
    _add_stories(
        starter_copy,
        "\n- story: deny after greet\n  steps:\n  - intent: greet\n  - action: utter_greet\n"
        "  - intent: deny\n  - action: utter_goodbye\n"
        "\n- story: deny after thanks\n  steps:\n  - intent: thanks\n"
        "  - action: utter_youre_welcome\n  - intent: deny\n  - action: utter_greet\n",
    )
    # Whole stories (Rasa's default) differ from their first turn: no conflict.
    whole = run_cli("data", "validate", cwd=starter_copy)
    assert whole.code == 0, whole.out
    assert "conflict" not in whole.out

    # With the last turn only, `deny` leads to two actions: a warning, exit 0 as in Rasa's CI.
    short = run_cli("data", "validate", "--max-history", "1", cwd=starter_copy)
    assert short.code == 0, short.out
    assert "warning: story structure conflict after intent 'deny'" in short.out
    assert "'utter_greet' in story 'deny after thanks'" in short.out
    # Before, the summary under the conflict said "The project is valid (1 warning)."
    assert "The project is valid" not in short.out
    assert short.out.rstrip().endswith(
        "The stories have 1 structure conflict: the policies learn only one of the actions "
        "each history is followed by (--fail-on-warnings fails on them); no error (1 warning)."
    ), short.out

    strict = run_cli(
        "data", "validate", "--max-history", "1", "--fail-on-warnings", cwd=starter_copy
    )
    assert strict.code == 1
    assert "Validation failed: 0 errors, 1 warning (1 story structure conflict among them)." in (
        strict.out
    )

    # `rasa train --validation-max-history 1 --fail-on-validation-warnings` stops on it too.
    train = ["train", "--force", "--fail-on-validation-warnings"]
    assert run_cli(*train, cwd=starter_copy).code == 0
    refused = run_cli(*train, "--validation-max-history", "1", cwd=starter_copy)
    assert refused.code == 1
    assert "story structure conflict after intent 'deny'" in refused.err


def test_data_split_nlu_then_test_on_the_held_out_part(run_cli, starter_copy: Path) -> None:
    split = run_cli("data", "split", "nlu", "--random-seed", "1", cwd=starter_copy)
    assert split.code == 0, split.err  # it was "invalid choice: 'split'"
    held_out = starter_copy / "train_test_split" / "test_data.yml"
    assert (starter_copy / "train_test_split" / "training_data.yml").is_file()
    tested = run_cli("test", "nlu", "-u", str(held_out), cwd=starter_copy)
    assert tested.code == 0, tested.err
    assert (starter_copy / "results" / "intent_report.json").is_file()


def test_data_without_action_shows_its_help(run_cli) -> None:
    result = run_cli("data")
    assert result.code == 0
    assert "validate" in result.out


def test_test_writes_story_report(run_cli, starter_copy: Path) -> None:
    result = run_cli("test", cwd=starter_copy)
    assert result.code == 0, result.err
    report = json.loads((starter_copy / "results" / "story_report.json").read_text())
    assert report  # per-action precision/recall, as Rasa's story_report.json
    assert "correct" in result.out


def test_test_writes_every_result_file_rasa_writes(run_cli, starter_copy: Path) -> None:
    result = run_cli("test", "core", cwd=starter_copy)
    assert result.code == 0, result.err
    results = starter_copy / "results"
    report = json.loads((results / "story_report.json").read_text())
    accuracy = report["conversation_accuracy"]
    assert accuracy["with_warnings"] == 0
    assert accuracy["correct"] == accuracy["total"] > 0
    # CI scripts `cat` both files after `rasa test`
    warnings = (results / "stories_with_warnings.yml").read_text()
    assert warnings == "# No warnings for test stories"  # Rasa's words
    assert (results / "failed_test_stories.yml").read_text().startswith("# None")


def test_rasas_test_flags_choose_which_result_files_are_written(
    run_cli, starter_copy: Path
) -> None:
    # A CI script written for `rasa test` keeps working: the flags are Rasa's.
    result = run_cli(
        "test", "--no-plot", "--no-errors", "--no-warnings", "--successes", cwd=starter_copy
    )
    assert result.code == 0, result.err
    results = starter_copy / "results"
    written = {path.name for path in results.iterdir()}
    assert not {name for name in written if name.endswith(".png")}
    assert not written & {"failed_test_stories.yml", "intent_errors.json"}
    assert "stories_with_warnings.yml" not in written
    succeeded = (results / "successful_test_stories.yml").read_text()
    assert "- story: greet and ask for the hours" in succeeded
    hits = json.loads((results / "intent_successes.json").read_text())
    assert hits and all(hit["intent"] == hit["intent_prediction"]["name"] for hit in hits)


def test_max_stories_tests_only_the_first_ones(run_cli, starter_copy: Path) -> None:
    result = run_cli("test", "core", "--max-stories", "2", cwd=starter_copy)
    assert result.code == 0, result.err
    report = json.loads((starter_copy / "results" / "story_report.json").read_text())
    assert report["conversation_accuracy"]["total"] == 2


def test_cross_validation_without_nlu_cross_validates_the_nlu_part(
    run_cli, starter_copy: Path
) -> None:
    # `rasa test --cross-validation`: stories on the model, NLU data in folds.
    result = run_cli("test", "--cross-validation", "-f", "2", "--no-plot", cwd=starter_copy)
    assert result.code == 0, result.err
    assert "Test stories:" in result.out
    assert "CV evaluation (n=2)" in result.out


def test_cross_validation_prints_each_metric_over_the_folds_as_rasa(
    run_cli, starter_copy: Path
) -> None:
    """As `rasa test nlu --cross-validation`: per evaluation, each metric's mean over the
    folds and (its standard deviation). Before: the summary's JSON, cut at 2,000 characters,
    with only the accuracy per fold."""
    result = run_cli("test", "nlu", "--cross-validation", "-f", "2", "--no-plot", cwd=starter_copy)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    metric = r"test (Accuracy|F1-score|Precision): [01]\.\d{3} \([01]\.\d{3}\)"
    assert lines[:2] == ["CV evaluation (n=2)", "Intent evaluation results"]
    matches = [re.fullmatch(metric, line) for line in lines[2:5]]
    assert [m[1] if m else None for m in matches] == ["Accuracy", "F1-score", "Precision"]
    assert lines[5:7] == ["Entity evaluation results", "Entity extractor: CRFEntityExtractor"]
    assert all(re.fullmatch(metric, line) for line in lines[7:10])
    assert lines[10] == "Reports in results/ (the held-out examples of every fold)."
    assert "{" not in result.out


def _add_failing_test_story(project: Path) -> None:
    (project / "tests" / "test_wrong.yml").write_text(
        'version: "3.1"\nstories:\n- story: wrong answer\n  steps:\n'
        "  - intent: greet\n  - action: utter_goodbye\n"
    )


def test_fail_on_prediction_errors_exits_1_after_writing_reports(
    run_cli, starter_copy: Path
) -> None:
    _add_failing_test_story(starter_copy)
    relaxed = run_cli("test", "core", cwd=starter_copy)
    assert relaxed.code == 0, relaxed.err

    strict = run_cli("test", "core", "--fail-on-prediction-errors", cwd=starter_copy)
    assert strict.code == 1
    assert "1 test story failed" in strict.err
    assert "Traceback" not in strict.err
    failed = (starter_copy / "results" / "failed_test_stories.yml").read_text()
    assert "wrong answer" in failed
    assert "# predicted: utter_greet" in failed


def _failed_stories(run_cli, project: Path, name: str, steps: str, *flags: str) -> str:
    """failed_test_stories.yml after `botserver test core` with one more test story."""
    (project / "tests" / "test_more.yml").write_text(
        f'version: "3.1"\nstories:\n- story: {name}\n  steps:\n{steps}'
    )
    result = run_cli("test", "core", *flags, cwd=project)
    assert result.code == 0, result.err
    return (project / "results" / "failed_test_stories.yml").read_text()


def test_a_story_missing_a_bot_action_fails_as_in_rasa(run_cli, starter_copy: Path) -> None:
    # The bot goes on with utter_anything_else; the story stops listening before it does.
    steps = (
        "  - intent: greet\n  - action: utter_greet\n"
        "  - intent: ask_opening_hours\n  - action: utter_opening_hours\n"
    )
    failed = _failed_stories(run_cli, starter_copy, "stops too early", steps)
    assert "stops too early" in failed
    assert "- action: action_listen  # predicted: utter_anything_else" in failed
    report = json.loads((starter_copy / "results" / "story_report.json").read_text())
    # As Rasa's report: action_listen is a label too; intents only with --e2e
    assert report["action_listen"]["support"] > 0
    assert "greet" not in report


def test_a_failed_story_names_the_line_the_story_starts_on(run_cli, starter_copy: Path) -> None:
    steps = "  - intent: greet\n  - action: utter_goodbye\n"
    failed = _failed_stories(run_cli, starter_copy, "says goodbye", steps)
    # `- story: says goodbye` is line 3 of the file; it named line 5, its `intent:` step
    assert "- story: says goodbye\n  # tests/test_more.yml:3\n" in failed, failed


def test_intents_are_compared_with_e2e_only_as_in_rasa(run_cli, starter_copy: Path) -> None:
    # Before, every user text was parsed and its intent compared: a story failed on an
    # intent the NLU read otherwise, and each intent was a row of the report.
    steps = (
        "  - user: |\n      what time do you open?\n    intent: greet\n  - action: utter_greet\n"
    )
    assert "misheard" not in _failed_stories(run_cli, starter_copy, "misheard", steps)
    report = json.loads((starter_copy / "results" / "story_report.json").read_text())
    assert "greet" not in report
    failed = _failed_stories(run_cli, starter_copy, "misheard", steps, "--e2e")
    assert "intent: greet  # predicted: ask_opening_hours" in failed
    report = json.loads((starter_copy / "results" / "story_report.json").read_text())
    assert report["greet"]["support"] > 0


def test_a_project_without_test_stories_is_tested_on_its_training_stories(
    run_cli, starter_copy: Path
) -> None:
    # Rasa's own example bots have no tests/ folder: `rasa test core` tests their training
    # stories, `rasa test` (end to end, on data's test_*.yml) none. Before: exit 1, "test
    # stories not found", and the NLU was not tested either.
    shutil.rmtree(starter_copy / "tests")
    shutil.rmtree(starter_copy / "results", ignore_errors=True)
    result = run_cli("test", cwd=starter_copy)
    assert result.code == 0, result.err
    assert "no test stories at 'tests'; testing the training stories of 'data'" in result.err
    # `rasa test core` tests them; `rasa test` reads only test_*.yml files: not "as Rasa does".
    assert "as `rasa test core` does, on their actions" in result.err
    assert "`rasa test` tests none here, it reads only test_*.yml files" in result.err
    report = json.loads((starter_copy / "results" / "story_report.json").read_text())
    stories = (starter_copy / "data" / "stories.yml").read_text().count("- story:")
    assert report["conversation_accuracy"]["total"] == stories  # rules are not tested
    assert (starter_copy / "results" / "intent_report.json").is_file()


def test_e2e_without_test_stories_says_so(run_cli, starter_copy: Path) -> None:
    # Before: exit 0, "3/3 correct": the training stories, which hold no user text, so
    # nothing end-to-end was tested. Rasa's --e2e reads only data's test_*.yml there.
    shutil.rmtree(starter_copy / "tests")
    shutil.rmtree(starter_copy / "results", ignore_errors=True)
    for argv in (("test", "--e2e"), ("test", "core", "--e2e")):
        result = run_cli(*argv, cwd=starter_copy)
        assert result.code == 1
        assert (
            "--e2e tests end-to-end test stories, and there are none: no 'tests' folder, "
            "and no test_*.yml file of stories in 'data'" in result.err
        )
        assert "Traceback" not in result.err
    assert not (starter_copy / "results" / "story_report.json").exists()


def test_e2e_without_tests_reads_the_test_files_of_data_as_rasa(
    run_cli, starter_copy: Path
) -> None:
    shutil.move(starter_copy / "tests" / "test_stories.yml", starter_copy / "data")
    shutil.rmtree(starter_copy / "tests")

    result = run_cli("test", "core", "--e2e", cwd=starter_copy)

    assert result.code == 0, result.err
    assert "testing the test_*.yml stories of 'data' instead" in result.err
    report = json.loads((starter_copy / "results" / "story_report.json").read_text())
    tests = (starter_copy / "data" / "test_stories.yml").read_text().count("- story:")
    assert report["conversation_accuracy"]["total"] == tests


def test_test_stories_named_but_missing_say_which_flag_to_give(run_cli, starter_copy: Path) -> None:
    result = run_cli("test", "core", "-s", "tset", cwd=starter_copy)
    assert result.code == 1
    # it said "training data not found", of files that are not training data
    assert "test stories not found at 'tset' (give them with --stories)" in result.err


@pytest.mark.parametrize("flags", [(), ("--cross-validation", "-f", "2")])
def test_nlu_test_data_named_but_missing_stops_before_the_stories_are_tested(
    run_cli, starter_copy: Path, flags: tuple[str, ...]
) -> None:
    result = run_cli("test", "-u", "dtaa", *flags, cwd=starter_copy)
    assert result.code == 1
    assert "NLU test data not found at 'dtaa' (give them with --nlu)" in result.err
    assert "Traceback" not in result.err
    # it tested the stories and wrote their reports first (with --cross-validation, it then
    # said "training data not found", of a flag that names test data)
    assert not (starter_copy / "results" / "story_report.json").exists()


def test_an_e2e_step_whose_entity_is_not_found_fails_as_in_rasa(
    run_cli, starter_copy: Path
) -> None:
    steps = (
        "  - user: |\n      hello [friend](person)\n    intent: greet\n  - action: utter_greet\n"
    )
    failed = _failed_stories(
        run_cli, starter_copy, "an entity the model does not find", steps, "--e2e"
    )
    # it passed: only the intent was compared
    assert "an entity the model does not find" in failed
    assert "intent: greet  # predicted: greet: hello friend" in failed


def test_a_test_story_naming_what_the_domain_lacks_is_warned_about(
    run_cli, starter_copy: Path
) -> None:
    (starter_copy / "tests" / "test_more.yml").write_text(
        'version: "3.1"\nstories:\n- story: typo\n  steps:\n'
        "  - intent: greet\n  - action: utter_greeet\n"
    )
    result = run_cli("test", "core", cwd=starter_copy)
    assert result.code == 0
    assert (
        "warning: tests/test_more.yml:6: action 'utter_greeet' is used in story 'typo' "
        "but is not listed in the domain"
    ) in result.err


def test_test_nlu_on_a_file_without_examples_says_so(run_cli, starter_copy: Path) -> None:
    result = run_cli("test", "nlu", "-u", "tests", cwd=starter_copy)
    assert result.code == 0, result.err
    # it said "intent accuracy None" and wrote empty reports
    assert "NLU: no examples in tests: nothing to test (give them with --nlu)." in result.out
    assert not (starter_copy / "results" / "intent_report.json").exists()


def test_test_with_a_missing_model_fails_clearly(run_cli, tmp_path: Path) -> None:
    result = run_cli("test", "core", "-m", "nowhere", cwd=tmp_path)
    assert result.code == 1
    assert "nowhere" in result.err
    assert "Traceback" not in result.err


def test_prune_deletes_old_conversations(run_cli, tmp_path: Path) -> None:
    import asyncio

    from server.trackers.factory import create_tracker_store

    db = tmp_path / "trackers.db"
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: sql\n  dialect: sqlite\n  db: {db}\n"
    )

    async def seed() -> None:
        store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(db)})
        old = time.time() - 10 * 86400
        await store.append("old", [{"event": "action", "name": "action_listen", "timestamp": old}])
        await store.append(
            "new", [{"event": "action", "name": "action_listen", "timestamp": time.time()}]
        )
        await store.close()

    asyncio.run(seed())
    result = run_cli("prune", "--older-than-days", "5", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "Deleted 1 conversation." in result.out  # (was "conversations")


def test_prune_with_a_named_endpoints_file_that_is_missing_deletes_nothing(
    run_cli, tmp_path: Path
) -> None:
    """A typo in --endpoints pruned the default botserver.db of the working directory."""
    result = run_cli("prune", "--older-than-days", "5", "--endpoints", "prod.yml", cwd=tmp_path)
    assert result.code == 1
    assert "error: --endpoints prod.yml: no such file" in result.err
    assert not (tmp_path / "botserver.db").exists()


@pytest.mark.parametrize("endpoints", ["endpoints.yml", "prod.yml"])
def test_prune_without_a_tracker_store_or_botserver_db_says_where_it_looked(
    run_cli, tmp_path: Path, endpoints: str
) -> None:
    """No endpoints.yml, and no botserver.db in the working directory (a cron job started
    elsewhere): before, it made an empty botserver.db there and said "Deleted 0
    conversations."; then, an error naming a section of an endpoints.yml that is not there.
    `--endpoints prod.yml` holding no tracker_store section: the error names prod.yml (it
    named endpoints.yml)."""
    flags = []
    if endpoints != "endpoints.yml":
        (tmp_path / endpoints).write_text(
            "action_endpoint:\n  url: http://localhost:5055/webhook\n"
        )
        flags = ["--endpoints", endpoints]
    result = run_cli("prune", "--older-than-days", "5", *flags, cwd=tmp_path)
    assert result.code == 1
    assert result.err.strip().endswith(
        f"error: SQLite database 'botserver.db' ({tmp_path / 'botserver.db'}) does not exist: "
        f"without a tracker_store section in {endpoints}, the prune is of the botserver.db "
        "of the working directory, which botserver run makes there"
    ), result.err
    assert not (tmp_path / "botserver.db").exists()


def test_shell_with_a_named_endpoints_file_that_is_missing_warns(
    run_cli, moodbot_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Rasa, it runs with the default endpoints; before, only an INFO line said so."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    result = run_cli("shell", "-m", str(moodbot_model), "--endpoints", "prod.yml", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "WARNING" in result.err
    assert "--endpoints prod.yml: no such file" in result.err


def test_prune_requires_an_age(run_cli) -> None:
    result = run_cli("prune")
    assert result.code == 2
    assert "--older-than-days" in result.err


def test_run_help_says_what_every_flag_does(run_cli) -> None:
    # Before, `-p`, `-i` and the `--ssl-*` flags had no line: the port's default (5005) and
    # the address (0.0.0.0) could not be read from `botserver run --help`, as in Rasa's.
    from cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    run = commands.choices["run"]
    silent = [a.option_strings[-1] for a in run._actions if a.option_strings and a.help is None]
    assert silent == []
    result = run_cli("run", "--help")
    assert "port to listen on (default: 5005)" in result.out
    assert "address to listen on (default: 0.0.0.0)" in " ".join(result.out.split())


def test_every_flag_of_every_command_has_a_help_line() -> None:
    # Before, `shell -m`, `test -m`, `--out`, `--folds` and `prune`'s flags had none: the
    # defaults (models, results, 5 folds) could not be read from `--help`.
    from cli import build_parser

    def silent(parser: argparse.ArgumentParser, words: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += silent(sub, f"{words} {name}")
            elif action.option_strings and action.help is None:
                found.append(f"{words} {action.option_strings[-1]}")
        return found

    assert silent(build_parser(), "botserver") == []


def test_run_help_gives_the_request_body_limit_the_server_applies(run_cli) -> None:
    # Before: `--request-max-size ... (default: None)`, where the server takes 10 MiB.
    from server.api.middleware.guard import DEFAULT_MAX_BODY_BYTES

    result = run_cli("run", "--help")
    assert f"(default: {DEFAULT_MAX_BODY_BYTES}, 10 MiB)" in " ".join(result.out.split())


def test_a_backend_whose_extra_is_not_installed_names_the_extra(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `pip install -e .` brings no redis, asyncpg or aio-pika (the extras do): an
    # endpoints.yml naming such a backend ended in a ModuleNotFoundError traceback.
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "server.trackers.redis_store", raising=False)
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("tracker_store:\n  type: redis\n  url: localhost\n")
    result = run_cli("prune", "--older-than-days", "1", "--endpoints", str(endpoints))
    assert result.code == 1
    assert "Traceback" not in result.err
    assert "error: the Python package 'redis' is not installed" in result.err
    assert "pip install 'botserver[redis]'" in result.err


def test_nlu_commands_read_rasas_json_nlu_data_as_train_does(run_cli, starter_copy: Path) -> None:
    """Before, `data split nlu` and `test nlu` skipped `data/nlu.json` (as `train nlu` did):
    'no NLU examples in data'."""
    from server.training.nlu_convert import read_nlu_data
    from server.training.nlu_json import nlu_json

    data = starter_copy / "data"
    examples = read_nlu_data([str(data / "nlu.yml")])
    (data / "nlu.json").write_text(nlu_json(examples))
    (data / "nlu.yml").unlink()
    split = run_cli("data", "split", "nlu", "--random-seed", "1", cwd=starter_copy)
    assert split.code == 0, split.err
    tested = run_cli("test", "nlu", cwd=starter_copy)
    assert tested.code == 0, tested.err
    assert "NLU: intent accuracy" in tested.out
    trained = run_cli("train", "nlu", "--out", "nlu_models", cwd=starter_copy)
    assert trained.code == 0, trained.err
    assert f"training NLU on {len(examples.examples)} examples" in trained.out + trained.err


@pytest.mark.parametrize(
    "nlu", [None, 'nlu:\n- lookup: city\n  examples: ""\n'], ids=["no-file", "empty-lookup"]
)
def test_train_nlu_without_nlu_data_trains_nothing(
    run_cli, starter_copy: Path, nlu: str | None
) -> None:
    """As `rasa train nlu` ("doesn't contain valid NLU data"). Before: 'training NLU on 0
    examples', and a model that parsed every message as no intent."""
    (starter_copy / "data" / "nlu.yml").unlink()
    if nlu is not None:
        (starter_copy / "data" / "nlu.yml").write_text(nlu)
    trained = run_cli("train", "nlu", "--out", "nlu_models", cwd=starter_copy)
    assert trained.code == 1
    assert "data: no NLU training data" in trained.err
    assert not (starter_copy / "nlu_models").exists()


@pytest.mark.parametrize(
    "nlu",
    [
        "nlu:\n- synonym: New York\n  examples: |\n    - NYC\n",
        "nlu:\n- regex: zipcode\n  examples: |\n    - '[0-9]{5}'\n",
        "nlu:\n- lookup: city\n  examples: |\n    - Berlin\n",
    ],
    ids=["synonyms", "regexes", "lookups"],
)
def test_train_nlu_on_synonyms_regexes_or_lookups_alone_trains(
    run_cli, starter_copy: Path, nlu: str
) -> None:
    """As `rasa train nlu`, which trains on any NLU data, its classifiers skipping their
    training for want of examples (before: "no NLU training examples", exit 1)."""
    (starter_copy / "data" / "nlu.yml").write_text(nlu)
    trained = run_cli("train", "nlu", "--out", "nlu_models", cwd=starter_copy)
    assert trained.code == 0, trained.err
    [archive] = (starter_copy / "nlu_models").iterdir()
    assert archive.name.startswith("nlu-") and archive.name.endswith(".tar.gz")


async def _parse_and_turn(archive: Path, text: str) -> tuple[dict, int]:
    """`text` parsed by POST /model/parse of a server with `archive`, and the status of a
    REST turn with it."""
    async with model_client(archive) as client:
        parsed = (await client.post("/model/parse", json={"text": text})).json()
        turn = await client.post("/webhooks/rest/webhook", json={"sender": "a", "message": text})
    return parsed, turn.status_code


async def test_an_nlu_only_model_reads_any_intent_message_as_rasa(
    run_cli, starter_copy: Path
) -> None:
    """Rasa checks `/intent{...}` messages against a domain only when the model has a
    dialogue: an NLU-only model (an NLU server's, say, asked about a button's payload)
    takes any intent and entity. Before, an intent without NLU examples was parsed as text
    (another intent, at a guessed confidence) and its entities were lost."""
    trained = run_cli("train", "nlu", "--out", "nlu_models", cwd=starter_copy)
    assert trained.code == 0, trained.err
    [archive] = (starter_copy / "nlu_models").glob("*.tar.gz")
    text = '/order_pizza{"topping": "cheese"}'
    parsed, turn_status = await _parse_and_turn(archive, text)
    assert parsed == {
        "text": text,
        "intent": {"name": "order_pizza", "confidence": 1.0},
        "entities": [
            {
                "entity": "topping",
                "value": "cheese",
                "start": 12,
                "end": 33,
                "extractor": "RegexMessageHandler",
            }
        ],
        "intent_ranking": [{"name": "order_pizza", "confidence": 1.0}],
    }
    assert turn_status == 200


async def test_a_model_with_a_dialogue_checks_intent_messages_against_its_domain(
    starter_copy: Path,
) -> None:
    """`botserver train`'s model has a dialogue: as Rasa's, it parses an intent its domain
    lacks as text and leaves out entity types the domain lacks (the NLU-only model beside
    it takes both as given)."""
    [archive] = (starter_copy / "models").glob("*.tar.gz")
    unknown, turn_status = await _parse_and_turn(archive, '/order_pizza{"topping": "cheese"}')
    assert unknown["intent"]["name"] != "order_pizza"
    assert "text_tokens" in unknown  # the NLU pipeline parsed it as text
    assert turn_status == 200
    known, _ = await _parse_and_turn(archive, '/order_drink{"drink": "tea", "topping": "x"}')
    assert known["intent"] == {"name": "order_drink", "confidence": 1.0}
    assert [e["entity"] for e in known["entities"]] == ["drink"]


def test_a_categorical_slot_without_values_never_fails_validation(
    run_cli, starter_copy: Path
) -> None:
    """Rasa trains such a slot and its validator says nothing of it, --fail-on-warnings
    too: botserver warns and passes. Before, exit 1 with --fail-on-warnings."""
    domain = starter_copy / "domain.yml"
    domain.write_text(
        domain.read_text().replace(
            "slots:\n", "slots:\n  size:\n    type: categorical\n    mappings: [{type: custom}]\n"
        )
    )
    result = run_cli("data", "validate", "--fail-on-warnings", cwd=starter_copy)
    assert result.code == 0, result.out
    assert "warning: domain.yml:17: categorical slot 'size' lists no values" in result.out
    assert "does not fail on the 1 that Rasa's validator never fails on" in result.out


def test_a_slot_mapping_naming_an_unlisted_entity_never_fails_validation(
    run_cli, starter_copy: Path
) -> None:
    """Rasa's validator says nothing of a mapping naming an entity or intent the domain does
    not list (it skips the mapping at each message), --fail-on-warnings too: botserver warns
    and passes. Before, exit 1 with --fail-on-warnings."""
    domain = starter_copy / "domain.yml"
    domain.write_text(
        domain.read_text().replace(
            "slots:\n",
            "slots:\n  city:\n    type: text\n    mappings:\n"
            "    - {type: from_entity, entity: citty}\n"
            "    - {type: from_intent, intent: infrom, value: x}\n",
        )
    )
    result = run_cli("data", "validate", "--fail-on-warnings", cwd=starter_copy)
    assert result.code == 0, result.out
    assert "from_entity mapping for the entity 'citty'" in result.out
    assert "from_intent mapping for the intent 'infrom'" in result.out
    assert "does not fail on the 2 that Rasa's validator never fails on" in result.out


def _old_conversations(config: dict[str, Any], sender_ids: tuple[str, ...]) -> None:
    """Conversations of one event ten days old in the tracker store of `config`."""
    import asyncio

    from server.trackers.factory import create_tracker_store

    async def seed() -> None:
        store = create_tracker_store(config)
        old = time.time() - 10 * 86400
        for sender_id in sender_ids:
            await store.append(
                sender_id, [{"event": "action", "name": "action_listen", "timestamp": old}]
            )
        await store.close()

    asyncio.run(seed())


def _sqlite_prune_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose SQLite tracker store holds four old conversations, c1 to c4, pruned
    one a batch; its database file."""
    from server.trackers import sql_store

    monkeypatch.setattr(sql_store, "DELETE_BATCH", 1)
    db = tmp_path / "trackers.db"
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: sql\n  dialect: sqlite\n  db: {db}\n"
    )
    _old_conversations(
        {"type": "sql", "dialect": "sqlite", "db": str(db)}, ("c1", "c2", "c3", "c4")
    )
    return db


def _the_error(result: Any) -> str:
    [error] = [line for line in result.err.splitlines() if line.startswith("error:")]
    return error


def test_prune_stopped_midway_says_how_many_it_deleted(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses to delete the third conversation (a trigger): the two before it
    are gone. Before, the error alone: nothing said that some were deleted, nor that running
    it again goes on."""
    import sqlite3

    db = _sqlite_prune_project(tmp_path, monkeypatch)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER keep_c3 BEFORE DELETE ON events WHEN old.sender_id = 'c3' "
            "BEGIN SELECT RAISE(ABORT, 'c3 is kept'); END"
        )
    result = run_cli("prune", "--older-than-days", "5", cwd=tmp_path)
    assert result.code == 1
    error = _the_error(result)
    assert error.endswith(
        "(after deleting 2 conversations); botserver prune again deletes the rest"
    ), error
    with sqlite3.connect(db) as conn:
        left = conn.execute("SELECT DISTINCT sender_id FROM events ORDER BY 1").fetchall()
    assert left == [("c3",), ("c4",)]


def test_prune_stopped_by_ctrl_c_says_how_many_it_deleted(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C as the third conversation's delete goes out: the two before it are gone, the
    prune says so and how to go on, exit 130. (No test failed with that line taken out.)"""
    from server.trackers import sqlite_database

    _sqlite_prune_project(tmp_path, monkeypatch)
    delete_stale = sqlite_database.SqliteDatabase.delete_stale

    async def interrupted_at_c3(
        self: sqlite_database.SqliteDatabase, sender_ids: list[str], cutoff: float
    ) -> int:
        if "c3" in sender_ids:
            raise KeyboardInterrupt
        return await delete_stale(self, sender_ids, cutoff)

    monkeypatch.setattr(sqlite_database.SqliteDatabase, "delete_stale", interrupted_at_c3)
    result = run_cli("prune", "--older-than-days", "5", "--log-file", "out.log", cwd=tmp_path)
    assert result.code == 130
    said = "stopped (after deleting 2 conversations); botserver prune again deletes the rest"
    assert _the_error(result) == f"error: {said}"
    # The log file (a cron job's) ends with it too; before, with the lines before it.
    last = (tmp_path / "out.log").read_text(encoding="utf-8").splitlines()[-1:]
    assert last and last[0].endswith(f"ERROR   botserver - {said}"), last


@contextlib.contextmanager
def _redis_prune_project(tmp_path: Path, other: Any) -> Iterator[str]:
    """A project whose Redis tracker store (a prefix of its own) holds c1 to c3, old, and
    what `other(client, prefix)` writes beside them; its key prefix."""
    import asyncio

    from redis.asyncio import Redis

    from tests.trackers.persistence_fixtures import (
        REDIS,
        delete_redis_keys,
        require_service,
        unique_name,
    )

    require_service("Redis", REDIS)
    prefix = unique_name("bsprune").replace("_", "")
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: redis\n  url: {REDIS[0]}\n  port: {REDIS[1]}\n"
        f"  key_prefix: {prefix}\n"
    )
    config = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    _old_conversations(config, ("c1", "c2", "c3"))

    async def write_other() -> None:
        client = Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
        try:
            await other(client, prefix)
        finally:
            await client.aclose()

    asyncio.run(write_other())
    try:
        yield prefix
    finally:
        asyncio.run(delete_redis_keys(prefix, db=0))


def test_prune_of_redis_failing_midway_counts_what_the_batch_deleted(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SCAN page's short conversations are deleted by one pipeline; a key after them that
    fails (here Redis dropping the connection as Rasa's layout of `rasa` is converted)
    stopped the prune with the error alone: the page's count was lost with it, though the
    three were gone."""
    from redis import exceptions as redis_errors

    from server.trackers.redis_store import RedisTrackerStore

    async def rasas_layout(client: Any, prefix: str) -> None:
        old = time.time() - 10 * 86400
        tracker = {"events": [{"event": "action", "name": "action_listen", "timestamp": old}]}
        await client.set(f"{prefix}:tracker:rasa", json.dumps(tracker))

    async def dropped(self: RedisTrackerStore, sender_id: str) -> None:
        raise redis_errors.ConnectionError("Connection closed by server.")

    with _redis_prune_project(tmp_path, rasas_layout):
        monkeypatch.setattr(RedisTrackerStore, "_convert_rasa_layout", dropped)
        result = run_cli("prune", "--older-than-days", "5", cwd=tmp_path)
    assert result.code == 1
    error = _the_error(result)
    assert error.endswith(
        "(after deleting 3 conversations); botserver prune again deletes the rest"
    ), error


def test_prune_of_redis_leaves_another_programs_key_and_deletes_the_rest(
    run_cli, tmp_path: Path
) -> None:
    """A hash under the tracker prefix (another program's) stopped every prune at it
    (`WRONGTYPE`, the store failing): now a warning names it, it is kept, the rest go."""
    import asyncio

    from redis.asyncio import Redis

    from tests.trackers.persistence_fixtures import REDIS

    async def a_hash(client: Any, prefix: str) -> None:
        await client.hset(f"{prefix}:tracker:cache", "field", "value")

    async def left(prefix: str) -> list[str]:
        client = Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
        try:
            return sorted(str(key) for key in await client.keys(f"{prefix}:tracker:*"))
        finally:
            await client.aclose()

    with _redis_prune_project(tmp_path, a_hash) as prefix:
        result = run_cli("prune", "--older-than-days", "5", cwd=tmp_path)
        kept = asyncio.run(left(prefix))
    assert result.code == 0, result.err
    assert "Deleted 3 conversations." in result.out
    assert "Conversation 'cache' is a Redis hash" in result.err
    assert kept == [f"{prefix}:tracker:cache"]


def test_train_past_a_warning_rasa_fails_on_counts_it_in_good_english(
    run_cli, starter_copy: Path
) -> None:
    """One warning that makes `rasa train` stop (Rasa 2's intent `triggers`) is counted as
    one. Before: "1 of these warnings make `rasa train` ... stop"."""
    domain = starter_copy / "domain.yml"
    domain.write_text(
        domain.read_text().replace(
            "  - goodbye\n", "  - goodbye:\n      triggers: utter_goodbye\n", 1
        )
    )
    result = run_cli("train", "--force", cwd=starter_copy)
    assert result.code == 0, result.err
    assert "The intent goodbye in the domain file is using the MappingPolicy" in result.err
    assert "warning: 1 of these warnings makes `rasa train` (3.5+) stop" in result.err


def test_train_past_the_checks_warnings_prints_each_once(run_cli, starter_copy: Path) -> None:
    """Training goes on past a warning Rasa stops on, having printed the checks' warnings;
    before, config.yml's and the domain's were printed a second time as training began."""
    config = starter_copy / "config.yml"
    config.write_text(
        config.read_text()
        .replace("IntentClassifier", "DIETClassifier")
        .replace("MLPolicy", "TEDPolicy")
        .replace("assistant_id: starter_bot\n", "")
    )
    domain = starter_copy / "domain.yml"
    domain.write_text(
        domain.read_text().replace(
            "  - goodbye\n", "  - goodbye:\n      triggers: utter_goodbye\n", 1
        )
        + "colours: [red]\n"
    )
    result = run_cli("train", "--force", cwd=starter_copy)
    assert result.code == 0, result.err
    said = [line for line in result.err.splitlines() if "warning" in line.lower()]
    for part in (
        "DIETClassifier -> IntentClassifier",
        "TEDPolicy -> MLPolicy",
        "the 'assistant_id' key is missing",
        "unknown domain section 'colours' is ignored",
        "The intent goodbye in the domain file is using the MappingPolicy",
    ):
        assert len([line for line in said if part in line]) == 1, (part, said)


def test_training_on_one_story_says_so_in_good_english(run_cli, starter_copy: Path) -> None:
    """Before: "training dialogue on 1 stories and rules"."""
    (starter_copy / "data" / "rules.yml").unlink()
    (starter_copy / "data" / "stories.yml").write_text(
        'version: "3.1"\nstories:\n- story: hi\n  steps:\n  - intent: greet\n'
        "  - action: utter_greet\n"
    )
    trained = run_cli("train", "core", "--force", "--out", "core_models", cwd=starter_copy)
    assert trained.code == 0, trained.err
    assert "training dialogue on 1 story or rule" in trained.out + trained.err
