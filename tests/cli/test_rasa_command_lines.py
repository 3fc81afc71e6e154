"""Command lines a Rasa user types, as `rasa` reads them: the model as the last word of
`shell`, the logging flags between `data`'s words, Rasa's Sanic settings in the environment,
`telemetry disable` in a Dockerfile and several models given to `test`."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

import pytest

import cli


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """The arguments each command would have run with (the commands themselves do nothing)."""
    seen: list[argparse.Namespace] = []

    def record(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    for name in cli.COMMANDS:
        monkeypatch.setitem(cli.COMMANDS, name, record)
    for name in ("cmd_validate", "cmd_split_nlu", "cmd_split_stories", "cmd_convert_nlu"):
        monkeypatch.setattr(cli, name, record)
    return seen


@pytest.mark.parametrize(
    ("before", "nlu_only"),
    [
        ((), False),
        (("nlu",), True),
        (("--endpoints", "e.yml"), False),
        (("--endpoints=e.yml",), False),
        (("-vv",), False),
        (("nlu", "--debug"), True),
    ],
)
def test_shell_takes_the_model_as_its_last_word(
    run_cli, parsed, tmp_path: Path, before: tuple[str, ...], nlu_only: bool
) -> None:
    """`rasa shell models/x.tar.gz` reads the archive as --model. Before, exit 2: `argument
    what: invalid choice: 'models/x.tar.gz' (choose from 'nlu')`."""
    archive = tmp_path / "models" / "x.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"")
    result = run_cli("shell", *before, "models/x.tar.gz", cwd=tmp_path)
    assert result.code == 0, result.err
    [args] = parsed
    assert (args.model, args.what == "nlu") == ("models/x.tar.gz", nlu_only)


def test_shell_nlu_is_still_the_part_when_a_file_is_named_nlu(
    run_cli, parsed, tmp_path: Path
) -> None:
    (tmp_path / "nlu").mkdir()
    result = run_cli("shell", "nlu", cwd=tmp_path)
    assert result.code == 0, result.err
    [args] = parsed
    assert (args.what, args.model) == ("nlu", cli.DEFAULT_MODELS)


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["data", "-v", "validate"], 1, False),
        (["data", "--debug", "validate", "stories"], 2, False),
        (["data", "split", "--quiet", "nlu"], 0, True),
        (["data", "-vv", "split", "stories"], 2, False),
        (["data", "convert", "-v", "nlu", "--data", "x.json"], 1, False),
    ],
)
def test_logging_flags_may_come_between_the_words_of_data(
    run_cli, parsed, argv: list[str], verbose: int, quiet: bool
) -> None:
    """Rasa reads them on every word of a command. Before, exit 2: `unrecognized arguments:
    -v (did you mean -v?)`."""
    result = run_cli(*argv)
    assert result.code == 0, result.err
    [args] = parsed
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_sanic_backlog_is_said_to_do_nothing(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("server.api.runner.run_server", lambda args, endpoints=None: 0)
    monkeypatch.setenv("SANIC_BACKLOG", "200")
    result = run_cli("run", "--enable-api")  # a model could come: the server would start
    assert result.code == 0, result.err
    [warning] = [line for line in result.err.splitlines() if "SANIC_BACKLOG=200" in line]
    assert "not read here" in warning


SHARED_STORES = (
    "lock_store:\n  type: redis\n  url: localhost\n  port: 1\n"
    "tracker_store:\n  type: sql\n  dialect: postgresql\n  url: localhost\n  port: 1\n"
)


@pytest.mark.parametrize(
    ("endpoints", "given", "value", "workers", "said"),
    [
        (SHARED_STORES, [], "4", 4, "SANIC_WORKERS=4: 4 server processes run"),
        ("", [], "4", 1, "SANIC_WORKERS=4: one server process runs, as in Rasa: --workers 4 "),
        (
            "lock_store:\n  type: redis\n  url: localhost\ntracker_store:\n  type: in_memory\n",
            [],
            "3",
            1,
            "needs a tracker store",
        ),
        (SHARED_STORES, ["--workers", "2"], "4", 2, "--workers 2 was given and wins"),
        (SHARED_STORES, [], "four", 1, "SANIC_WORKERS='four' is not a whole number"),
        (SHARED_STORES, [], "1", 1, ""),
        (SHARED_STORES, [], "0", 1, ""),
    ],
)
def test_rasas_sanic_workers_runs_as_many_processes_as_rasa_would(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    endpoints: str,
    given: list[str],
    value: str,
    workers: int,
    said: str,
) -> None:
    """A Rasa deployment's SANIC_WORKERS=4 with a shared lock store ran one process here, with
    a warning to pass --workers 4; Rasa runs four (one without a shared lock store)."""
    from server.api.runner import spec_from_args, workers_to_run

    (tmp_path / "endpoints.yml").write_text(endpoints)
    monkeypatch.setenv("SANIC_WORKERS", value)
    monkeypatch.chdir(tmp_path)  # (the default tracker store: ./botserver.db)
    args = cli.build_parser().parse_args(
        ["run", "--endpoints", str(tmp_path / "endpoints.yml"), *given]
    )
    with caplog.at_level(logging.INFO, logger="server"):
        assert workers_to_run(args, spec_from_args(args))[0] == workers
    told = [r.getMessage() for r in caplog.records if "SANIC_WORKERS" in r.getMessage()]
    assert [said in line for line in told] == ([True] if said else [])


def test_sanic_workers_leaves_the_endpoints_warnings_said_once(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SANIC_WORKERS read endpoints.yml to choose how many processes run, and its warnings
    were said a second time when the server then checked it."""
    (tmp_path / "endpoints.yml").write_text("foo: {}\n")
    monkeypatch.setenv("SANIC_WORKERS", "2")
    with socket.socket() as busy:  # (the run stops at the port, after the checks)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        flags = ["--endpoints", "endpoints.yml", "--port", port, "--enable-api"]
        result = run_cli("run", *flags, cwd=tmp_path)
    assert result.code == 1
    assert "already in use" in result.err
    assert result.err.count("unknown section 'foo'") == 1, result.err


