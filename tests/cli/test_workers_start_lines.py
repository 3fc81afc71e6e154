"""`botserver run --workers N` says what it found at start once, not once a worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.cli.botserver_process import ServerProcess
from tests.trackers.persistence_fixtures import REDIS, require_service, unique_name


def _two_workers_log(
    start_server: Callable[..., ServerProcess],
    cwd: Path,
    model: str,
    endpoints: str,
    trackers: str = "",
) -> list[str]:
    """The log of a server of two workers (SQLite trackers with the settings `trackers`, a
    Redis lock store, then `endpoints`) once both serve."""
    return _two_workers(start_server, cwd, model, endpoints, trackers=trackers).text().splitlines()


def _two_workers(
    start_server: Callable[..., ServerProcess],
    cwd: Path,
    model: str,
    endpoints: str,
    *options: str,
    trackers: str = "",
) -> ServerProcess:
    """A server of two workers (SQLite trackers with the settings `trackers`, a Redis lock
    store, then `endpoints`, and `options` on the command line), once both serve."""
    require_service("Redis", REDIS)
    (cwd / "endpoints.yml").write_text(
        f"tracker_store:\n  type: sql\n  dialect: sqlite\n  db: {cwd / 'trackers.db'}\n"
        + trackers
        + f"lock_store:\n  type: redis\n  url: {REDIS[0]}\n  port: {REDIS[1]}\n"
        f"  key_prefix: {unique_name('workers-start')}\n" + endpoints
    )
    server = start_server("--enable-api", "-m", model, "--workers", "2", *options, cwd=cwd)
    server.wait_until("/health/live")
    for _ in range(300):  # until both workers serve (one answers the probe)
        if "is up on" in server.text():
            break
        time.sleep(0.1)
    assert "is up on" in server.text(), server.text()
    return server


def test_each_start_up_problem_is_said_once_for_all_workers(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A Redis lock store that refuses (`db: 99`, Redis has 16), a corrupt model and a
    RabbitMQ nobody listens on, in one two-worker start (each such start costs three
    processes' imports): before, each worker said each problem itself, N identical lines
    each (told apart by a pid only): the lock store's ERROR, "Could not load a model at
    startup", "starts without a model" and "cannot reach"."""
    (tmp_path / "models.tar.gz").write_text("no gzip")
    problems = (
        "  db: 99\n"
        "event_broker:\n  type: pika\n  url: 127.0.0.1\n  port: 1\n  username: u\n"
        f"  password: p\n  queues: [{unique_name('review43')}]\n"
    )
    log = _two_workers_log(start_server, tmp_path, "models.tar.gz", problems)
    lines = [line for line in log if "DB index is out of range" in line]
    assert len(lines) == 1, log
    assert "ERROR" in lines[0]
    for said in ("Could not load a model at startup", "starts without a model", "cannot reach"):
        assert len([line for line in log if said in line]) == 1, (said, log)


def test_the_stopped_line_is_said_once_when_every_worker_has_stopped(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Said by the parent once every worker has closed its stores (uvicorn's "Application
    shutdown complete" of each, at -v). Before: once a worker, then by the first worker to
    be done closing, while the other still closed its own."""
    server = _two_workers(start_server, tmp_path, "none", "", "-v")
    assert server.stop() == 0, server.text()
    log = server.text().splitlines()
    [stopped] = [n for n, line in enumerate(log) if "Stopped: " in line]
    assert "the 2 workers closed their channels, event broker and stores" in log[stopped]
    closed = [n for n, line in enumerate(log) if "Application shutdown complete" in line]
    assert len(closed) == 2 and max(closed) < stopped, log


def test_a_warning_about_the_endpoints_file_is_said_once_for_all_workers(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A tracker store setting Rasa 3 ignores, read as the parent checks the configuration and
    as each worker builds its app: before, said four times with two workers (the parent's
    checks, its trial build, then each worker), told apart by a pid only."""
    ignored = "tracker_store: 'max_event_history' is not read"
    log = _two_workers_log(start_server, tmp_path, "none", "", "  max_event_history: 5\n")
    assert len([line for line in log if ignored in line]) == 1, log


def test_a_misspelt_key_is_said_once_for_all_workers_with_its_line(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The warning names the key's line in the parent; each worker got the files' settings
    through JSON, without their lines, said it again without one, and so not word for word:
    before, three lines for a misspelt key, two without its line."""
    (tmp_path / "credentials.yml").write_text("rest:\nsocketio:\n  user_message_evnt: u\n")
    server = _two_workers(
        start_server,
        tmp_path,
        "none",
        "",
        "--credentials",
        str(tmp_path / "credentials.yml"),
        trackers="  dilect: sqlite\n",
    )
    log = server.text().splitlines()
    for key, line in (("dilect", 5), ("user_message_evnt", 3)):
        said = [entry for entry in log if f"unknown setting '{key}'" in entry]
        assert len(said) == 1, log
        assert f"'{key}' on line {line} is not read" in said[0], said


def test_a_worker_keeps_the_auth_token_out_of_its_access_log(
    start_server: Callable[..., ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker serves and logs the requests, so each hides the --auth-token (here from
    the environment) wherever a client puts it: a misspelt `?tokn=`, percent-encoded."""
    token = "Zm9v+wkTok/Qz9x=="
    monkeypatch.setenv("BOTSERVER_AUTH_TOKEN", token)
    server = _two_workers(start_server, tmp_path, "none", "", "-v")
    assert httpx.get(server.url + "/status", params={"tokn": token}).status_code == 401
    assert httpx.get(server.url + "/status", params={"token": token}).status_code != 401
    assert server.stop() == 0, server.text()
    assert "/status?tokn=*** " in server.text(), server.text()
    assert "wkTok" not in server.text(), server.text()
