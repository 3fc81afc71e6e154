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
    1 s graceful shutdown; with `ssl_certfile` the URL is https)."""
    port = free_port()
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
