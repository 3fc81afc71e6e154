"""The connections a remote-storage download holds so that it can be cut: those its SDK closed
are let go, and holding one costs the same however many sockets the process has open (a
server with thousands of socket.io sessions and keep-alive clients)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from server.models.held_sockets import HeldSockets

HOLDS = 200


def _connection() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair()


def test_a_connection_its_sdk_closed_is_let_go_and_one_open_is_cut() -> None:
    held = HeldSockets()
    closed, closed_peer = _connection()
    held.hold(closed)
    closed.close()  # the SDK closed it (a storage closing after each answer)
    kept, kept_peer = _connection()
    held.hold(kept)  # lets go of the first one's duplicate: its peer sees the end
    closed_peer.settimeout(5)
    assert closed_peer.recv(1) == b""
    held.cut()
    kept_peer.settimeout(5)
    assert kept_peer.recv(1) == b""  # cut while the SDK's descriptor is still open
    held.close()
    for sock in (kept, closed_peer, kept_peer):
        sock.close()


@contextmanager
def _open_sockets(count: int) -> Iterator[None]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        yield
    finally:
        for sock in sockets:
            sock.close()


def _holds_cpu() -> float:
    """CPU seconds of HOLDS connections held one after the other, each closed by its SDK
    before the next (a storage closing the connection after each answer, as Azure's ranges)."""
    held = HeldSockets()
    pairs = [_connection() for _ in range(HOLDS)]
    started = time.process_time()
    for sdk, _ in pairs:
        held.hold(sdk)
        sdk.close()
    spent = time.process_time() - started
    held.close()
    for _, peer in pairs:
        peer.close()
    return spent


def test_holding_a_connection_costs_the_same_with_thousands_of_sockets_open() -> None:
    # Before: each connection held listed the process's descriptors (/proc/self/fd) and read
    # each one's link: 8,000 sockets open made a hold about 500 times dearer (30 ms CPU).
    alone = min(_holds_cpu() for _ in range(3))
    with _open_sockets(8_000):
        crowded = min(_holds_cpu() for _ in range(3))
    assert crowded < 3 * alone + 0.01, (alone, crowded)
