"""`botserver run --workers N` says what it found at start once, not once a worker, each
worker keeps the auth token out of its access log, and the workers get the run's secrets
without them in their environment.

One two-worker start serves every test here (each such start costs three processes' imports,
17-20 s on a loaded host): its files hold one problem for each test, on lines of their own,
and each test reads only the lines of its problem."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from tests.cli.botserver_process import start_botserver
from tests.cli.once_per_run import once_per_run
from tests.trackers.persistence_fixtures import REDIS, require_service, unique_name

TOKEN = "Zm9v+wkTok/Qz9x=="
JWT_SECRET = "jwt-secret-handed-to-workers-0123456789"
BROKER_PASSWORD = "broker-password-handed-to-workers-1"

# The tests read the line numbers of the keys in these files off the warnings.
TRACKER_STORE = """\
tracker_store:
  type: sql
  dialect: sqlite
  db: {db}
  dilect: sqlite
  max_event_history: 5
  2001-01-01: x
  1: y
"""
LOCK_STORE = """\
lock_store:
  type: redis
  url: {host}
  port: {port}
  key_prefix: {prefix}
  db: 99
"""
EVENT_BROKER = """\
event_broker:
  type: pika
  url: 127.0.0.1
  port: 1
  username: u
  password: {password}
  queues: [{queue}]
"""
CREDENTIALS = """\
rest:
  2001-01-01: x
socketio:
  user_message_evnt: u
"""


@dataclass
class Run:
    """What the start showed: its whole output (read after it stopped), its exit code, and
    the statuses of GET /status with the token under a misspelt name and under its own
    (None if it never served); the secrets found in each worker's environment (/proc), and
    the statuses of GET /status without a token, with the token and with an admin's JWT, on
    a connection each (spread over the workers)."""

    log: list[str]
    code: int
    misspelt_token: int | None
    token: int | None
    environments: dict[str, list[str]]
    statuses: list[list[int]]

    def said(self, text: str) -> list[str]:
        return [line for line in self.log if text in line]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """What the one start showed (once per test run, whichever xdist workers run the tests)."""
    return once_per_run(
        tmp_path_factory, "workers-start-lines", Run, lambda: _start(tmp_path_factory)
    )


def _start(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Two workers (SQLite trackers and a Redis lock store), each file holding a problem:
    - the tracker store: a misspelt key (`dilect`, line 5), a key Rasa 3 ignores
      (`max_event_history`), keys YAML reads as a date and a number (lines 7 and 8);
    - the lock store: a Redis that refuses (`db: 99`, Redis has 16);
    - a RabbitMQ nobody listens on, a corrupt model;
    - credentials.yml: a date key for `rest` (line 2), a misspelt key for `socketio` (line 4);
    - the --auth-token from the environment, sent once under a misspelt name (`?tokn=`);
    - a --jwt-secret and the broker's password, secrets a worker's environment must not hold.
    Started at -v (uvicorn's shutdown lines), stopped by SIGTERM once both workers serve."""
    require_service("Redis", REDIS)
    folder = tmp_path_factory.mktemp("workers-start")
    (folder / "models.tar.gz").write_text("no gzip")
    (folder / "endpoints.yml").write_text(
        TRACKER_STORE.format(db=folder / "trackers.db")
        + LOCK_STORE.format(host=REDIS[0], port=REDIS[1], prefix=unique_name("workers-start"))
        + EVENT_BROKER.format(queue=unique_name("workers-start"), password=BROKER_PASSWORD)
    )
    (folder / "credentials.yml").write_text(CREDENTIALS)
    args = ["--enable-api", "-m", "models.tar.gz", "--workers", "2", "-v"]
    args += ["--jwt-secret", JWT_SECRET]
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("BOTSERVER_AUTH_TOKEN", TOKEN)
        server = start_botserver([*args, "--credentials", "credentials.yml"], folder, folder)
    misspelt: int | None = None
    token: int | None = None
    environments: dict[str, list[str]] = {}
    statuses: list[list[int]] = []
    try:
        server.wait_until("/health/live")
        for _ in range(300):  # until both workers serve (one answers the probe)
            if "is up on" in server.text():
                break
            time.sleep(0.1)
        assert "is up on" in server.text()
        misspelt = httpx.get(server.url + "/status", params={"tokn": TOKEN}).status_code
        token = httpx.get(server.url + "/status", params={"token": TOKEN}).status_code
        environments = _secrets_in_environments(server.process.pid)
        statuses = _statuses_on_connections(server.url)
    # It never served, or stopped serving: each test fails on its own lines in the log.
    except (AssertionError, httpx.HTTPError):
        pass
    finally:
        code = server.stop()
    return Run(server.text().splitlines(), code, misspelt, token, environments, statuses)


SECRETS = (JWT_SECRET, BROKER_PASSWORD, TOKEN, "BOTSERVER_RUN_SPEC")


