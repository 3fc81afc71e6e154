"""The connections a remote-storage download's thread opens, so that the side that gives up on
the download can cut them: its thread, waiting on a socket, cannot be interrupted otherwise."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple


class GivenUp(Exception):
    """A connection asked for by a download already given up: nobody waits for it.

    Not an OSError, so that no SDK takes it for a network failure to try again."""


class HeldSockets:
    """The sockets one download has connected. `cut()`, from any thread, shuts each down: a
    read waiting on one ends at once (with the end of the stream, which the SDK reports as a
    connection broken), and a connection asked for afterwards fails with GivenUp.

    Each socket is held as a duplicate of its descriptor: TLS takes over the socket the
    connection made (detached, it can no longer be shut down), while a shutdown through the
    duplicate reaches the connection whatever wraps it (TLS keeps the descriptor's number).
    `close()` closes the duplicates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[_Held] = []
        self._cut = False

    def hold(self, sock: socket.socket) -> None:
        """Called in the download's thread for each socket it connects."""
        with self._lock:
            if not self._cut:
                self._let_go_of_closed()
                dup = sock.dup()
                self._sockets.append(_Held(dup, sock.fileno(), _inode(dup)))
                return
        _shut(sock)
        raise GivenUp("the download was given up")

    def _let_go_of_closed(self) -> None:
        """Close the duplicates of connections their SDK has closed: a duplicate keeps its
        connection open, and a storage closing each connection after an answer (an Azure
        range, 4 MiB) would otherwise have a 4 GiB download hold a thousand of them. One
        fstat a connection held: listing the process's descriptors instead cost a hold 48 ms
        CPU with 8,000 sockets open."""
        kept = []
        for held in self._sockets:
            if held.sdk_open():
                kept.append(held)
            else:
                held.dup.close()
        self._sockets = kept

    def cut(self) -> None:
        """Shut down every connection held, and any connected from now on."""
        # Under the lock, so that no duplicate is closed while being shut down: its
        # descriptor's number, free again, could be another connection's by then.
        with self._lock:
            self._cut = True
            for held in self._sockets:
                _shut(held.dup)

    def close(self) -> None:
        """Let go of the duplicates (the download has ended)."""
        with self._lock:
            for held in self._sockets:
                held.dup.close()
            self._sockets = []


class _Held(NamedTuple):
    dup: socket.socket  # ours
    fileno: int  # the SDK's descriptor
    inode: tuple[int, int]  # the socket's device and inode: (0, 0) where sockets have none

    def sdk_open(self) -> bool:
        """Whether the SDK's descriptor still refers to the socket. Closed, its number may be
        another socket's by now, never this one's: our duplicate keeps its inode taken.
        Without inodes, held until the download ends."""
        if not self.inode[1]:
            return True
        try:
            return _inode_of(self.fileno) == self.inode
        except OSError:  # closed, and not taken again
            return False


def _inode(sock: socket.socket) -> tuple[int, int]:
    return _inode_of(sock.fileno())


def _inode_of(fileno: int) -> tuple[int, int]:
    found = os.fstat(fileno)
    return found.st_dev, found.st_ino


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already, or never connected
        pass


_HELD: ContextVar[HeldSockets | None] = ContextVar("held_sockets", default=None)
_INSTALL = threading.Lock()


@contextmanager
def holding(sockets: HeldSockets) -> Iterator[None]:
    """The urllib3 connections made in this context (every storage SDK's transport: boto3's,
    requests' under GCS's and Azure's) are held by `sockets`, closed on exit."""
    _track_urllib3()
    token = _HELD.set(sockets)
    try:
        yield
    finally:
        _HELD.reset(token)
        sockets.close()


def _track_urllib3() -> None:
    """Wrap urllib3's create_connection (which every urllib3 connection calls through its
    module, in urllib3 1.26 and 2) so that a connection made inside `holding` is held. Outside
    it, the wrapper only calls the function it wraps. Wrapped again if something replaced it
    since (a test's patch, undone)."""
    try:
        from urllib3.util import connection
    except ImportError:  # no SDK installed: the download says which is missing
        return
    with _INSTALL:
        current = connection.create_connection
        if getattr(current, "holds_sockets", False):
            return
        connection.create_connection = _holding_wrapper(current)  # type: ignore[assignment]


def _holding_wrapper(create: Callable[..., socket.socket]) -> Callable[..., socket.socket]:
    def create_connection(*args: Any, **kwargs: Any) -> socket.socket:
        held = _HELD.get()
        if held is None:
            return create(*args, **kwargs)
        sock = create(*args, **kwargs)
        try:
            held.hold(sock)
        except GivenUp:
            sock.close()
            raise
        return sock

    create_connection.holds_sockets = True  # type: ignore[attr-defined]
    return create_connection
