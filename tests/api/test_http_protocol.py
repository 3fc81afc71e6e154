"""The HTTP protocol `botserver run` serves with: a request head has a size limit and a timeout."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.types import Receive, Scope, Send

from server.api import http_protocol
from server.api.http_protocol import MAX_HEAD_BYTES, BoundedHttpToolsProtocol
from tests.serving import serving


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def send_endless_head(url: str, header: bytes) -> bytes:
    """Header lines until the server answers; what it answered (b"" if it never did)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def write() -> None:
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n")
        for _ in range(40 * MAX_HEAD_BYTES // len(header)):
            writer.write(header)
            await writer.drain()

    writing = asyncio.create_task(write())
    try:
        return await asyncio.wait_for(reader.read(4096), 10)
    except (ConnectionError, TimeoutError):
        return b""
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        writer.close()


def error_of(answer: bytes) -> tuple[int, str]:
    """The status and reason of a raw answer carrying Rasa's error body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head, head
    error = json.loads(body)
    assert error["status"] == "failure"
    return error["code"], error["reason"]


async def test_endless_header_lines_are_refused_with_431() -> None:
    async with serving(hello, http=BoundedHttpToolsProtocol) as url:
        answer = await send_endless_head(url, b"X-Filler: " + b"a" * 1000 + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert error_of(answer) == (431, "RequestHeaderFieldsTooLarge")


async def test_a_request_the_parser_refuses_gets_rasas_error_body() -> None:
    """Before, uvicorn's text/plain "Invalid HTTP request received." (a URL over 64 KiB)."""
    async with serving(hello, http=BoundedHttpToolsProtocol) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET /conversations/" + b"x" * 70_000 + b"/tracker HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(4096), 3)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert error_of(answer) == (400, "BadRequest")


async def test_one_endless_header_value_is_refused_with_431() -> None:
    async with serving(hello, http=BoundedHttpToolsProtocol) as url:
        answer = await send_endless_head(url, b"X-Filler: " + b"a" * 1000)
    assert answer.startswith(b"HTTP/1.1 431 "), answer


async def test_ordinary_and_pipelined_requests_still_work() -> None:
    request = b"GET / HTTP/1.1\r\nHost: t\r\nCookie: " + b"c" * 8000 + b"\r\n\r\n"
    async with serving(hello, http=BoundedHttpToolsProtocol) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request * 20)
        await writer.drain()
        received = b""
        while received.count(b"hello") < 20:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, received
            received += chunk
        writer.close()
    assert received.count(b"HTTP/1.1 200 OK") == 20


class QuickHeadTimeout(BoundedHttpToolsProtocol):
    head_timeout = 0.5


async def test_a_head_sent_a_byte_at_a_time_times_out_with_408() -> None:
    async with serving(hello, http=QuickHeadTimeout) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))

        async def dribble() -> None:
            writer.write(b"GET / HTTP/1.1\r\n")
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)

        dribbling = asyncio.create_task(dribble())
        try:
            answer = await asyncio.wait_for(reader.read(4096), 4)
        finally:
            dribbling.cancel()
            await asyncio.gather(dribbling, return_exceptions=True)
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert error_of(answer) == (408, "RequestTimeout")


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with serving(hello, http=QuickHeadTimeout) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        answer = await asyncio.wait_for(reader.read(4096), 3)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_a_kept_alive_connection_serves_a_request_after_the_head_timeout() -> None:
    async with serving(hello, http=QuickHeadTimeout, timeout_keep_alive=5) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(4096), 3)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            await asyncio.sleep(1)
        writer.close()


async def read_body(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers how many body bytes it read (as a route reading a JSON body does)."""
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read %d" % size})


class QuickBodyTimeout(BoundedHttpToolsProtocol):
    body_timeout = 0.5
    body_min_rate = 100_000


async def post_slowly(url: str, chunks: list[bytes], pause: float) -> bytes:
    """A POST whose body arrives `chunks` apart by `pause`; what the server answered."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    size = sum(len(c) for c in chunks)

    async def dribble() -> None:
        writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)

    dribbling = asyncio.create_task(dribble())
    try:
        return await asyncio.wait_for(reader.read(4096), 4)
    finally:
        dribbling.cancel()
        await asyncio.gather(dribbling, return_exceptions=True)
        writer.close()


async def test_a_body_sent_a_byte_at_a_time_times_out_with_408() -> None:
    """Before, the request (and the route reading its body) was held until the response
    timeout, an hour by default."""
    async with serving(read_body, http=QuickBodyTimeout) as url:
        answer = await post_slowly(url, [b"x"] * 100, 0.05)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert error_of(answer) == (408, "RequestTimeout")


async def test_a_body_that_stops_after_one_byte_is_logged_in_the_singular(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: "A request body arrived too slowly (1 bytes in 1 s)"."""
    with caplog.at_level("WARNING"):
        async with serving(read_body, http=QuickBodyTimeout) as url:
            answer = await post_slowly(url, [b"x", b"y"], 3.0)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    said = [r.getMessage() for r in caplog.records if "too slowly" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("A request body arrived too slowly (1 byte in "), (
        said
    )


async def test_a_body_arriving_at_a_fair_rate_may_take_longer_than_the_timeout() -> None:
    # 0.5 s allowed plus a second per 100,000 bytes: 10 chunks of 20 kB over 1 s pass.
    async with serving(read_body, http=QuickBodyTimeout) as url:
        answer = await post_slowly(url, [b"x" * 20_000] * 10, 0.1)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"read 200000" in answer


async def echo_socket(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message.get("text")})


async def test_a_websocket_outlives_the_body_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from websockets.asyncio.client import connect

    monkeypatch.setattr(http_protocol, "LINGER_SECONDS", 0.0)  # a refusal would close at once
    async with serving(echo_socket, http=QuickBodyTimeout) as url:
        async with connect(url.replace("http://", "ws://")) as socket:
            await asyncio.sleep(0.8)
            await socket.send("still here")
            assert await asyncio.wait_for(socket.recv(), 2) == "still here"


async def slow_or_read(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/slow":
        await asyncio.sleep(1.2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slow done"})
        return
    await read_body(scope, receive, send)


async def test_a_body_waiting_behind_a_pipelined_request_is_not_timed_out() -> None:
    """While the server does not read (a request ahead still running), the body cannot come;
    before, that wait counted as the client's and the 408 was written amid the first answer."""
    async with serving(slow_or_read, http=QuickBodyTimeout) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345"
        )
        received = b""
        while b"slow done" not in received and b" 408 " not in received:
            chunk = await asyncio.wait_for(reader.read(4096), 3)
            assert chunk, received
            received += chunk
        await asyncio.sleep(0.2)
        writer.write(b"67890")
        while b"read 10" not in received and b" 408 " not in received:
            chunk = await asyncio.wait_for(reader.read(4096), 3)
            assert chunk, received
            received += chunk
        writer.close()
    assert b" 408 " not in received, received
    assert received.count(b"HTTP/1.1 200 OK") == 2


async def test_a_head_over_the_limit_in_one_read_is_refused_with_431() -> None:
    """Before, a head arriving in the first read was not counted: a 100 KB Authorization
    header reached the app (a 401) instead of a 431."""
    async with serving(hello, http=BoundedHttpToolsProtocol) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET / HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
            + b"a" * (MAX_HEAD_BYTES + 40_000)
            + b"\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert error_of(answer) == (431, "RequestHeaderFieldsTooLarge")
