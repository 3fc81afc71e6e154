"""Redis that is up but refuses commands (out of memory with maxmemory and noeviction):
the stores raise StoreUnavailable (503), as for an unreachable Redis. Before, the refusal
escaped as an unexplained 500, and the REST webhook answered 200 for a message it had
neither handled nor stored.

A Redis server of our own (the shared one must not be reconfigured), full from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bench.tcp_proxy import free_port
from server.api.server import ServerOptions, build_app
from server.errors import StoreUnavailable
from server.trackers.factory import create_lock_store, create_tracker_store
from server.trackers.redis_store import RedisTrackerStore
from tests.tls_certificates import self_signed


@contextlib.asynccontextmanager
async def private_redis(
    tmp_path: Path, *options: str, password: str | None = None, tls: bool = False
) -> AsyncIterator[tuple[Redis, int]]:
    """A Redis server of our own with `options` (`tls`: only TLS, with a self-signed
    certificate for localhost); yields a client of it and its port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    settings = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    tls_client: dict[str, Any] = {}
    if tls:
        cert, key = self_signed(tmp_path)
        settings[1] = "0"
        settings += ["--tls-port", str(port), "--tls-cert-file", str(cert)]
        settings += ["--tls-key-file", str(key), "--tls-auth-clients", "no"]
        tls_client = {"ssl": True, "ssl_ca_certs": str(cert)}
    process = await asyncio.create_subprocess_exec(
        "redis-server",
        *settings,
        *options,
        "--dir",
        str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
    )
    client = Redis(port=port, password=password, **tls_client)
    try:
        for _ in range(100):
            try:
                await client.ping()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield client, port
    finally:
        await client.aclose()
        process.terminate()
        await process.wait()


@pytest.fixture
async def full_redis(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A private Redis with maxmemory reached; yields its endpoints.yml settings."""
    full = ("--maxmemory", "1mb", "--maxmemory-policy", "noeviction")
    async with private_redis(tmp_path, *full) as (client, port):
        try:
            for n in range(1000):
                await client.set(f"filler:{n}", "x" * 10_000)
        except Exception:  # OutOfMemoryError: full
            pass
        yield {"url": "127.0.0.1", "port": port, "db": 0}


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


async def test_a_full_redis_is_not_ready_and_said_at_start_up(
    full_redis: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """maxmemory reached with `noeviction`: every turn's lease (SET) and append (RPUSH) is
    refused, as the two tests above show. Before, the stores' pings (a release script, a
    PEXPIRE: commands Redis runs when full) passed: /health/ready said ready and the start
    said nothing while every turn answered 503."""
    lock_store = create_lock_store({"type": "redis", **full_redis})
    tracker_store = create_tracker_store({"type": "redis", **full_redis})
    try:
        for store in (lock_store, tracker_store):
            with pytest.raises(StoreUnavailable, match="maxmemory"):
                await store.ping()  # type: ignore[union-attr]  # (the readiness probe's)
    finally:
        await lock_store.close()
        await tracker_store.close()
    line = await start_line({"type": "redis", **full_redis}, caplog)
    assert line.levelname == "WARNING"
    assert line.getMessage().endswith("; turns answer 503 until it takes them"), line


async def start_line(
    lock_store: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> logging.LogRecord:
    """The one line a server with `lock_store` logs about it while it starts."""
    endpoints = {"tracker_store": {"type": "in_memory"}, "lock_store": lock_store}
    app = build_app(ServerOptions(model_path=None, enable_api=True, endpoints=endpoints))
    with caplog.at_level(logging.INFO):
        async with app.router.lifespan_context(app):
            pass
    (line,) = [r for r in caplog.records if "lock store" in r.getMessage()]
    return line


@pytest.mark.parametrize("password", ["wrong", None])
async def test_a_lock_store_redis_refuses_to_log_in_is_an_error_at_start_up(
    password: str | None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong or missing `password`: before, a WARNING that turns answer 503 "until it is
    reachable", as if Redis were down (for a missing one quoting only Redis's `HELLO must
    be called with the client already authenticated`), though waiting never mends it."""
    async with private_redis(tmp_path, "--requirepass", "s3cret", password="s3cret") as (_, port):
        lock_store = {"type": "redis", "url": "127.0.0.1", "port": port, "password": password}
        line = await start_line(lock_store, caplog)
    assert line.levelname == "ERROR"
    assert "refused its credentials (check `username` and `password`)" in line.getMessage()


async def test_a_lock_store_redis_certificate_not_trusted_is_an_error_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`use_ssl: true` without the `ssl_ca_certs` that signed Redis's certificate: before, a
    WARNING that turns answer 503 "until it is reachable", though waiting never mends it."""
    async with private_redis(tmp_path, tls=True) as (_, port):
        lock_store = {"type": "redis", "url": "localhost", "port": port, "use_ssl": True}
        line = await start_line(lock_store, caplog)
    assert line.levelname == "ERROR"
    assert "TLS certificate is not trusted (check `ssl_ca_certs`)" in line.getMessage()


async def test_a_lock_store_on_a_read_only_replica_is_said_at_start_up_and_not_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`url` naming a replica (a reader endpoint, a Sentinel replica): it answers PING, and
    refuses every turn's lease ("You can't write against a read only replica"). Before, the
    start said nothing and /health/ready, which sent a PING too, said ready while every turn
    answered 503."""
    replica = ("--replicaof", "127.0.0.1", str(free_port()))  # (its master is nowhere)
    async with private_redis(tmp_path, *replica) as (_, port):
        lock_store = {"type": "redis", "url": "127.0.0.1", "port": port}
        line = await start_line(lock_store, caplog)
        store = create_lock_store(lock_store)
        try:
            with pytest.raises(StoreUnavailable, match="read only replica"):
                await store.ping()  # type: ignore[attr-defined]  # (the readiness probe's)
        finally:
            await store.close()
    assert line.levelname == "WARNING"
    said = line.getMessage()
    assert "cannot take commands now: You can't write against a read only replica" in said
    assert said.endswith("; turns answer 503 until it takes them"), said