@pytest.mark.parametrize(
    "command",
    [
        ["telemetry", "disable"],
        ["telemetry"],
        ["telemetry", "--help"],
        ["telemetry", "disable", "-h"],
    ],
)
def test_telemetry_disable_succeeds_as_there_is_none(run_cli, command: list[str]) -> None:
    """`RUN rasa telemetry disable` in a Dockerfile. Before, exit 2 failed the image build.
    `rasa telemetry` alone says whether it is on, with exit 0 (here exit 2 before); asked
    for help, as Rasa's help exits 0 (before: `error: ... has no botserver equivalent`,
    exit 2)."""
    result = run_cli(*command)
    assert result.code == 0
    assert "sends no telemetry" in result.err


def test_telemetry_enable_is_still_refused(run_cli) -> None:
    result = run_cli("telemetry", "enable")
    assert result.code == 2
    assert "sends no telemetry" in result.err


def test_several_models_to_test_are_said_to_be_rasas_comparison(run_cli, tmp_path: Path) -> None:
    """`rasa test core -m a.tar.gz b.tar.gz` compares the models. Before: `unrecognized
    arguments: b.tar.gz`, as if a typo."""
    result = run_cli("test", "core", "-m", "a.tar.gz", "b.tar.gz", cwd=tmp_path)
    assert result.code == 2
    assert "-m takes one model" in result.err
    assert "comparison mode" in result.err


def test_data_convert_reads_the_data_directory_without_data(run_cli, tmp_path: Path) -> None:
    """Rasa's `--data` defaults to `data` there too (its `required` is off with a default).
    Before, exit 2: `the following arguments are required: --data`."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello\n'
    )
    result = run_cli("data", "convert", "nlu", "-f", "json", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "Wrote 2 examples to converted_data/data.json." in result.out


def test_debug_logs_leave_out_matplotlibs_unless_asked_as_in_rasa(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`botserver test -vv` drew its plots under ~185 lines of matplotlib's font search
    (`findfont: score(...)`); Rasa sets matplotlib's level from LOG_LEVEL_MATPLOTLIB, else
    LOG_LEVEL_LIBRARIES."""
    from server.logs import configure_logging

    font_search = logging.getLogger("matplotlib.font_manager")
    configure_logging(verbosity=2)
    assert not font_search.isEnabledFor(logging.DEBUG)
    assert font_search.isEnabledFor(logging.WARNING)
    monkeypatch.setenv("LOG_LEVEL_LIBRARIES", "ERROR")
    configure_logging(verbosity=2)
    assert not font_search.isEnabledFor(logging.WARNING)
    monkeypatch.setenv("LOG_LEVEL_MATPLOTLIB", "DEBUG")
    configure_logging()
    assert font_search.isEnabledFor(logging.DEBUG)


