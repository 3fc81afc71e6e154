"""A real `botserver run` process: the documented token usage, then schemathesis against
Rasa's OpenAPI spec (no 5xx, no response breaking the schema)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import pytest

from tests.api.rasa_spec import write_spec
from tests.cli.botserver_process import start_botserver

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The HMAC key is")]

TOKEN = "thisismysecret"
JWT_SECRET = "a-jwt-secret-long-enough-for-hs256-keys!"
STARTUP_SECONDS = 90


@pytest.fixture(scope="module")
def live_server(moodbot_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`botserver run -m <model> --enable-api --auth-token thisismysecret` on a free port."""
    workdir = tmp_path_factory.mktemp("live")
    args = [
        "-m",
        str(moodbot_model.parent),
        "--enable-api",
        "--log-file",
        "out.log",
        "--auth-token",
        TOKEN,
        "--jwt-secret",
        JWT_SECRET,
    ]
    server = start_botserver(args, workdir, workdir)
    try:
        server.wait_until(f"/status?token={TOKEN}", timeout=STARTUP_SECONDS)
        yield server.url
    finally:
        server.stop()


def test_documented_token_usage(live_server: str) -> None:
    ok = httpx.get(f"{live_server}/conversations/default/tracker?token={TOKEN}")
    assert ok.status_code == 200
    assert ok.json()["sender_id"] == "default"
    assert httpx.get(f"{live_server}/conversations/default/tracker").status_code == 401


def test_documented_jwt_usage(live_server: str) -> None:
    token = jwt.encode({"user": {"username": "default", "role": "user"}}, JWT_SECRET)
    headers = {"Authorization": f"Bearer {token}"}
    own = httpx.get(f"{live_server}/conversations/default/tracker", headers=headers)
    assert own.status_code == 200
    other = httpx.get(f"{live_server}/conversations/someone/tracker", headers=headers)
    assert other.status_code == 403


RASA_SPEC_CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"
# Our document lists every status, media type and header we send: all five hold.
OUR_DOCUMENT_CHECKS = f"{RASA_SPEC_CHECKS},status_code_conformance,response_headers_conformance"


def schemathesis_command(
    spec: Path | str, url: str, admin_jwt: str, checks: str = RASA_SPEC_CHECKS
) -> list[str]:
    """The command the README's Development section documents."""
    return [
        "schemathesis",
        "run",
        str(spec),
        "--url",
        url,
        "--checks",
        checks,
        "--max-examples",
        "5",
        "--phases",
        "examples,fuzzing",
        "--seed",
        "1",
        "--generation-with-security-parameters",
        "false",
        "--header",
        f"Authorization: Bearer {admin_jwt}",
        "--request-timeout",
        "20",
        "--no-color",
        # DELETE /model would leave every later request a 409; it has its own tests.
        "--exclude-operation-id",
        "unloadModel",
    ]


# schemathesis's FAILURES section: a `___ POST /model/parse ___` heading per operation, a
# `- ST101 Server error` line per failed check.
FAILURE_LINE = re.compile(r"_{3,} [A-Z]+ /\S* _{3,}$|- ST\d+ ")


PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})


def run_schemathesis(command: list[str], cwd: Path, timeout: float = 170, config: str = "") -> None:
    """Run `command` with `config` as its only configuration: without `--config-file`,
    schemathesis reads the first `schemathesis.toml` in the working directory or any parent
    (/tmp included) up to a git root, and its SCHEMATHESIS_* environment variables, so a
    stray one would change what the run sends. Nor any proxy of the environment."""
    if shutil.which("schemathesis") is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    config_file = cwd / "schemathesis-run.toml"
    config_file.write_text(config, encoding="utf-8")
    command = [command[0], "--config-file", str(config_file), *command[1:]]
    # Nor its settings from the environment (SCHEMATHESIS_HOOKS imports a module of hooks
    # that may rewrite every case; SCHEMATHESIS_BASE_URL, SCHEMATHESIS_WAIT_FOR_SCHEMA...).
    # Nor a proxy (requests, its client, sends through one even to 127.0.0.1): the run's
    # server is local, and a proxy on the machine would get, or fail, its requests.
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SCHEMATHESIS_") and k.lower() not in PROXY_VARIABLES
    }
    result = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        # Each failing operation and its checks first: the output's tail alone loses the
        # first ones when a run finds many (an ST101 500 on one route and nine ST108 schema
        # breaks on the conversation routes, say).
        found = [line for line in result.stdout.splitlines() if FAILURE_LINE.match(line)]
        pytest.fail(
            "\n".join(found) + "\n\n" + result.stdout[-6000:] + result.stderr[-2000:],
            pytrace=False,
        )


def admin_jwt() -> str:
    return jwt.encode({"user": {"username": "admin", "role": "admin"}}, JWT_SECRET)


