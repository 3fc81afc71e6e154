"""Fixtures for CLI tests: trained models, the starter project, in-process and subprocess runs."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

import cli
from server.training.starter import write_starter_project
from server.training.train import train
from tests.cli.botserver_process import ServerProcess, start_botserver
from tests.logging_state import logging_restored


@pytest.fixture(scope="session")
def moodbot_model(moodbot_copy: Callable[[str], Path]) -> Path:
    """A moodbot model archive (the session's one training), alone in its folder."""
    return moodbot_copy("moodbot-models")


@pytest.fixture(scope="session")
def trained_starter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starter project, trained once; copy it before changing it."""
    root = tmp_path_factory.mktemp("starter") / "mybot"
    write_starter_project(root)
    train(root / "config.yml", root / "domain.yml", [root / "data"], root / "models")
    return root


@pytest.fixture
def starter_copy(trained_starter: Path, tmp_path: Path) -> Path:
    target = tmp_path / "mybot"
    shutil.copytree(trained_starter, target)
    return target


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., CliResult]]:
    """Runs `botserver ARGS` in this process (fast), restoring the logging setup afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}

    # In this process `botserver run` is only ever expected to refuse: a server that got as
    # far as serving stops at once and fails the test. Before, a refusal that regressed served
    # on port 5005 until killed (seen: an hour, and the README test's port busy in CI).
    served: list[bool] = []

    async def stop_at_once(server: uvicorn.Server) -> None:
        served.append(True)
        server.should_exit = True

    monkeypatch.setattr(uvicorn.Server, "main_loop", stop_at_once)

    def run(*argv: str, cwd: Path | None = None) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: --help, --version, bad flags
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        if served:
            pytest.fail(f"botserver {' '.join(argv)} served instead of refusing: {captured.err}")
        return CliResult(code, captured.out, captured.err)

    yield run
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Starts `botserver run ARGS -p <free port>` in `cwd`; stops it after the test."""
    started: list[ServerProcess] = []

    def start(*args: str, cwd: Path, port: int | None = None) -> ServerProcess:
        server = start_botserver(list(args), cwd, tmp_path, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    with logging_restored():
        yield