@pytest.mark.parametrize("path", ["models/old.tar.gz", "models/old", "./old"])
def test_shell_names_a_missing_archive_given_as_its_last_word(
    run_cli, tmp_path: Path, path: str
) -> None:
    """Before: `argument what: invalid choice: 'models/old.tar.gz' (choose from 'nlu')`, and
    so for a folder's path with a typo."""
    result = run_cli("shell", path, cwd=tmp_path)
    assert result.code == 1
    assert f"error: no model could be loaded from {str(Path(path))!r}" in result.err
    assert "invalid choice" not in result.err


@pytest.mark.parametrize(
    "words",
    [
        ["shell", "models/old.tar.gz", "-v"],
        ["-v", "shell", "models/old.tar.gz"],
        ["shell", "models/old.tar.gz", "--debug", "--conversation-id", "c"],
        ["shell", "--quiet", "models/old.tar.gz", "--conversation-id", "c"],
    ],
)
def test_shell_reads_its_model_before_other_flags_as_rasa(run_cli, tmp_path: Path, words) -> None:
    """`rasa shell MODEL -v` reads MODEL wherever it stands among the flags. Before, only as
    the last word: `invalid choice: 'models/old.tar.gz' (choose from 'nlu')`, and so with a
    logging flag before `shell`, moved after the model."""
    result = run_cli(*words, cwd=tmp_path)
    assert result.code == 1, result.err
    assert "error: no model could be loaded from 'models/old.tar.gz'" in result.err


@pytest.mark.parametrize(
    ("flags", "verbosity"),
    [
        (["-v", "--quiet"], -1),
        (["--quiet", "-vv"], 2),
        (["--quiet", "--debug"], 2),
        (["--debug", "--quiet"], -1),
        (["--quiet", "-v", "--quiet"], -1),
    ],
)
def test_the_last_of_the_level_flags_wins_as_in_rasa(
    run_cli, parsed, flags: list[str], verbosity: int
) -> None:
    """An entrypoint's `--quiet` with `--debug` appended to look into a problem. Before,
    --quiet won wherever it stood."""
    result = run_cli("data", "validate", *flags)
    assert result.code == 0, result.err
    [args] = parsed
    assert (-1 if args.quiet else args.verbose) == verbosity


@pytest.mark.parametrize("command", [["train"], ["test", "nlu"], ["data", "validate"]])
def test_a_directory_of_configs_is_named_as_such(
    run_cli, tmp_path: Path, command: list[str]
) -> None:
    """`rasa test nlu -c configs/` compares the configs of a folder. Before: `no such file:
    'configs'`, of a folder that is there."""
    (tmp_path / "configs").mkdir()
    result = run_cli(*command, "-c", "configs", cwd=tmp_path)
    assert result.code == 2
    assert "argument -c/--config: 'configs' is a directory: name one config file" in result.err


@pytest.mark.parametrize(
    ("argv", "verbosity"),
    [
        (["data", "-v", "validate", "--quiet"], -1),
        (["data", "split", "-vv", "nlu", "--quiet"], -1),
        (["-v", "data", "validate", "--quiet"], -1),
        (["data", "--quiet", "validate", "-v"], 1),
        (["data", "validate", "--debug", "-v"], 1),
        (["data", "validate", "-v", "-v"], 2),
    ],
)
def test_the_last_level_flag_wins_wherever_the_first_stood(
    run_cli, parsed, argv: list[str], verbosity: int
) -> None:
    """`rasa data -v validate --quiet` logs warnings only; so does `--debug -v` log info, not
    debug lines. Before, a flag between the words was read after the command's own, and -v
    after --debug counted on from it."""
    result = run_cli(*argv)
    assert result.code == 0, result.err
    [args] = parsed
    assert (-1 if args.quiet else args.verbose) == verbosity
