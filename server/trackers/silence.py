"""Telling a database that stopped answering from a statement that is only slow: when a
statement has waited a few seconds, a new connection is opened beside it; if that one gets no
answer either, the statements waiting give up at once (503) rather than at the statement
timeout, and a slow statement on a database that answers keeps its time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType

from server.setting_values import env_seconds

# A statement this long without an answer has a new connection opened beside it (seconds)...
DEFAULT_CHECK_AFTER = 2.0
# ...which has this long to be answered (the server's greeting and the login).
DEFAULT_CHECK_TIMEOUT = 3.0


class DatabaseSilent(TimeoutError):
    """A statement got no answer, and neither did a new connection: the database (or the
    network to it) stopped answering."""


class SilenceWatch:
    """Watches a store's statements (`with watch():` around each). `check` opens a new
    connection, outside the pool, and closes it: it returns once the server has answered
    (an error from the server, such as too many connections, is an answer too). One check
    runs at a time; every statement that has waited `after` seconds shares it, and one that
    still waits after a check that was answered is looked at again `after` seconds later.
    Once a check went unanswered, statements are checked as they start, until one is
    answered: during an outage a turn gives up after `timeout`, not `after` + `timeout`."""

    def __init__(self, check: Callable[[], Awaitable[object]] | None) -> None:
        self._check = check  # None: nothing to watch (a file)
        self.after = env_seconds("SQL_SILENCE_CHECK_AFTER", DEFAULT_CHECK_AFTER)
        self.timeout = env_seconds("SQL_SILENCE_CHECK_TIMEOUT", DEFAULT_CHECK_TIMEOUT)
        self._checking: asyncio.Task[bool] | None = None
        self._closed = False
        self.silent = False  # the last check went unanswered

    def __call__(self) -> Watched:
        return Watched(self)

    def reason(self, checked_at_start: bool) -> str:
        if checked_at_start:  # (still silent)
            return f"it stopped answering (no answer to a new connection in {self.timeout:g} s)"
        return (
            f"it stopped answering (no answer to a statement in {self.after:g} s, "
            f"nor to a new connection in {self.timeout:g} s)"
        )

    def _slow(self, watched: Watched) -> None:
        if self._closed:
            return
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._answers())
        self._checking.add_done_callback(watched.checked)

    async def _answers(self) -> bool:
        """Whether the database answers a new connection within `timeout` seconds."""
        assert self._check is not None
        answered = True
        try:
            async with asyncio.timeout(self.timeout):
                await self._check()
        except TimeoutError:
            answered = False
        except Exception:  # refused, or the server said no: it answered
            pass
        finally:
            self._checking = None
        self.silent = not answered
        return answered

    def close(self) -> None:
        self._closed = True
        if self._checking is not None:
            self._checking.cancel()


class Watched:
    """One statement under watch: cancelled, then raising DatabaseSilent, when a check finds
    the database silent while it waits."""

    __slots__ = ("_watch", "_task", "_timer", "_silenced", "_done", "_at_start")

    def __init__(self, watch: SilenceWatch) -> None:
        self._watch = watch
        self._timer: asyncio.TimerHandle | None = None
        self._silenced = False

    def __enter__(self) -> Watched:
        watch = self._watch
        if watch._check is None:
            return self
        self._task = asyncio.current_task()
        self._done = False
        self._at_start = watch.silent
        delay = 0.0 if self._at_start else watch.after
        self._timer = asyncio.get_running_loop().call_later(delay, watch._slow, self)
        return self

    @property
    def silenced(self) -> bool:
        """Whether the statement is being cancelled because the database is silent: its
        connection is then to be dropped, not cancelled through the server."""
        return self._silenced

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is None:
            return
        self._done = True
        self._timer.cancel()
        if self._silenced and exc_type is asyncio.CancelledError:
            assert self._task is not None
            if self._task.uncancel() == 0:  # cancelled by the check alone
                raise DatabaseSilent(self._watch.reason(self._at_start)) from exc

    def checked(self, check: asyncio.Task[bool]) -> None:
        if self._done or check.cancelled():
            return
        if check.result():  # the database answers: this statement is only slow
            self._timer = asyncio.get_running_loop().call_later(
                self._watch.after, self._watch._slow, self
            )
            return
        if self._task is not None:
            self._silenced = True
            self._task.cancel()
