"""Tokens and JWTs never reach the logs, uvicorn's access log included."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends, FastAPI, Response

from server.api.app import create_app
from server.api.server import ServerOptions, build_app
from server.api.settings import ApiSettings
from server.auth import AuthConfig, install_log_redaction, redact, require_auth
from tests.serving import serving

TOKEN = "thisismysecret-token-value"
SERVER_TOKEN = "model-server-token-4f2a"
JWT_SECRET = "a-jwt-secret-that-is-long-enough-for-hs256"


def router() -> APIRouter:
    r = APIRouter()

    @r.get("/status", dependencies=[Depends(require_auth())])
    async def status() -> dict[str, bool]:
        return {"ok": True}

    return r


async def test_token_and_bearer_are_redacted_from_logs(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    app = create_app(ApiSettings(auth=AuthConfig(token=TOKEN, jwt_secret=JWT_SECRET)), [router()])
    admin = jwt.encode({"user": {"username": "boss", "role": "admin"}}, JWT_SECRET)
    bad = jwt.encode({"user": {"username": "boss", "role": "admin"}}, JWT_SECRET + "x")
    async with (
        serving(app, log_level="debug", access_log=True) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await client.get(f"/status?token={TOKEN}")).status_code == 200
        assert (
            await client.get("/status", headers={"Authorization": f"Bearer {admin}"})
        ).is_success
        assert (await client.get(f"/status?x=1&token={TOKEN}z")).status_code == 401
        rejected = await client.get("/status", headers={"Authorization": f"Bearer {bad}"})
        assert rejected.status_code == 401

    access_lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/status?token=***" in line for line in access_lines), access_lines
    assert TOKEN not in caplog.text
    assert admin not in caplog.text and bad not in caplog.text
    assert admin.split(".")[2] not in caplog.text


async def test_a_model_server_token_stays_out_of_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under any token_name, at debug level (httpx logs each request's URL), and in the
    record of the PUT /model body another worker follows."""
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    model_server = FastAPI()

    @model_server.get("/model")
    async def no_model() -> Response:
        return Response(status_code=404)

    options = ServerOptions(
        enable_api=True, endpoints={"tracker_store": {"type": "in_memory"}}, models_dir=tmp_path
    )
    app = build_app(options)
    async with (
        serving(model_server) as url,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        body = {"model_server": {"url": f"{url}/model", "token": SERVER_TOKEN, "token_name": "t"}}
        response = await client.put("/model", json=body)
        logging.getLogger("server.api.model_sync").info("Following %s", body)

    assert response.status_code == 400
    assert any("HTTP Request: GET" in r.getMessage() for r in caplog.records)
    assert SERVER_TOKEN not in caplog.text


def test_redact_covers_the_usual_places() -> None:
    assert redact("GET /x?token=abc&y=1") == "GET /x?token=***&y=1"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact("Authorization: Basic dXNlcjpwdw==") == "Authorization: Basic ***"
    assert redact("postgresql://bot:pw@db/x") == "postgresql://bot:***@db/x"
    assert redact("{'token': 'abc', 'url': 'http://a'}") == "{'token': ***, 'url': 'http://a'}"
    assert redact("nothing secret here") == "nothing secret here"
    assert redact("tokenizer: WhitespaceTokenizer") == "tokenizer: WhitespaceTokenizer"
    assert redact("GET http://h/m?key=abc&x=1") == "GET http://h/m?key=***&x=1"
    assert redact("Authorization: Token abc") == "Authorization: Token ***"
    assert redact("{'Authorization': 'ApiKey abc'}") == "{'Authorization': 'ApiKey ***'}"
    assert redact("{'X-Api-Key': 'abc'}") == "{'X-Api-Key': ***}"
    assert redact("keyboard: qwerty, monkey=banana") == "keyboard: qwerty, monkey=banana"


def test_a_password_holding_a_hash_names_the_host_httpx_connects_to() -> None:
    # httpx reads `http://bot:1234#x@host/` as host `bot`, port 1234 (the rest a fragment,
    # never sent). Before, the log showed `http://bot:***@host/`: a host never reached.
    url = "http://bot:1234#x@host/"
    assert (httpx.URL(url).host, httpx.URL(url).port) == ("bot", 1234)
    assert redact(f"cannot reach {url}: refused") == "cannot reach http://bot:1234#***: refused"


# Log lines a client shapes (uvicorn's access log with -v shows the request's path): each
# tried by a redaction pattern from many places, every try reading to the end of the line.
HOSTILE_LINES = {
    "secret-named keys": "a-" * 32_000,  # `\b[\w-]*token` from each word
    "a query holding an @": "a:///" * 13_000,  # every `x://` read its path to the end
    "schemes": "a." * 32_000,  # a scheme from each word, read to the end
    "a JWT's start": "eyJ-" * 16_000,  # `eyJ` from each word, its first part to the end
}


@pytest.mark.parametrize("line", HOSTILE_LINES.values(), ids=HOSTILE_LINES.keys())
def test_a_long_hostile_log_line_is_redacted_at_once(line: str) -> None:
    # Before: each pattern's work grew with the square of the line: a 32 KB path in the
    # access log of a server run with -v held its event loop for about a minute of CPU
    # (CPU before: 117, 11, 4 and 55 s for these lines; now 12-19 ms each).
    logged = f'127.0.0.1:5000 - "GET /{line} HTTP/1.1" 404'
    started = time.thread_time()  # CPU seconds: the host's other work does not count
    assert redact(logged) == logged
    assert time.thread_time() - started < 1


def test_redaction_still_finds_secrets_after_a_hostile_start() -> None:
    # The same work, shown on lines whose secret comes after what a pattern tried first.
    assert redact("a-" * 50 + "my_token: abc") == "a-" * 50 + "my_token: ***"
    assert redact("a:///" * 50 + "x://bot:1/2#pw@host") == "a:///" * 50 + "x://bot:1/2#***"
    assert redact("a." * 50 + "http://u:pw@h") == "a." * 50 + "http://u:***@h"
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    assert redact("eyJ-" * 50 + jwt_like) == "***"  # one run of base64url: all of it
    assert redact("eyJ-" * 50 + "!" + jwt_like) == "eyJ-" * 50 + "!***"
    assert redact("id-" + jwt_like + " ok") == "id-*** ok"
