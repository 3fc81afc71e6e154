"""Every failure a client sees is Rasa's error body with the matching status."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from pydantic import BaseModel

from server.api.app import create_app
from server.api.errors import ApiError, error_body
from server.api.request_body import read_json_body
from server.api.settings import ApiSettings
from server.errors import (
    InvalidEvent,
    LockTimeout,
    ModelNotFound,
    NoModelLoaded,
    StoreUnavailable,
    TrainingError,
)

ERROR_KEYS = ["version", "status", "message", "reason", "details", "help", "code"]


class ParseRequest(BaseModel):
    text: str
    message_id: str | None = None


def router() -> APIRouter:
    r = APIRouter()

    @r.post("/model/parse")
    async def parse(body: ParseRequest) -> dict[str, Any]:
        return {"text": body.text}

    @r.post("/raw")
    async def raw(request: Request) -> Any:
        return {"got": await read_json_body(request, empty_message="No body.")}

    @r.get("/numbers")
    async def numbers(until: float) -> dict[str, float]:
        return {"until": until}

    @r.get("/raise/{what}")
    async def fail(what: str) -> None:
        errors: dict[str, Exception] = {
            "no-model": NoModelLoaded(),
            "event": InvalidEvent("Unknown event 'nope'"),
            "store": StoreUnavailable("postgresql://bot:hunter2@db/x refused"),
            "lock": LockTimeout("lock u1"),
            "model": ModelNotFound("models/nope.tar.gz"),
            "training": TrainingError("no NLU data"),
            "api": ApiError(404, "Not found", "Conversation ID not found."),
            "bug": KeyError("a server-side bug /etc/secret-path"),
        }
        raise errors[what]

    @r.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(5)
        return {"done": True}

    return r


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = ApiSettings(max_body_bytes=1024, response_timeout=0.2)
    app = create_app(settings, [router()])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_rasa_error(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ERROR_KEYS
    assert body["version"] == "3.6.21"
    assert body["status"] == "failure"
    assert body["reason"] == reason
    assert body["code"] == status
    assert isinstance(body["details"], dict)
    assert isinstance(body["help"], str)
    return body


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    body = assert_rasa_error(await client.get("/no/such/route"), 404, "NotFound")
    assert body["message"] == "Requested URL /no/such/route not found"


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/model/parse")
    body = assert_rasa_error(response, 405, "MethodNotAllowed")
    assert body["message"] == "Method GET not allowed for URL /model/parse"
    assert response.headers["allow"] == "POST, OPTIONS"


@pytest.mark.parametrize("path", ["/model/parse", "/raw"])
async def test_malformed_json_is_400(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(
        path, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    body = assert_rasa_error(response, 400, "BadRequest")
    assert body["message"].startswith("Failed when parsing body as json")


async def test_empty_body_on_a_raw_route_is_400(client: httpx.AsyncClient) -> None:
    body = assert_rasa_error(await client.post("/raw"), 400, "BadRequest")
    assert body["message"] == "No body."


async def test_raw_json_route_reads_any_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/raw", json=[{"event": "slot"}])
    assert response.json() == {"got": [{"event": "slot"}]}


async def test_json_body_without_content_type_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post("/model/parse", content=b'{"text": "hi"}')
    assert response.json() == {"text": "hi"}


async def test_body_failing_validation_is_400_not_422(client: httpx.AsyncClient) -> None:
    body = assert_rasa_error(await client.post("/model/parse", json={}), 400, "BadRequest")
    assert body["details"] == {"in": "body", "parameter": "text"}
    assert "text" in body["message"]


async def test_bad_query_parameter_is_400(client: httpx.AsyncClient) -> None:
    body = assert_rasa_error(await client.get("/numbers?until=soon"), 400, "BadRequest")
    assert body["details"] == {"in": "query", "parameter": "until"}
    assert "soon" not in body["message"]


async def test_declared_body_too_large_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/raw", content=b"[" + b"1," * 1000 + b"1]")
    body = assert_rasa_error(response, 413, "PayloadTooLarge")
    assert "1024" in body["message"]


async def test_streamed_body_too_large_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"["
        for _ in range(100):
            yield b"1," * 10
        yield b"1]"

    response = await client.post("/raw", content=chunks())
    assert "content-length" not in response.request.headers
    assert_rasa_error(response, 413, "PayloadTooLarge")


async def test_body_within_the_limit_passes(client: httpx.AsyncClient) -> None:
    assert (await client.post("/raw", json=list(range(100)))).status_code == 200


@pytest.mark.parametrize(
    ("what", "status", "reason", "message"),
    [
        (
            "no-model",
            409,
            "Conflict",
            "No agent loaded. To continue processing, a model of a trained agent needs to be "
            "loaded.",
        ),
        ("event", 400, "BadRequest", "Unknown event 'nope'"),
        ("store", 503, "ServiceUnavailable", "A storage backend is unavailable; retry later."),
        ("lock", 503, "ServiceUnavailable", "The conversation is busy; retry later."),
        ("model", 400, "BadRequest", "models/nope.tar.gz"),
        ("training", 500, "TrainingError", "no NLU data"),
        ("api", 404, "Not found", "Conversation ID not found."),
    ],
)
async def test_our_errors_map_to_statuses(
    client: httpx.AsyncClient, what: str, status: int, reason: str, message: str
) -> None:
    body = assert_rasa_error(await client.get(f"/raise/{what}"), status, reason)
    assert body["message"] == message


async def test_no_model_body_is_rasas(client: httpx.AsyncClient) -> None:
    body = (await client.get("/raise/no-model")).json()
    assert body["help"] == "https://rasa.com/docs/rasa/user-guide/configuring-http-api/"


async def test_unavailable_store_says_when_to_retry(client: httpx.AsyncClient) -> None:
    response = await client.get("/raise/store")
    assert response.headers["retry-after"] == "1"
    assert "hunter2" not in response.text


async def test_unknown_exception_is_a_generic_500(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = assert_rasa_error(await client.get("/raise/bug"), 500, "ServerError")
    assert "secret-path" not in body["message"] and "Traceback" not in str(body)
    assert "KeyError" in caplog.text  # the details go to the log


async def test_response_timeout_is_503(client: httpx.AsyncClient) -> None:
    body = assert_rasa_error(await client.get("/slow"), 503, "ResponseTimeout")
    assert "0.2 s" in body["message"]


def test_error_body_keeps_rasas_key_order() -> None:
    body = error_body(400, "BadRequest", "m", {"parameter": "p", "in": "query"})
    assert list(body) == ERROR_KEYS


async def test_a_500_names_a_request_id_that_finds_its_one_traceback_in_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the log said "Unhandled error while serving a request", with no route and
    nothing a client's report could be matched with."""
    caplog.set_level(logging.ERROR)
    for sent, kept in (("proxy-7f3a", True), ("x\x1b[2J forged line", False), (None, False)):
        caplog.clear()
        headers = {"X-Request-ID": sent} if sent else {}
        response = await client.get("/raise/bug", headers=headers)
        body = assert_rasa_error(response, 500, "ServerError")
        ident = response.headers["x-request-id"]
        assert body["details"] == {"request_id": ident}
        assert (ident == sent) is kept and re.fullmatch(r"[\w.:+/=-]+", ident)
        [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert f"GET /raise/bug (request id {ident})" in record.getMessage()
        assert record.exc_info is not None and "Traceback" not in response.text


async def test_a_store_failure_names_its_request_id_too(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/raise/store")
    ident = response.headers["x-request-id"]
    assert response.json()["details"] == {"request_id": ident}
    assert f"GET /raise/store (request id {ident})" in caplog.text


async def test_a_client_leaving_before_its_body_ends_is_no_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that closes the connection halfway through its body (a phone losing its
    network, a cancelled upload): before, an "Unhandled error" with a traceback each time."""
    from tests.serving import serving

    caplog.set_level(logging.INFO)
    app = create_app(ApiSettings(), [router()])
    async with serving(app) as url:
        port = int(url.rsplit(":", 1)[1])
        for head in (
            b"Content-Length: 100\r\n\r\n" + b'{"text": "hi"',
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n[{"ev\r\n',
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /raw HTTP/1.1\r\nHost: t\r\n" + head)
            await writer.drain()
            await asyncio.sleep(0.2)  # the route is reading the body
            writer.close()
            await writer.wait_closed()
        for _ in range(100):
            if caplog.text.count("before its request body ended") == 2:
                break
            await asyncio.sleep(0.02)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert caplog.text.count("POST /raw: the client closed the connection") == 2
