"""An HTTP client of an in-process server (API enabled, in-memory trackers) on one archive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from server.api.server import ServerOptions, build_app


@asynccontextmanager
async def model_client(archive: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server that loaded `archive`, for as long as the block runs."""
    app = build_app(
        ServerOptions(
            model_path=archive,
            enable_api=True,
            endpoints={"tracker_store": {"type": "in_memory"}},
            models_dir=archive.parent,
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
