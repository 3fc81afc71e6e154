"""Tokens and JWTs never reach the logs, uvicorn's access log included."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import jwt
import pytest
import uvicorn
from fastapi import APIRouter, Depends

from bench.tcp_proxy import free_port
from server.api.app import create_app
from server.api.settings import ApiSettings
from server.auth import AuthConfig, install_log_redaction, redact, require_auth

TOKEN = "thisismysecret-token-value"
JWT_SECRET = "a-jwt-secret-that-is-long-enough-for-hs256"


@asynccontextmanager
async def running(app, port: int) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=True)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # bounded: a server that fails to start must not hang the test
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


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
    async with running(app, free_port()) as url, httpx.AsyncClient(base_url=url) as client:
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


def test_redact_covers_the_usual_places() -> None:
    assert redact("GET /x?token=abc&y=1") == "GET /x?token=***&y=1"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact("Authorization: Basic dXNlcjpwdw==") == "Authorization: Basic ***"
    assert redact("postgresql://bot:pw@db/x") == "postgresql://bot:***@db/x"
    assert redact("{'token': 'abc', 'url': 'http://a'}") == "{'token': ***, 'url': 'http://a'}"
    assert redact("nothing secret here") == "nothing secret here"
    assert redact("tokenizer: WhitespaceTokenizer") == "tokenizer: WhitespaceTokenizer"