# The conversation routes and /model/predict also get the coverage phase's edge values (null
# where an object belongs, a wrong type in an entity); training, testing and the model's other
# routes get the examples and fuzzing phases only.
COVERAGE_ONLY_FOR_CONVERSATIONS = """\
[[operations]]
exclude-path-regex = "^/conversations/|^/model/predict$"
phases.coverage.enabled = false
"""


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_errors_and_no_schema_breaks(
    live_server: str, tmp_path: Path
) -> None:
    """Every operation of Rasa's spec, and the conversation routes and /model/predict with the
    coverage phase's edge values too, all on one conversation: no 5xx, and whatever a request
    stored, every later answer about the conversation still fits the schema. Before, an entity
    without a 'value' or a `parse_data.text` that was an object was stored, and every later
    answer broke it.

    One run, not two: the conversation routes' examples and fuzzing were sent twice (2,342
    cases against 2,199), and schemathesis started and read the spec twice."""
    spec = write_spec(tmp_path / "rasa-openapi.yml")
    command = schemathesis_command(spec, live_server, admin_jwt())
    # The coverage phase's edge values find what it is about: with the 5 examples an operation
    # of the fuzzing phase it fails with either check undone (an entity without 'value': 9
    # failures; a parse_data.text object: 11).
    command[command.index("--phases") + 1] = "examples,coverage,fuzzing"
    run_schemathesis(command, tmp_path, timeout=280, config=COVERAGE_ONLY_FOR_CONVERSATIONS)


@pytest.mark.timeout(180)
def test_schemathesis_finds_our_openapi_document_true(live_server: str, tmp_path: Path) -> None:
    """Every answer fits GET /openapi.json: its schema, status, media type and headers,
    with the coverage phase's edge values. Before, a message whose `parse_data` had a list
    for `response_selector` was stored, and every later tracker broke our schema."""
    command = schemathesis_command(
        f"{live_server}/openapi.json", live_server, admin_jwt(), OUR_DOCUMENT_CHECKS
    )
    # 5 examples (15 before): the coverage phase still sends the list for `response_selector`.
    command[command.index("--max-examples") + 1] = "5"
    command[command.index("--phases") + 1] = "examples,coverage,fuzzing"
    # Training has its own tests, and fuzzed bodies would train a model each time.
    command += ["--exclude-operation-id", "trainModel"]
    run_schemathesis(command, tmp_path)


async def test_an_endless_request_head_is_refused(live_server: str) -> None:
    """`botserver run` bounds a request head (uvicorn's httptools protocol alone does not)."""
    from tests.api.test_http_protocol import send_endless_head

    answer = await send_endless_head(live_server, b"X-Filler: " + b"a" * 1000 + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer


PING_SPEC = {
    "openapi": "3.0.2",
    "info": {"title": "ping", "version": "1"},
    "paths": {
        "/ping": {
            "get": {
                "operationId": "ping",
                "responses": {
                    "200": {
                        "description": "pong",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        }
    },
}


@contextmanager
def ping_server() -> Iterator[tuple[str, list[str]]]:
    """A local server answering PING_SPEC's one operation: its URL and the paths requested."""
    requests: list[str] = []

    class Pong(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pong)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def run_against_ping(spec: Path, cwd: Path) -> None:
    """A schemathesis run (`run_schemathesis`, from `cwd`) of PING_SPEC, written to `spec`,
    against `ping_server`: it must send requests, and they must all succeed."""
    spec.write_text(json.dumps(PING_SPEC), encoding="utf-8")
    with ping_server() as (url, requests):
        command = schemathesis_command(spec, url, admin_jwt(), checks="not_a_server_error")
        run_schemathesis(command, cwd, timeout=100)
    assert len(requests) > 1, "schemathesis sent no request"


@pytest.mark.timeout(120)
def test_a_run_reads_no_stray_config_and_sends_through_no_proxy_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the run sends is the command's alone, in one run (a schemathesis start costs 0.7 s
    of CPU). A `schemathesis.toml` the run did not write (in its working directory, or a
    parent such as /tmp) changes nothing: here it would switch the one operation off. Nor
    does a SCHEMATHESIS_* variable of the environment: here a module of hooks that stops the
    run. Nor a proxy the environment names, by either spelling (a proxy on the machine would
    get the requests, or, here, a closed port fail them all)."""
    hostile = '[[operations]]\ninclude-operation-id = "ping"\nenabled = false\n'
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for directory in (tmp_path, cwd):
        (directory / "schemathesis.toml").write_text(hostile, encoding="utf-8")
    (cwd / "stray_hooks.py").write_text("raise SystemExit('stray hooks ran')\n", encoding="utf-8")
    monkeypatch.setenv("SCHEMATHESIS_HOOKS", "stray_hooks")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for variable in ("HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    run_against_ping(tmp_path / "ping.json", cwd)
