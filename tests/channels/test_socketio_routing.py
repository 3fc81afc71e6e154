"""How a worker of `--workers N` routes socket.io requests by the worker their `sid` names
(the whole path, two real workers, is in tests/scale/test_socketio_workers.py)."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import httpx
import pytest
import socketio

from server.channels.socketio_routing import SessionRouter, route_of, routed_server

# Passed as loggers: without them python-engineio and python-socketio set the levels of their
# own loggers for the whole process (ERROR), hiding the channel's warnings in later tests.
QUIET = {"logger": logging.getLogger(__name__), "engineio_logger": logging.getLogger(__name__)}


def test_session_ids_name_their_worker() -> None:
    sid = routed_server("0123abcd", async_mode="asgi", **QUIET).eio.generate_id()
    assert sid.startswith("0123abcd.")
    assert route_of(f"EIO=4&transport=polling&sid={sid}".encode()) == "0123abcd"


@pytest.mark.parametrize(
    "query",
    [
        b"EIO=4&transport=polling",  # a new session: served here
        b"EIO=4&transport=polling&sid=Zx9plainEngineIoId",  # no route
        b"EIO=4&sid=..%2F..%2Fetc.x",  # never a path outside the sockets' directory
        b"EIO=4&sid=0123ABCD.x",  # not a route's shape
    ],
)
def test_a_sid_naming_no_worker_is_served_here(query: bytes) -> None:
    assert route_of(query) is None


async def test_a_session_of_a_worker_that_died_gets_engineio_s_400_at_once(
    tmp_path: Path,
) -> None:
    """The dead worker's socket file is still there (killed, it could not remove it): the
    client gets the answer for an unknown session, quickly, and opens a new one."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "deadbeef.sock"))
    stale.close()
    sio = routed_server("0123abcd", async_mode="asgi", **QUIET)
    router = SessionRouter(socketio.ASGIApp(sio, socketio_path=None), "0123abcd", tmp_path, 45)
    transport = httpx.ASGITransport(app=router)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        started = time.monotonic()
        for sid in ("deadbeef.abc", "feedf00d.abc"):  # a stale socket, and none at all
            for method in ("GET", "POST"):
                answer = await client.request(
                    method, f"/?EIO=4&transport=polling&sid={sid}", content=b"40"
                )
                assert answer.status_code == 400
                assert answer.json() == f"Invalid session {sid}"
    assert time.monotonic() - started < 2
