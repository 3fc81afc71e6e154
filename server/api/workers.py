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
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from server.api.collector import collect_rarely_while_starting
from server.errors import InvalidConfig
from server.worker_claims import stopped_workers

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
# A worker that dies before it serves, or this soon after it began to serve, counts as a quick
# death (restart_delay).
STABLE_SECONDS = 10.0
MAX_RESTART_DELAY = 30.0
SPREADS_CONNECTIONS = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
# What the parent hands a worker besides uvicorn's config (the run's settings, secrets and
# all), set before the worker builds its app. It travels in the pipe that starts the worker,
# not in its environment: that one its user reads in /proc/<pid>/environ, and every process
# the worker starts (a shell, an action server behind a wrapper) inherits it.
handed: dict[str, str] = {}


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


def _serve(
    config: uvicorn.Config,
    sock: socket.socket,
    ready: Event,
    parent: int,
    given: dict[str, str] | None = None,
) -> None:
    """A worker process: uvicorn serving on the socket it was given; `ready` is set once it
    serves. `given`: what the parent hands it (`handed`)."""
    collect_rarely_while_starting()  # until its model is loaded, as `botserver run`
    from server.api.shutdown import GracefulServer
    from server.api.worker_files import hold_workers_dir, leave_workers_dir

    handed.update(given or {})
    alive = hold_workers_dir()

    def stop(signum: int, _frame: FrameType | None) -> None:
        """SIGTERM's handler outside uvicorn's (which raises the signal again once it has
        stopped gracefully): what a stopping worker owes, then death by the signal as ever
        (the supervisor reads a worker killed by a signal as one to replace)."""
        leave_workers_dir(alive, orphaned=os.getppid() != parent)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    _die_with(parent)
    config.configure_logging()
    private = _private_socket(config.backlog)
    server = GracefulServer(config, private_sockets=[private[1]] if private else [])

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
    finally:
        if private is not None:
            private[1].close()
            private[0].unlink(missing_ok=True)
        leave_workers_dir(alive, orphaned=os.getppid() != parent)


def _private_socket(backlog: int) -> tuple[Path, socket.socket] | None:
    """A Unix socket of this worker's own in the workers' directory, its route (its name)
    in the environment: the other workers forward the requests of this worker's socket.io
    sessions to it. None where there is none (no Unix sockets, a path too long for one)."""
    from server.api.worker_files import WORKER_ROUTE_ENV, route_sockets, workers_dir

    shared = workers_dir()
    if shared is None or not hasattr(socket, "AF_UNIX"):
        return None
    route = secrets.token_hex(4)
    directory = route_sockets(shared)
    path = directory / f"{route}.sock"
    # Bound under another name, and given its own once it listens: a socket file with nothing
    # listening is a dead worker's to the others, who remove it (channels/socketio_routing).
    # As long as the name it gets: a path too long for a socket fails the bind, as before.
    binding = directory / f".{route}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        directory.mkdir(exist_ok=True)
        sock.bind(str(binding))
        sock.listen(backlog)
        binding.rename(path)
    except (OSError, ValueError) as exc:  # ValueError: a path longer than sun_path holds
        sock.close()
        binding.unlink(missing_ok=True)
        logger.warning(
            "worker pid %d has no private socket (%s): socket.io clients on HTTP long-polling "
            "may lose their sessions",
            os.getpid(),
            exc,
        )
        return None
    os.environ[WORKER_ROUTE_ENV] = route
    return path, sock


