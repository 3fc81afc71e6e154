"""A database host that takes connections but never answers (a hung server, a firewall
dropping packets, a dead host behind a load balancer) is an outage: 503, never a 500."""

from __future__ import annotations

import asyncio

import pytest

from bench.tcp_proxy import TcpProxy
from server.errors import StoreUnavailable
from server.trackers.factory import create_tracker_store
from tests.trackers.persistence_fixtures import POSTGRES, require_service


class SilentProxy(TcpProxy):
    """Accepts connections and passes nothing on, either way."""

    async def forward(self, data: bytes, writer: asyncio.StreamWriter, upstream: bool) -> bool:
        await asyncio.Event().wait()
        return False


async def test_a_postgresql_that_never_answers_is_unavailable() -> None:
    """Before, the connect timeout surfaced as an IndexError: a 500 to the client, and the
    readiness probe failed with a traceback."""
    require_service("PostgreSQL", POSTGRES)
    proxy = SilentProxy(POSTGRES)
    await proxy.restore()
    store = create_tracker_store(
        {
            "type": "sql",
            "dialect": "postgresql",
            "url": "127.0.0.1",
            "port": proxy.port,
            "username": "postgres",
            "db": "test",
        }
    )
    try:
        with pytest.raises(StoreUnavailable, match="is unavailable: TimeoutError"):
            await store.ping()
        with pytest.raises(StoreUnavailable, match="is unavailable: TimeoutError"):
            await store.load("someone")
    finally:
        await store.close()
        await proxy.cut()
