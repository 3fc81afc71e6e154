"""Graceful shutdown: the stop is announced, and turns that run outside any request (a streamed
turn whose client left, a socket.io turn) finish before the stores close, within the period
uvicorn gives requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import signal
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)

# When this process began to stop (time.monotonic()); None while it serves.
_stop_began: float | None = None

_UVICORN_CANCELS = "Cancel %s running task(s), timeout graceful shutdown exceeded"


class _RequestsCancelled(logging.Filter):
    """Counts the requests uvicorn cancels when the graceful period ends, in place of its
    ERROR line: the stop's one warning says it (`take_cancelled_requests`), with the turns
    cancelled, rather than two lines for one cause."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg != _UVICORN_CANCELS or not isinstance(args, tuple) or not args:
            return True
        count = args[0]
        self.count += count if isinstance(count, int) else 1
        return False


_REQUESTS_CANCELLED = _RequestsCancelled()
logging.getLogger("uvicorn.error").addFilter(_REQUESTS_CANCELLED)


# Run when a server begins to stop, once it accepts no more connections: what holds requests
# open for long (a socket.io long-poll, up to 25 s) lets them go, so the stop does not wait.
_STOP_HOOKS: list[weakref.WeakMethod[Callable[[], Awaitable[None]]]] = []
STOP_HOOK_SECONDS = 2.0


def at_stop(hook: Callable[[], Awaitable[None]]) -> None:
    """Have a bound method run when this process's server begins to stop (held weakly)."""
    _STOP_HOOKS.append(weakref.WeakMethod(hook))  # type: ignore[arg-type]


async def _run_stop_hooks() -> None:
    for ref in list(_STOP_HOOKS):
        hook = ref()
        if hook is None:
            _STOP_HOOKS.remove(ref)
            continue
        try:
            await asyncio.wait_for(hook(), STOP_HOOK_SECONDS)
        except Exception as exc:  # the stop goes on; uvicorn's timeout still bounds it
            logger.warning("A stop step failed: %s: %s", type(exc).__name__, exc)


def take_cancelled_requests() -> int:
    """How many requests uvicorn cancelled at the end of the graceful period (then 0)."""
    count, _REQUESTS_CANCELLED.count = _REQUESTS_CANCELLED.count, 0
    return count


class GracefulServer(uvicorn.Server):
    """uvicorn's server, saying when it stops and noting the time for `TurnsInFlight.drain`;
    SIGHUP (a closed terminal, `kill -HUP`) stops it as gracefully as SIGTERM, where it
    ended the process at once, turns in flight and all."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        hangup = getattr(signal, "SIGHUP", None)
        if hangup is None or threading.current_thread() is not threading.main_thread():
            with super().capture_signals():
                yield
            return
        previous = signal.signal(hangup, lambda _s, frame: self.handle_exit(signal.SIGTERM, frame))
        try:
            with super().capture_signals():
                yield
        finally:
            signal.signal(hangup, previous)

    def __init__(
        self,
        config: uvicorn.Config,
        private_sockets: Sequence[socket.socket] = (),
        on_serving: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        # Served too, without TLS: a worker's Unix socket, for the other workers only.
        self.private_sockets = list(private_sockets)
        # Called once the server listens: uvicorn binds after the app's startup, so a line
        # said in the lifespan came before a bind that could still fail.
        self.on_serving = on_serving

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        global _stop_began
        _stop_began = None
        await super().startup(sockets)  # exits (SystemExit) when the startup or a bind fails
        if not self.should_exit and self.private_sockets:
            await self._serve_privately()
        if self.started and self.on_serving is not None:
            self.on_serving()

    async def _serve_privately(self) -> None:
        from server.api.worker_files import private_app

        loop = asyncio.get_running_loop()
        # The same server, and what only the other workers may ask (`serve_privately`).
        config = copy.copy(self.config)
        config.loaded_app = private_app(self.config.loaded_app)

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )

        for sock in self.private_sockets:
            server = await loop.create_server(create_protocol, sock=sock, backlog=config.backlog)
            self.servers.append(server)  # closed with the others when the worker stops

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        global _stop_began
        _stop_began = time.monotonic()
        logger.info(
            "Stopping: new connections are refused; requests in flight (%d) and running turns "
            "get up to %g s to finish",
            len(self.server_state.tasks),
            self.config.timeout_graceful_shutdown or 0,
        )
        for server in getattr(self, "servers", ()):
            server.close()  # no new connections (uvicorn closes them again: harmless)
        await _run_stop_hooks()
        await super().shutdown(sockets)


def stopping() -> bool:
    """Whether this process has begun to stop."""
    return _stop_began is not None


def seconds_left(graceful_seconds: float) -> float:
    """What is left of the graceful period since the stop began (all of it if unknown)."""
    if _stop_began is None:
        return graceful_seconds
    return max(0.0, graceful_seconds - (time.monotonic() - _stop_began))


class TurnsInFlight:
    """The processor's turns in progress (`Processor.turns_in_flight`), so that the lifespan
    can wait for them."""

    def __init__(self) -> None:
        self._processor: Any = None
        self._idle: asyncio.Event | None = None
        self._code: Any = None  # the turn's code, to find the tasks running turns

    @property
    def count(self) -> int:
        return self._processor.turns_in_flight if self._processor is not None else 0

    def track(self, processor: Any) -> None:
        """Follow `processor`'s turns (every channel's turn goes through its `handle_message`,
        which counts them: no coroutine of ours per turn); finding the tasks is left to the
        rare end of a drain."""
        self._processor = processor
        self._code = type(processor).handle_message.__code__
        processor.on_turns_idle = self._on_idle

    def _on_idle(self) -> None:
        if self._idle is not None:
            self._idle.set()

    async def drain(self, timeout: float, unwind: float = 1.0) -> int:
        """Waits up to `timeout` seconds for the turns in progress to end, then cancels those
        still running and gives them `unwind` seconds to let go of their locks; returns how
        many were cancelled."""
        if self.count and timeout > 0:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                pass
            finally:
                self._idle = None
        if not self.count:
            return 0
        late = [task for task in asyncio.all_tasks() if self._runs_a_turn(task)]
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=unwind)
        return len(late)

    def _runs_a_turn(self, task: asyncio.Task[Any]) -> bool:
        """Whether the task's chain of awaited coroutines passes through a turn."""
        awaited: Any = task.get_coro()
        while awaited is not None:
            if getattr(awaited, "cr_code", None) is self._code:
                return True
            awaited = getattr(awaited, "cr_await", None)
        return False
