"""An ASGI app served by a real uvicorn on a free local port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from bench.tcp_proxy import free_port


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, **config: Any) -> AsyncIterator[str]:
    """Runs `app` for the block and yields its base URL; `config` goes to `uvicorn.Config`
    (unless it says otherwise: uvicorn's loggers left to pytest's capture, warnings only, and a
    1 s graceful shutdown; with `ssl_certfile` the URL is https; `port`: a free one unless
    given)."""
    port = config.pop("port", None) or free_port()
    options: dict[str, Any] = {
        "log_config": None,
        "log_level": "warning",
        "timeout_graceful_shutdown": 1,
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # bounded: a server that fails to start must not hang the test
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        assert server.started, "uvicorn did not start"
        scheme = "https" if config.get("ssl_certfile") else "http"
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def serving_from_the_first_retry(
    app: ASGIApp, monkeypatch: Any
) -> AsyncIterator[tuple[str, list[float]]]:
    """A base URL whose port refuses connections (a server restarting) until the first
    back-off of a connect retry (`server.http_clients`), during which `app` starts serving
    there; yields (URL, the back-offs waited)."""
    from server import http_clients

    port = free_port()
    pauses: list[float] = []
    listening = contextlib.AsyncExitStack()

    async def back_during(delay: float) -> None:
        pauses.append(delay)
        await listening.enter_async_context(serving(app, port=port))

    monkeypatch.setattr(http_clients, "_pause", back_during, raising=False)
    async with listening:
        yield f"http://127.0.0.1:{port}", pauses


@contextlib.asynccontextmanager
async def failing_handshakes(after: float) -> AsyncIterator[tuple[str, list[float]]]:
    """An https base URL whose server takes each connection and closes it `after` seconds,
    before any TLS handshake (a TLS proxy whose backend is down): the client's ConnectError
    comes only then. Yields (URL, the loop time of each connection taken)."""
    taken: list[float] = []

    async def close_later(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken.append(asyncio.get_running_loop().time())
        await asyncio.sleep(after)
        writer.close()

    server = await asyncio.start_server(close_later, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}", taken
    finally:
        server.close()
        await server.wait_closed()


async def until_arrived(arrived: list[Any], count: int, within: float = 4.0) -> None:
    """Waits, up to `within` seconds, until `arrived` (what a test server appends to) holds
    `count` entries; fails saying how many came."""
    for _ in range(int(within / 0.01)):
        if len(arrived) >= count:
            return
        await asyncio.sleep(0.01)
    assert len(arrived) == count, f"{len(arrived)} of {count} arrived within {within:g} s"
