"""Redis that is up but refuses commands (out of memory with maxmemory and noeviction):
the stores raise StoreUnavailable (503), as for an unreachable Redis. Before, the refusal
escaped as an unexplained 500, and the REST webhook answered 200 for a message it had
neither handled nor stored.

A Redis server of our own (the shared one must not be reconfigured), full from the start.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bench.tcp_proxy import free_port
from server.errors import StoreUnavailable
from server.trackers.factory import create_lock_store, create_tracker_store


@pytest.fixture
async def full_redis(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A private Redis with maxmemory reached; yields its endpoints.yml settings."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *[
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "1mb",
            "--maxmemory-policy",
            "noeviction",
            "--dir",
            str(tmp_path),
        ],
        stdout=asyncio.subprocess.DEVNULL,
    )
    client = Redis(port=port)
    try:
        for _ in range(100):
            try:
                await client.ping()
                break
            except OSError:
                await asyncio.sleep(0.05)
        try:
            for n in range(1000):
                await client.set(f"filler:{n}", "x" * 10_000)
        except Exception:  # OutOfMemoryError: full
            pass
        yield {"url": "127.0.0.1", "port": port, "db": 0}
    finally:
        await client.aclose()
        process.terminate()
        await process.wait()


async def test_a_full_redis_lock_store_is_unavailable(full_redis: dict[str, Any]) -> None:
    store = create_lock_store({"type": "redis", **full_redis})
    try:
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            async with store.lock("alice", wait_timeout=1):
                pass
    finally:
        await store.close()


async def test_a_full_redis_tracker_store_is_unavailable(full_redis: dict[str, Any]) -> None:
    store = create_tracker_store({"type": "redis", **full_redis})
    try:
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            await store.append("alice", [{"event": "bot", "timestamp": 1.0, "text": "hi"}])
    finally:
        await store.close()
