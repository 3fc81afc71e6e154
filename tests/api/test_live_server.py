"""A real `botserver run` process: the documented token usage, then schemathesis against
Rasa's OpenAPI spec (no 5xx, no response breaking the schema)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from bench.tcp_proxy import free_port
from tests.api.rasa_spec import write_spec

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The HMAC key is")]

TOKEN = "thisismysecret"
JWT_SECRET = "a-jwt-secret-long-enough-for-hs256-keys!"
STARTUP_SECONDS = 90


def _botserver() -> list[str]:
    found = shutil.which("botserver")
    return [found] if found else [sys.executable, "-c", "import cli; cli.main()"]


@pytest.fixture(scope="module")
def live_server(moodbot_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`botserver run -m <model> --enable-api --auth-token thisismysecret` on a free port."""
    workdir = tmp_path_factory.mktemp("live")
    port = free_port()
    command = [
        *_botserver(),
        "run",
        "-m",
        str(moodbot_model.parent),
        "--enable-api",
        "--log-file",
        "out.log",
        "--auth-token",
        TOKEN,
        "--jwt-secret",
        JWT_SECRET,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"botserver run exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(f"{url}/status", params={"token": TOKEN}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("botserver run did not serve a model in time")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


def schemathesis_command(spec: Path, url: str, admin_jwt: str) -> list[str]:
    """The command the README's Development section documents."""
    return [
        "schemathesis",
        "run",
        str(spec),
        "--url",
        url,
        "--checks",
        "not_a_server_error,response_schema_conformance",
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


@pytest.mark.timeout(180)
def test_schemathesis_finds_no_server_errors_and_no_schema_breaks(
    live_server: str, tmp_path: Path
) -> None:
    if shutil.which("schemathesis") is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    spec = write_spec(tmp_path / "rasa-openapi.yml")
    admin = jwt.encode({"user": {"username": "admin", "role": "admin"}}, JWT_SECRET)
    result = subprocess.run(
        schemathesis_command(spec, live_server, admin),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
