"""`botserver run actions`: Rasa's `rasa run actions`, rasa-sdk's action server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import cli
from bench.tcp_proxy import free_port

REPO = Path(__file__).resolve().parents[2]

ACTIONS = """from rasa_sdk import Action


class ActionHello(Action):
    def name(self):
        return "action_hello"

    def run(self, dispatcher, tracker, domain):
        dispatcher.utter_message(text="hello from the action server")
        return []
"""


def test_run_actions_starts_rasa_sdks_server_on_the_projects_actions(tmp_path: Path) -> None:
    """As `rasa run actions`: the `actions` package of the working directory, by default.
    Before: `No model archive (.tar.gz) in 'actions'` (read as the model), exit 1."""
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "__init__.py").write_text("")
    (tmp_path / "actions" / "actions.py").write_text(ACTIONS)
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        SANIC_HOST="127.0.0.1",
        ACTION_SERVER_SANIC_WORKERS="1",
    )
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "cli.py"), "run", "actions", "-p", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        actions = None
        with httpx.Client(timeout=1) as client:  # not httpx.get: an SSL context (50 ms) a poll
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    actions = client.get(f"http://127.0.0.1:{port}/actions")
                    break
                except httpx.HTTPError:
                    time.sleep(0.3)
        assert actions is not None, log.read_text(errors="replace")
        assert {"name": "action_hello"} in actions.json()
    finally:
        with contextlib.suppress(ProcessLookupError):  # Sanic's worker too: the group
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def test_run_actions_without_rasa_sdk_says_how_to_get_it(
    run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "ACTION_SERVER_MODULE", "rasa_sdk_is_not_installed_here")
    result = run_cli("run", "actions", "--actions", "actions")
    assert result.code == 1
    assert "pip install rasa-sdk" in result.err
    assert "model" not in result.err


@pytest.mark.parametrize(
    "given", [["--logging-config-file", "log.yml"], ["--logging-config-file=log.yml"]]
)
def test_rasas_logging_config_file_flag_reaches_rasa_sdk(
    given: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rasa run actions --logging-config-file log.yml` (Rasa's spelling of the flag) works;
    rasa-sdk's own parser spells it `--logging-config_file`. Before, rasa-sdk stopped with
    `unrecognized arguments: --logging-config-file`, exit 2."""
    from rasa_sdk.__main__ import create_argument_parser

    started: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execv", lambda _path, command: started.append(command))
    cli.main(["run", "actions", "-p", "5056", *given])
    ((_python, _c, _launcher, module, *argv),) = started
    assert module == "rasa_sdk"
    parsed = create_argument_parser().parse_args(argv)
    assert (parsed.logging_config_file, parsed.port) == ("log.yml", 5056)


def test_run_actions_names_itself_in_rasa_sdks_usage_and_errors(tmp_path: Path) -> None:
    """A mistyped flag is reported under the command the user typed, as Rasa's
    `rasa run actions` reports it. Before: `usage: __main__.py ...` and
    `__main__.py: error: unrecognized arguments: --prot` (rasa-sdk's file name)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "run", "actions", "--prot", "5056"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("usage: botserver run actions [-h]"), result.stderr
    assert "botserver run actions: error: unrecognized arguments: --prot" in result.stderr
    assert "__main__" not in result.stderr