async def test_a_lock_store_user_not_allowed_scripts_is_an_error_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis user whose ACL allows PING but not the scripts every turn runs: before, the
    start said nothing and every turn failed (500)."""
    async with private_redis(tmp_path) as (client, port):
        await client.execute_command(
            "ACL", "SETUSER", "bot", "on", ">pw", "~*", "&*", "+@all", "-evalsha", "-eval"
        )
        lock_store = {"type": "redis", "url": "127.0.0.1", "port": port}
        line = await start_line({**lock_store, "username": "bot", "password": "pw"}, caplog)
    assert line.levelname == "ERROR"
    assert "no permissions to run the 'evalsha' command" in line.getMessage()
    assert line.getMessage().endswith("every turn fails (500) until this is fixed")


async def test_a_tracker_store_on_a_read_only_replica_is_not_ready(tmp_path: Path) -> None:
    """A replica answers PING and loads, and refuses every append: before, /health/ready
    (whose tracker store check was a PING) said ready while every turn answered 503."""
    replica = ("--replicaof", "127.0.0.1", str(free_port()))  # (its master is nowhere)
    async with private_redis(tmp_path, *replica) as (_, port):
        store = create_tracker_store({"type": "redis", "url": "127.0.0.1", "port": port})
        try:
            with pytest.raises(StoreUnavailable, match="read only replica"):
                await store.ping()  # type: ignore[attr-defined]  # (the readiness probe's)
        finally:
            await store.close()


async def test_an_export_read_without_memory_usage_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user whose ACL lacks MEMORY: the export's reads (`load_all_of` with a byte budget)
    go on, whole batches at a time, and one warning says so and what to grant. Before, the
    budget was dropped without a word."""
    async with private_redis(tmp_path) as (client, port):
        await client.acl_setuser(
            "exporter",
            enabled=True,
            passwords=["+exporter-pw-7c1"],
            keys=["~*"],
            commands=["+@all", "-memory"],
        )
        store = create_tracker_store(
            {
                "type": "redis",
                "url": "127.0.0.1",
                "port": port,
                "username": "exporter",
                "password": "exporter-pw-7c1",
            }
        )
        assert isinstance(store, RedisTrackerStore)
        try:
            for sender_id in ("ana", "bob"):
                await store.append(sender_id, [{"event": "bot", "timestamp": 1.0, "text": "hi"}])
            with caplog.at_level(logging.WARNING, logger="server.trackers.redis_store"):
                for _ in range(2):  # two batches of an export
                    read = [s async for s, _ in store.load_all_of(["ana", "bob"], max_bytes=10)]
                    assert read == ["ana", "bob"]
        finally:
            await store.close()
    said = [r.getMessage() for r in caplog.records if r.name == "server.trackers.redis_store"]
    assert len(said) == 1, said
    assert said[0].startswith("Redis refused MEMORY USAGE (") and said[0].endswith(
        "not in parts of at most 10 bytes, and a batch of long conversations takes as much "
        "memory here. Grant the command to the user: ACL SETUSER <user> +memory|usage"
    ), said


async def test_a_prune_on_a_redis_refusing_select_in_scripts_deletes_as_before_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Redis tracker store's delete checks the prune's lease in the same script, with a
    `SELECT` of the lock store's database (1 by default). A server refusing `SELECT` inside
    a script (Dragonfly with declared keys; here an ACL changed after the stores connected)
    answers each conversation's script with an error: the prune deletes as with a lock
    store on another server (the look just before the delete is the last), saying so once.
    Before, it stopped at the first batch on "The user executing the script can't run this
    command", having deleted nothing."""
    from server.trackers.retention import delete_conversations_older_than

    now = time.time()
    old = {"event": "bot", "timestamp": now - 200 * 86400, "text": "x", "data": {}}
    async with private_redis(tmp_path) as (client, port):
        store = create_tracker_store({"type": "redis", "url": "127.0.0.1", "port": port})
        locks = create_lock_store({"type": "redis", "url": "127.0.0.1", "port": port, "db": 1})
        try:
            for name in ("ana", "al", "bob"):
                await store.append(name, [dict(old, timestamp=now) if name == "bob" else old])
            async with locks.lock("warm-up", wait_timeout=1):
                pass  # (both connected: the lock store's connection selected its db)
            await client.execute_command("ACL", "SETUSER", "default", "-select")
            with caplog.at_level(logging.WARNING):
                pruned = await delete_conversations_older_than(store, 90 * 86400, locks)
            assert (pruned.deleted, pruned.lost) == (2, [])
            assert await store.keys() == ["bob"]
            await store.append("cleo", [old])
            pruned = await delete_conversations_older_than(store, 90 * 86400, locks)
            assert (pruned.deleted, pruned.lost) == (1, [])
        finally:
            await store.close()
            await locks.close()
    said = [r.getMessage() for r in caplog.records if "SELECT" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(
        f"The tracker store (redis at 127.0.0.1:{port}/0) refused the prune script's SELECT "
        "of the lock store's database 1 ("
    ), said
    assert said[0].endswith("Put both stores in one database (their `db`) for that check."), said
