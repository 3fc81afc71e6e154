"""Where flags may go: the logging flags before the command (`botserver -v run actions`), and
which of `botserver run`'s flags `botserver shell` takes, as `rasa shell` takes them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import cli


@pytest.mark.parametrize(
    ("flag", "logged"), [("-v", True), ("--quiet", False)], ids=["verbose", "quiet"]
)
def test_logging_flags_may_come_before_the_command(
    run_cli,
    moodbot_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
    logged: bool,
) -> None:
    """Before, exit 2: `unrecognized arguments: -v --log-file out.log`."""
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    result = run_cli(
        flag, "--log-file", "out.log", "shell", "nlu", "-m", str(moodbot_model), cwd=tmp_path
    )
    assert result.code == 0, result.err
    assert ("Loaded model" in (tmp_path / "out.log").read_text()) is logged


def test_logging_flags_before_run_actions_reach_the_action_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`botserver -v run actions` starts rasa-sdk's server with -v, as `run actions -v` does.
    Before, exit 2 (`invalid choice: 'actions'`: read as `botserver run`'s model)."""
    pytest.importorskip("rasa_sdk")
    started: list[list[str]] = []

    def execv(_path: str, command: list[str]) -> None:
        started.append(command)
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execv", execv)
    with pytest.raises(SystemExit):
        cli.main(["-v", "run", "actions", "-p", "5056"])
    [command] = started
    # In the order given: the last of the level flags wins there too.
    assert command[command.index("rasa_sdk") + 1 :] == ["--actions", "actions", "-v", "-p", "5056"]


def test_an_unknown_flag_before_the_command_is_still_refused(run_cli) -> None:
    result = run_cli("--verbos", "run")
    assert result.code == 2
    assert "unrecognized arguments: --verbos" in result.err


def test_shell_takes_rasa_shells_timeouts_and_syslog_flags(
    run_cli, moodbot_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rasa shell --request-timeout 60` (a slow action server) and the other flags of
    `rasa shell` that still mean something in process. Before, exit 2 on each."""
    monkeypatch.setattr("sys.stdin", io.StringIO("/stop\n"))
    result = run_cli(
        "shell",
        "-m",
        str(moodbot_model),
        "--request-timeout",
        "60",
        "--response-timeout",
        "120",
        "--use-syslog",
        "--syslog-address",
        "127.0.0.1",
        "--syslog-port",
        "5514",
        cwd=tmp_path,
    )
    assert result.code == 0, result.err
    assert result.out.startswith("Bot loaded.")


def test_shell_fetches_its_model_from_remote_storage_as_run_does(run_cli, tmp_path: Path) -> None:
    result = run_cli("shell", "-m", "mybot.tar.gz", "--remote-storage", "ftp", cwd=tmp_path)
    assert result.code == 1
    assert "--remote-storage 'ftp' is not supported: use one of aws" in result.err


def test_shell_refuses_an_unsigned_model_with_verify_key(
    run_cli, moodbot_model: Path, tmp_path: Path
) -> None:
    from server.models.signing import generate_keypair

    (tmp_path / "public.pem").write_bytes(generate_keypair()[1])
    result = run_cli("shell", "-m", str(moodbot_model), "--verify-key", "public.pem", cwd=tmp_path)
    assert result.code == 1
    assert "error: no model could be loaded from" in result.err


@pytest.mark.parametrize(
    "argv",
    [["--enable-api"], ["-p", "5006"], ["--credentials", "credentials.yml"], ["--workers", "2"]],
    ids=["enable-api", "port", "credentials", "workers"],
)
def test_shell_names_the_server_flags_it_has_no_use_for(run_cli, argv: list[str]) -> None:
    """`rasa shell` also serves HTTP (it talks to the bot through it); `botserver shell` talks
    to it in process, so these would do nothing: a clear error, not `unrecognized`."""
    result = run_cli("shell", *argv)
    assert result.code == 2
    assert "usage: botserver shell" in result.err
    assert (
        f"{argv[0]} is a flag of `botserver run`: `botserver shell` talks to the bot in "
        "this process and serves nothing over HTTP" in result.err
    )
