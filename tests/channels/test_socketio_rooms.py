"""The socket.io channel's rooms shared through Redis, when Redis stops answering (the tests
across processes are in tests/scale/test_socketio_rooms_across_hosts.py)."""

from __future__ import annotations

import logging
import time

import pytest

from bench.tcp_proxy import SilentProxy
from server.channels.socket_io import SocketIOInput
from tests.loop_lag import paced
from tests.scale.scale_services import REDIS, require
from tests.trackers.persistence_fixtures import unique_name

# Without the bound a silent Redis held the first message for ever: a failure, not a hang.
pytestmark = pytest.mark.timeout(30)


def test_an_endpoints_redis_carries_the_rooms_unless_the_channel_says_false() -> None:
    lock_store = {"type": "redis", "url": "127.0.0.1", "key_prefix": "shop"}
    shared = SocketIOInput.from_credentials(None)
    shared.use_endpoints({"lock_store": lock_store})
    assert shared.rooms is not None and shared.rooms.channel == "shop:socketio:rooms:1"
    assert shared.sio.manager is shared.rooms
    own = SocketIOInput.from_credentials({"rooms_redis": False})
    own.use_endpoints({"lock_store": lock_store})
    assert own.rooms is None
    memory = SocketIOInput.from_credentials(None)
    memory.use_endpoints({"lock_store": {"type": "in_memory"}})
    assert memory.rooms is None


@pytest.mark.parametrize(
    "redis",
    [{"url": "127.0.0.1", "db": 2}, {"url": "redis://127.0.0.1:6379/2"}],
    ids=["db-key", "db-in-url"],
)
def test_deployments_on_two_databases_of_one_redis_have_their_own_rooms(
    redis: dict[str, object],
) -> None:
    """Redis's pub/sub channels are shared by every database: two deployments told apart by
    their database alone (one prefix, or none) shared the channel, so each server emitted the
    other deployment's messages to its sockets in a room of that name (a `session_id` taken
    in both got the other's replies)."""
    first = SocketIOInput.from_credentials(None)
    first.use_endpoints({"lock_store": {"type": "redis", "url": "127.0.0.1", "db": 1}})
    second = SocketIOInput.from_credentials(None)
    second.use_endpoints({"lock_store": {"type": "redis", **redis}})
    assert first.rooms is not None and second.rooms is not None
    assert first.rooms.channel == "socketio:rooms:1"
    assert second.rooms.channel == "socketio:rooms:2"


@pytest.mark.timing
async def test_a_silent_redis_holds_bot_messages_3_s_once_then_not_at_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis took the connection and stopped answering: the first message waits at most 3 s
    for it, with one warning, and the next ones do not wait (this worker's sockets got them
    all; the other servers' sockets miss them for 30 s). Before the bound, each waited the
    client's 10 s socket timeout, and python-socketio's manager tried each twice."""
    require("Redis")
    proxy = SilentProxy(REDIS)
    await proxy.restore()
    channel = SocketIOInput.from_credentials(
        {"rooms_redis": {"url": "127.0.0.1", "port": proxy.port, "key_prefix": unique_name("r")}}
    )
    output = channel.get_output_channel()
    try:
        await output.send_response("a-session", {"text": "first"})  # connected, answering
        proxy.silent = True
        started = time.monotonic()
        for text in ("one", "two", "three"):
            await output.send_response("a-session", {"text": text})
        took = time.monotonic() - started
    finally:
        await channel.aclose()
        await proxy.cut()
    assert took < 3 + paced(3, below=7), took  # its 3 s; before, 10 s or more
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert "could not be sent to the other servers through Redis" in lines[0]
