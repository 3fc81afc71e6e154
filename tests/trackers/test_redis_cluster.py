"""A Redis Cluster node as the Redis tracker or lock store's `url`: refused with a message
naming the setting, at the start-up check and at a prune's start, and at any command that
meets a cluster's reply. Before, "Keys in request don't hash to the same slot" at every turn
(500), "SELECT is not allowed in cluster mode" with the lock store's default `db`, and a
prune that scanned the one node and said "Deleted 0 conversations." (exit 0).

A Redis of our own in cluster mode, one node serving every slot."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import cli
from bench.tcp_proxy import free_port
from server.api.server import ServerOptions, build_app
from server.errors import StoreFailed
from server.trackers.factory import create_lock_store, create_tracker_store
from tests.trackers.test_redis_refusals import private_redis

CLUSTER_SAID = "is a node of a Redis Cluster (cluster_enabled:1 in INFO cluster)"


@pytest.fixture
async def cluster_node(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A one-node Redis Cluster serving every slot; its endpoints.yml settings."""
    conf = str(tmp_path / "nodes.conf")
    # (Its bus port, else the port + 10000: past 65535 for a free port above 55535.)
    bus = ("--cluster-port", str(free_port()))
    async with private_redis(
        tmp_path, "--cluster-enabled", "yes", "--cluster-config-file", conf, *bus
    ) as (client, port):
        await client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        for _ in range(100):  # (the node serves them once its state is ok)
            if (await client.cluster("INFO"))["cluster_state"] == "ok":
                break
            await asyncio.sleep(0.05)
        yield {"type": "redis", "url": "127.0.0.1", "port": port}


async def test_the_start_up_checks_name_the_setting_to_change(
    cluster_node: dict[str, Any],
) -> None:
    """The stores' pings (the start-up check, /health/ready) refuse a cluster node. Before,
    the lock store's passed (one key, in a slot the node serves) and turns failed later."""
    tracker_store = create_tracker_store(cluster_node)
    lock_store = create_lock_store({**cluster_node, "db": 0})
    try:
        with pytest.raises(StoreFailed) as tracker_refused:
            await tracker_store.ping()
        with pytest.raises(StoreFailed) as lock_refused:
            await lock_store.ping()  # type: ignore[attr-defined]  # (the Redis lock store's)
    finally:
        await tracker_store.close()
        await lock_store.close()
    assert CLUSTER_SAID in str(tracker_refused.value)
    assert "point tracker_store.url at a standalone Redis server" in str(tracker_refused.value)
    assert CLUSTER_SAID in str(lock_refused.value)
    assert "point lock_store.url at a standalone Redis server" in str(lock_refused.value)