def _secrets_in_environments(pid: int) -> dict[str, list[str]]:
    """For each process `pid` started (the workers), and theirs: the secrets in its
    /proc/<pid>/environ (none without /proc: the test that reads them is skipped)."""
    found: dict[str, list[str]] = {}
    if not Path("/proc/self/environ").exists():
        return found
    for child in _descendants(pid):
        with contextlib.suppress(OSError):  # gone
            environment = Path(f"/proc/{child}/environ").read_bytes()
            found[str(child)] = [s for s in SECRETS if s.encode() in environment]
    return found


def _descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _statuses_on_connections(url: str) -> list[list[int]]:
    admin = jwt.encode({"user": {"username": "boss", "role": "admin"}}, JWT_SECRET)
    statuses = []
    for _ in range(8):  # a connection each: spread over the workers
        with httpx.Client(base_url=url) as client:
            statuses.append(
                [
                    client.get("/status").status_code,
                    client.get("/status", params={"token": TOKEN}).status_code,
                    client.get("/status", headers={"Authorization": f"Bearer {admin}"}).status_code,
                ]
            )
    return statuses


def test_each_start_up_problem_is_said_once_for_all_workers(run: Run) -> None:
    """A Redis lock store that refuses, a corrupt model and a RabbitMQ nobody listens on:
    before, each worker said each problem itself, N identical lines each (told apart by a pid
    only): the lock store's ERROR, "Could not load a model at startup", "starts without a
    model" and "cannot reach"."""
    lines = run.said("DB index is out of range")
    assert len(lines) == 1, run.log
    assert "ERROR" in lines[0]
    for said in ("Could not load a model at startup", "starts without a model", "cannot reach"):
        assert len(run.said(said)) == 1, (said, run.log)


def test_the_stopped_line_is_said_once_when_every_worker_has_stopped(run: Run) -> None:
    """Said by the parent once every worker has closed its stores (uvicorn's "Application
    shutdown complete" of each, at -v). Before: once a worker, then by the first worker to
    be done closing, while the other still closed its own."""
    assert run.code == 0, run.log
    [stopped] = [n for n, line in enumerate(run.log) if "Stopped: " in line]
    assert "the 2 workers closed their channels, event broker and stores" in run.log[stopped]
    closed = [n for n, line in enumerate(run.log) if "Application shutdown complete" in line]
    assert len(closed) == 2 and max(closed) < stopped, run.log


def test_a_warning_about_the_endpoints_file_is_said_once_for_all_workers(run: Run) -> None:
    """A tracker store setting Rasa 3 ignores, read as the parent checks the configuration and
    as each worker builds its app: before, said four times with two workers (the parent's
    checks, its trial build, then each worker), told apart by a pid only."""
    assert len(run.said("tracker_store: 'max_event_history' is not read")) == 1, run.log


def test_a_misspelt_key_is_said_once_for_all_workers_with_its_line(run: Run) -> None:
    """The warning names the key's line in the parent; each worker got the files' settings
    through JSON, without their lines, said it again without one, and so not word for word:
    before, three lines for a misspelt key, two without its line."""
    for key, line in (("dilect", 5), ("user_message_evnt", 4)):
        said = run.said(f"unknown setting '{key}'")
        assert len(said) == 1, run.log
        assert f"'{key}' on line {line} is not read" in said[0], said


def test_workers_start_with_a_setting_yaml_reads_as_a_date_or_a_number(run: Run) -> None:
    """Such a key reaches the workers as its text: they start and warn of it as one process
    does, with its line, where `json.dumps` of the settings once ended `run` in a traceback."""
    assert not run.said("Traceback"), run.log
    for said in (
        "tracker_store: unknown setting '2001-01-01' on line 7",
        "tracker_store: unknown setting '1' on line 8",
        "channel 'rest': unknown setting '2001-01-01' on line 2",
    ):
        assert len(run.said(said)) == 1, (said, run.log)


def test_a_worker_keeps_the_auth_token_out_of_its_access_log(run: Run) -> None:
    """Each worker serves and logs the requests, so each hides the --auth-token (here from
    the environment) wherever a client puts it: a misspelt `?tokn=`, percent-encoded."""
    assert run.misspelt_token == 401, run.log
    assert run.token not in (401, None), run.log
    assert run.said("/status?tokn=*** "), run.log
    assert not run.said("wkTok"), run.log


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_workers_serve_with_secrets_absent_from_their_environment(run: Run) -> None:
    """A --jwt-secret, an --auth-token from BOTSERVER_AUTH_TOKEN and a password of
    endpoints.yml: none is in a worker's environment, and the workers still check both.
    Before, the parent put them all in the workers' environment (BOTSERVER_RUN_SPEC)."""
    assert len(run.environments) >= 2, run.log
    assert {pid: found for pid, found in run.environments.items() if found} == {}
    # 409 (no model: the corrupt one) once past the check, on every connection.
    assert {tuple(statuses) for statuses in run.statuses} == {(401, 409, 409)}, run.log
    assert not run.said(JWT_SECRET) and not run.said(BROKER_PASSWORD), run.log
