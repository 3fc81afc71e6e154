"""`botserver run --workers N`: N uvicorn processes, each accepting on a listening socket of
its own.

uvicorn's supervisor hands all its workers one shared socket, and a worker's event loop, once
woken, accepts every connection waiting in it. A client that opens its connections at once (a
proxy's or a backend's pool, a load test) then lands them all, or nearly all, on one worker,
which serves alone while the other idles. Here the parent opens one socket per worker on the
same address with SO_REUSEPORT, and Linux spreads new connections over the sockets by their
addresses. The parent keeps the sockets: a worker that dies is replaced on its own socket, so
the connections waiting in that socket's queue are served by the replacement, not reset.
Elsewhere than Linux, where SO_REUSEPORT does not spread connections, the workers share one
socket as with uvicorn.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType
from typing import TYPE_CHECKING

from server.errors import InvalidConfig

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger(__name__)

# Beyond the graceful shutdown, how long a stopping worker gets before it is killed.
KILL_AFTER_SECONDS = 5.0
# The parent stops its workers gracefully on these (SIGHUP too: by default it would end the
# parent alone and leave the workers serving).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
_PR_SET_PDEATHSIG = 1
SPREADS_CONNECTIONS = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def listening_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """`count` sockets listening on host:port (one shared socket where the kernel would not
    spread connections over several)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if SPREADS_CONNECTIONS else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if SPREADS_CONNECTIONS:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            port = sock.getsockname()[1]  # port 0: the others join the one the first got
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets if SPREADS_CONNECTIONS else sockets * count


def _die_with(parent: int) -> None:
    """Ask Linux for a SIGTERM (a graceful stop) when the parent dies, even by SIGKILL: a
    worker left behind would keep serving an address nobody supervises."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        logger.warning("could not tie the worker to its parent: errno %d", ctypes.get_errno())
    elif os.getppid() != parent:  # it died before the request
        os.kill(os.getpid(), signal.SIGTERM)


def _serve(config: uvicorn.Config, sock: socket.socket, ready: Event, parent: int) -> None:
    """A worker process: uvicorn serving on the socket it was given; `ready` is set once it
    serves."""
    import uvicorn

    _die_with(parent)
    config.configure_logging()
    server = uvicorn.Server(config)

    def announce() -> None:
        while not (server.started or server.should_exit):
            time.sleep(0.05)
        if server.started:
            ready.set()

    threading.Thread(target=announce, name="announce-ready", daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass


class Supervisor:
    """Starts the workers, replaces one that dies, and stops them all on SIGINT, SIGTERM or
    SIGHUP."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[BaseProcess] = []
        self.ready: list[Event] = []
        self.stopping = threading.Event()

    def _start(self, slot: int) -> tuple[BaseProcess, Event]:
        ready = self.context.Event()
        process = self.context.Process(
            target=_serve,
            args=(self.config, self.sockets[slot], ready, os.getpid()),
            name=f"botserver-worker-{slot}",
        )
        process.start()
        return process, ready

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Serve until a signal (0) or a worker that fails to start (1)."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        code = 0
        try:
            for slot in range(len(self.sockets)):
                worker, ready = self._start(slot)
                self.workers.append(worker)
                self.ready.append(ready)
            while not self.stopping.is_set():
                wait([worker.sentinel for worker in self.workers], timeout=0.5)
                if self.stopping.is_set():
                    break
                if self._replace_dead():
                    code = 1
                    break
        finally:
            self._stop_all()
            for sock in set(self.sockets):
                sock.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return code

    def _replace_dead(self) -> bool:
        """Start a worker in place of each one that died; True when one exited before it
        served (a new one would fail the same way)."""
        for slot, worker in enumerate(self.workers):
            if worker.is_alive():
                continue
            worker.join()
            # A worker that exits by itself before it serves met a broken app, store or TLS
            # setting; one killed by a signal met its killer, and is replaced like any other.
            if not self.ready[slot].is_set() and (worker.exitcode or 0) >= 0:
                logger.error(
                    "worker %d (pid %s) exited with code %s before it served; stopping",
                    slot,
                    worker.pid,
                    worker.exitcode,
                )
                return True
            logger.warning(
                "worker %d (pid %s) exited with code %s; starting another on its socket",
                slot,
                worker.pid,
                worker.exitcode,
            )
            self.workers[slot], self.ready[slot] = self._start(slot)
        return False

    def _stop_all(self) -> None:
        for worker in self.workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        grace = (self.config.timeout_graceful_shutdown or 0) + KILL_AFTER_SECONDS
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                logger.warning("worker pid %s did not stop in time; killing it", worker.pid)
                worker.kill()
                worker.join()


def serve_workers(config: uvicorn.Config) -> int:
    """Serve `config.workers` processes on config.host:config.port; the exit code."""
    try:
        sockets = listening_sockets(config.host, config.port, config.workers, config.backlog)
    except OSError as exc:
        where = f"{config.host}:{config.port}"
        raise InvalidConfig(f"cannot listen on {where}: {exc.strerror}") from None
    return Supervisor(config, sockets).run()