class Supervisor:
    """Starts the workers, replaces one that dies, and stops them all on SIGINT, SIGTERM or
    SIGHUP."""

    def __init__(
        self,
        config: uvicorn.Config,
        sockets: list[socket.socket],
        on_ready: Callable[[], None] | None = None,
        given: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.given = dict(given or {})  # handed to each worker as it starts
        self.sockets = sockets
        self.on_ready = on_ready  # called once, when every worker first serves
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[BaseProcess] = []
        self.ready: list[Event] = []
        # When the supervisor saw the worker serve (None: not yet), to half a second.
        self.served_at: list[float | None] = []
        # In a row, each before it served or within STABLE_SECONDS of serving.
        self.quick_deaths: list[int] = []
        self.restart_at: list[float | None] = []  # a replacement waiting out its back-off
        self.stopping = threading.Event()

    def _start(self, slot: int) -> None:
        ready = self.context.Event()
        process = self.context.Process(
            target=_serve,
            args=(self.config, self.sockets[slot], ready, os.getpid(), self.given),
            name=f"botserver-worker-{slot}",
        )
        process.start()
        if slot == len(self.workers):
            self.workers.append(process)
            self.ready.append(ready)
            self.served_at.append(None)
            self.quick_deaths.append(0)
            self.restart_at.append(None)
        else:
            self.workers[slot], self.ready[slot] = process, ready
            self.served_at[slot], self.restart_at[slot] = None, None

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Serve until a signal (0) or a worker that fails to start (1)."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        code = 0
        try:
            for slot in range(len(self.sockets)):
                self._start(slot)
            while not self.stopping.is_set():
                self._wait()
                if self.stopping.is_set():
                    break
                if self.on_ready is not None and all(ready.is_set() for ready in self.ready):
                    self.on_ready()
                    self.on_ready = None
                if self._replace_dead():
                    code = 1
                    break
        finally:
            # The workers close their copies as they stop; with the parent's closed too, a
            # new connection is refused at once, rather than queued for nobody to accept
            # while the workers finish their requests (and reset when they are done).
            for sock in set(self.sockets):
                sock.close()
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return code

    def _wait(self) -> None:
        """Until a serving worker exits, a back-off ends, or half a second has passed."""
        now = time.monotonic()
        timeout = min([0.5, *(at - now for at in self.restart_at if at is not None)])
        pairs = zip(self.workers, self.restart_at, strict=True)
        wait([worker.sentinel for worker, at in pairs if at is None], timeout=max(0.0, timeout))

    def _replace_dead(self) -> bool:
        """Start a worker in place of each one that died (after a back-off when it keeps
        dying before it serves or soon after); True when one exited before it served (a new
        one would fail the same way)."""
        now = time.monotonic()
        for slot, ready in enumerate(self.ready):
            # Seen here, at most half a second late (_wait): one that served and died since
            # the last look served just now.
            if self.served_at[slot] is None and ready.is_set():
                self.served_at[slot] = now
        for slot, worker in enumerate(self.workers):
            due = self.restart_at[slot]
            if due is not None:
                if now >= due:
                    self._start(slot)
                continue
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
            # Counted from when it served, not from its start: a start as long as
            # STABLE_SECONDS (a slow host, a big model) made a worker killed while starting,
            # or at its first request, never begin the back-off.
            served = self.served_at[slot]
            quick = served is None or now - served < STABLE_SECONDS
            self.quick_deaths[slot] = self.quick_deaths[slot] + 1 if quick else 0
            delay = restart_delay(self.quick_deaths[slot])
            logger.warning(
                "worker %d (pid %s) exited with code %s; starting another on its socket%s",
                slot,
                worker.pid,
                worker.exitcode,
                f" in {delay:g} s ({self.quick_deaths[slot]} deaths in a row, each before it "
                f"served or within {STABLE_SECONDS:g} s of serving)"
                if delay
                else "",
            )
            if delay:
                self.restart_at[slot] = now + delay
            else:
                self._start(slot)
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
        # Said here, once all have stopped: by a worker, it came while others still closed.
        closed = stopped_workers(worker.pid for worker in self.workers)
        count = len(self.workers)
        # A worker stopped before it served (a replacement still loading the model when the
        # stop came) had opened nothing it could close.
        starting = sum(not ready.is_set() for ready in self.ready)
        if closed == count:
            logger.info(
                "Stopped: the %d workers closed their channels, event broker and stores.", count
            )
        elif closed is not None and starting and closed == count - starting:
            logger.info(
                "Stopped: %d of the %d workers closed their channels, event broker and "
                "stores; %d stopped while starting, before serving.",
                closed,
                count,
                starting,
            )
        elif closed is not None:
            logger.warning(
                "Stopped: %d of the %d workers closed their channels, event broker and stores; "
                "the others did not (killed, or failed: see above).",
                closed,
                count,
            )


def restart_delay(quick_deaths: int) -> float:
    """Seconds before replacing a worker: none after one quick death, then 0.5, 1, 2...
    up to MAX_RESTART_DELAY, so a worker killed at every start (out of memory while it
    loads the model, say) does not make the machine spawn processes without pause."""
    if quick_deaths <= 1:
        return 0.0
    return min(MAX_RESTART_DELAY, 0.5 * 2 ** (quick_deaths - 2))


def serve_workers(
    config: uvicorn.Config,
    on_ready: Callable[[], None] | None = None,
    given: dict[str, str] | None = None,
) -> int:
    """Serve `config.workers` processes on config.host:config.port; the exit code.
    `on_ready` is called once every worker serves; `given` is each worker's `handed`."""
    try:
        sockets = listening_sockets(config.host, config.port, config.workers, config.backlog)
    except OSError as exc:
        where = f"{config.host}:{config.port}"
        raise InvalidConfig(f"cannot listen on {where}: {exc.strerror}") from None
    return Supervisor(config, sockets, on_ready, given).run()