async def test_a_server_on_a_cluster_node_says_so_as_it_starts(
    cluster_node: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Both stores on the node: one ERROR each while the server starts. Before, nothing at
    start (the lock store's check passed), then a 500 at every turn."""
    endpoints = {"tracker_store": cluster_node, "lock_store": {**cluster_node, "db": 0}}
    app = build_app(ServerOptions(model_path=None, enable_api=True, endpoints=endpoints))
    with caplog.at_level(logging.INFO):
        async with app.router.lifespan_context(app):
            pass
    said = [r.getMessage() for r in caplog.records if CLUSTER_SAID in r.getMessage()]
    assert len(said) == 2, caplog.text
    assert all(line.endswith("every turn fails (500) until this is fixed") for line in said)
    # (Both stores are asked at once: their lines come in the order they answer.)
    assert sorted(line.split(" (")[0] for line in said) == ["The lock store", "The tracker store"]


async def test_the_lock_stores_default_db_on_a_cluster_node_says_what_it_is(
    cluster_node: dict[str, Any],
) -> None:
    """Its `db` 1 (Rasa's default too): before, "SELECT is not allowed in cluster mode"."""
    lock_store = create_lock_store(cluster_node)
    try:
        with pytest.raises(StoreFailed) as refused:
            await lock_store.ping()  # type: ignore[attr-defined]  # (the Redis lock store's)
    finally:
        await lock_store.close()
    assert "is a node of a Redis Cluster (Redis said: " in str(refused.value)
    assert "point lock_store.url at a standalone Redis server" in str(refused.value)


async def test_a_turn_meeting_a_cluster_reply_says_what_it_is(
    cluster_node: dict[str, Any],
) -> None:
    """A turn's append (a script over a conversation's two keys, in two slots): before, only
    "Keys in request don't hash to the same slot"."""
    store = create_tracker_store(cluster_node)
    try:
        with pytest.raises(StoreFailed) as refused:
            await store.append("ana", [{"event": "action", "name": "action_listen"}])
    finally:
        await store.close()
    assert CLUSTER_SAID not in str(refused.value)  # (the reply, not INFO, told)
    assert "is a node of a Redis Cluster" in str(refused.value)
    assert "point tracker_store.url at a standalone Redis server" in str(refused.value)


async def test_a_prune_on_a_cluster_node_is_refused(
    cluster_node: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `Deleted 0 conversations.`, exit 0 (its SCAN sees the one node's keys)."""
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(
        f"tracker_store:\n  type: redis\n  url: 127.0.0.1\n  port: {cluster_node['port']}\n"
    )
    prune = ["prune", "--older-than-days", "5", "--endpoints", str(endpoints)]
    code = await asyncio.to_thread(cli.main, prune)
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert CLUSTER_SAID in err, err


async def test_a_server_whose_redis_tracker_store_is_away_starts_as_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The start-up check of the tracker store's server leaves an unreachable Redis to the
    turns (their 503s): the server starts, and nothing about a cluster is said."""
    endpoints = {"tracker_store": {"type": "redis", "url": "127.0.0.1", "port": free_port()}}
    app = build_app(ServerOptions(model_path=None, enable_api=True, endpoints=endpoints))
    with caplog.at_level(logging.INFO):
        async with app.router.lifespan_context(app):
            pass
    assert "Redis Cluster" not in caplog.text


async def test_a_user_not_allowed_info_is_not_refused() -> None:
    """A standalone Redis whose ACL user may not run INFO (NOPERM), as a managed Redis's
    restricted user: the stores' pings and a turn pass, nothing said about a cluster."""
    from redis.asyncio import Redis
    from redis.exceptions import NoPermissionError

    from tests.trackers.persistence_fixtures import REDIS, require_service, unique_name

    require_service("Redis", REDIS)
    user, prefix = unique_name("bsnoinfo"), unique_name("bsnoinfo")
    admin = Redis(host=REDIS[0], port=REDIS[1])
    await admin.acl_setuser(
        user,
        enabled=True,
        passwords=["+not-allowed-info"],
        keys=[f"{prefix}*"],
        channels=["*"],
        commands=["+@all", "-info"],
    )
    settings = {
        "type": "redis",
        "url": REDIS[0],
        "port": REDIS[1],
        "db": 0,
        "username": user,
        "password": "not-allowed-info",
        "key_prefix": prefix,
    }
    tracker_store, lock_store = create_tracker_store(settings), create_lock_store(settings)
    try:
        restricted = Redis(host=REDIS[0], port=REDIS[1], username=user, password="not-allowed-info")
        try:
            with pytest.raises(NoPermissionError):  # (the user is as meant)
                await restricted.info("cluster")
        finally:
            await restricted.aclose()
        await tracker_store.ping()
        await lock_store.ping()  # type: ignore[attr-defined]  # (the Redis lock store's)
        await tracker_store.append("ana", [{"event": "action", "name": "action_listen"}])
        assert await tracker_store.load("ana")
    finally:
        await tracker_store.close()
        await lock_store.close()
        for key in await admin.keys(f"{prefix}*"):
            await admin.delete(key)
        await admin.acl_deluser(user)
        await admin.aclose()
