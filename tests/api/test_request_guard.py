"""The request guard: a direct route answers exactly as through the router, errors included."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from starlette.types import Receive, Scope, Send

from server.api.app import create_app
from server.api.middleware.guard import RequestGuardMiddleware
from server.api.settings import ApiSettings
from server.errors import StoreUnavailable
from tests.serving import serving


class Echo:
    """An opted-in ASGI endpoint: echoes the body, or fails as the body asks."""

    direct_route = True

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = (await receive())["body"]
        if body == b"store":
            raise StoreUnavailable("the database went away")
        if body == b"boom":
            raise RuntimeError("a bug")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def client_for(echo: Echo, **settings: Any) -> httpx.AsyncClient:
    router = APIRouter()
    router.add_route("/echo", echo, methods=["POST"])  # type: ignore[arg-type]
    app = create_app(ApiSettings(**settings), [router])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_direct_route_answers_like_the_routed_one() -> None:
    echo = Echo()
    async with client_for(echo) as client:
        for _ in range(3):
            response = await client.post("/echo", content=b"hello")
            assert (response.status_code, response.content) == (200, b"hello")
    assert echo.calls == 3


async def test_errors_of_a_direct_route_are_rasa_bodies() -> None:
    async with client_for(Echo()) as client:
        await client.post("/echo", content=b"learn the route")
        store = await client.post("/echo", content=b"store")
        bug = await client.post("/echo", content=b"boom")
    assert store.status_code == 503
    assert store.json()["reason"] == "ServiceUnavailable"
    assert bug.status_code == 500
    assert "a bug" not in bug.text


async def test_other_methods_still_go_through_the_router() -> None:
    async with client_for(Echo()) as client:
        await client.post("/echo", content=b"learn the route")
        response = await client.get("/echo")
    assert response.status_code == 405
    assert response.json()["code"] == 405


async def test_a_method_the_route_refuses_is_never_learned_as_direct() -> None:
    # Before: the router names a route that matches the path only (its 405) as the endpoint,
    # so the first GET or OPTIONS was learned and the second ran the endpoint: the REST
    # webhook answered a browser's second preflight (or a GET with a JSON body) as a message.
    echo = Echo()
    async with client_for(echo) as client:
        answers = [await client.request(m, "/echo") for m in ("GET", "GET", "OPTIONS", "OPTIONS")]
    assert [a.status_code for a in answers] == [405, 405, 200, 200]
    assert answers[3].headers["allow"] == "POST, OPTIONS"
    assert echo.calls == 0


async def test_body_limit_applies_to_a_direct_route() -> None:
    async with client_for(Echo(), max_body_bytes=10) as client:
        await client.post("/echo", content=b"short")
        response = await client.post("/echo", content=b"x" * 11)
    assert response.status_code == 413
    assert response.json()["reason"] == "PayloadTooLarge"


async def test_cors_headers_stay_on_a_direct_route() -> None:
    async with client_for(Echo(), cors_origins=("https://chat.example",)) as client:
        answers = [
            await client.post("/echo", content=b"hi", headers={"Origin": "https://chat.example"})
            for _ in range(3)
        ]
    for response in answers:
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://chat.example"


async def test_a_timeout_applies_to_a_direct_route() -> None:
    class Slow(Echo):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if self.calls:
                await asyncio.sleep(5)
            await super().__call__(scope, receive, send)

    async with client_for(Slow(), response_timeout=0.2) as client:
        await client.post("/echo", content=b"learn the route")
        response = await client.post("/echo", content=b"then wait")
    assert response.status_code == 503
    assert response.json()["reason"] == "ResponseTimeout"


async def test_only_the_request_past_its_deadline_times_out() -> None:
    # The loop's clock is moved on by hand, half the timeout at a time, so the requests'
    # deadlines lie where the test puts them, whatever the host's load. (Before: real sleeps
    # against a timeout of 0.3 s; on a loaded host, a request that slept 0.05 s took longer
    # and was answered 503.)
    timeout = 3600.0
    slow_in, fast_in, slow_cut = asyncio.Event(), asyncio.Semaphore(0), asyncio.Event()

    class SlowOnAsk(Echo):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            body = (await receive())["body"]
            if body == b"slow":
                slow_in.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    slow_cut.set()
            elif body == b"fast":  # in flight when the slow one's deadline passes
                fast_in.release()
                await slow_cut.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

    loop = asyncio.get_running_loop()
    clock = loop.time
    skipped = 0.0
    loop.time = lambda: clock() + skipped  # type: ignore[method-assign]
    try:
        async with client_for(SlowOnAsk(), response_timeout=timeout) as client:
            slow = asyncio.create_task(client.post("/echo", content=b"slow"))
            await slow_in.wait()
            skipped += timeout / 2
            fast = [asyncio.create_task(client.post("/echo", content=b"fast")) for _ in range(3)]
            for _ in fast:
                await fast_in.acquire()
            skipped += timeout / 2 + 1  # past the slow one's deadline, half a timeout before theirs
            timed_out = await slow
            answers = [await request for request in fast]
            after = await client.post("/echo", content=b"after")
    finally:
        del loop.time
    assert [r.status_code for r in answers] == [200] * 3
    assert timed_out.status_code == 503
    assert timed_out.json()["reason"] == "ResponseTimeout"
    assert (after.status_code, after.content) == (200, b"after")


async def test_a_cancellation_that_is_not_the_timeout_goes_on() -> None:
    # A client that went away cancels the request's task: no 503 is sent for it.
    started = asyncio.Event()

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await asyncio.sleep(5)

    guard = RequestGuardMiddleware(endpoint, timeout=10.0)
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
    task = asyncio.create_task(guard(scope, receive, send))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sent == []


async def test_an_error_answer_is_sent_whole_to_a_slow_client_past_the_deadline() -> None:
    # The endpoint fails just before the response timeout; its 500 reaches a client that
    # reads slowly, past the timeout: the request's deadline does not cut the answer.
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("boom")

    guard = RequestGuardMiddleware(endpoint, timeout=0.1)
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        await asyncio.sleep(0.1)  # a slow client's socket
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
    await asyncio.wait_for(guard(scope, receive, send), 5)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 500


async def _raw_request(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_a_small_content_length_beside_chunked_encoding_does_not_pass_the_limit(
    http: str,
) -> None:
    """h11 frames such a body by its chunks: the bytes are counted, not the header trusted."""
    echo = Echo()
    router = APIRouter()
    router.add_route("/echo", echo, methods=["POST"])  # type: ignore[arg-type]
    app = create_app(ApiSettings(max_body_bytes=100), [router])
    body = b"a" * 500
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    async with serving(app, http=http) as url:
        for headers in (
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ):
            answer = await _raw_request(
                url, b"POST /echo HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n" + chunked
            )
            # httptools refuses the combination outright (400); h11 reads the chunks (413).
            assert answer.split(b" ", 2)[1] in (b"400", b"413"), answer
            assert body not in answer
