"""Log lines bounded per window, for what may happen once per message: a dependency's outage
(a tracker store, a lock store: one line when it becomes unreachable, one a window while it
stays so, one when it is back) and the repeats of one warning (counted in one line)."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.errors import clause, how_many

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0


@dataclass
class _Outage:
    started: float
    reported: float  # when the last line about it was logged
    number: int  # the `Outages.opened` it was given: the how-manyth outage of the process
    refused: int = 0  # requests refused since it started
    refused_unlogged: int = 0  # since the last line


class Outages:
    """Which dependencies are away, since when, and how many requests they cost.

    `refused` is called where a request is answered for a dependency that cannot be reached,
    `reached` where the dependency has just answered (cheap while nothing is away: one test of
    an empty dict). A dependency is a name that says what and where, such as
    "PostgreSQL at 127.0.0.1:5432 (the tracker store)"; never a password.

    An answer is evidence only of the time its request was sent: a request sent before an
    outage began (its answer already on its way when the connection was cut) says nothing
    about the end of that outage. So a caller reads `opened` before it sends and passes it to
    `reached`. Before, such an answer ended an outage 0.0 s after it began, and the next
    refusal began another: four lines for one cut.
    """

    def __init__(
        self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self._clock = clock
        self._away: dict[str, _Outage] = {}
        self.opened = 0  # outages begun in this process: a mark of "now" for `reached`

    def refused(self, dependency: str, reason: str, answer: str) -> None:
        """A request was answered `answer` ("503 ServiceUnavailable") because `dependency`
        could not be reached, for `reason` (the driver's own words)."""
        reason = clause(reason)
        now = self._clock()
        outage = self._away.get(dependency)
        if outage is None:
            self.opened += 1
            self._away[dependency] = _Outage(now, now, self.opened, refused=1)
            logger.error(
                "%s is unreachable: %s. Requests that need it are answered %s until it is "
                "back; the log counts them, one line every %g s.",
                dependency,
                reason,
                answer,
                self.window,
            )
            return
        outage.refused += 1
        outage.refused_unlogged += 1
        if now - outage.reported >= self.window:
            logger.error(
                "%s still unreachable after %.0f s: %s answered %s (%d in all); last reason: %s",
                dependency,
                now - outage.started,
                how_many(outage.refused_unlogged, "more request"),
                answer,
                outage.refused,
                reason,
            )
            outage.reported, outage.refused_unlogged = now, 0

    def reached(self, dependency: str, sent: int) -> None:
        """`dependency` answered a request sent when `opened` was `sent`: the end of its
        outage, if it had one that began before the request was sent."""
        if not self._away:
            return
        outage = self._away.get(dependency)
        if outage is not None and outage.number <= sent:
            del self._away[dependency]
            logger.warning(
                "%s reachable again after %.1f s, %s refused meanwhile",
                dependency,
                self._clock() - outage.started,
                how_many(outage.refused, "request"),
            )

    def any_away(self) -> bool:
        return bool(self._away)


# One per process: every store of a process reports to it, the API layer reads it.
OUTAGES = Outages()


class RepeatsCounted:
    """A line (a warning unless `level` says otherwise) logged at its first occurrence; the same
    line again (the same key) within the next `window` seconds is only counted, and the count
    logged in one line when the window ends. A burst of one cause (messages piling up on one
    busy conversation) is then two lines, not one per message."""

    def __init__(
        self,
        logger: logging.Logger,
        window: float,
        max_keys: int = 1000,
        level: int = logging.WARNING,
    ) -> None:
        self.logger = logger
        self.window = window
        self.level = level
        self.max_keys = max_keys  # a bound on memory; a key beyond it is logged every time
        self._repeats: dict[str, int] = {}
        # The loop that ends each key's window: one that stopped first (a command's
        # `asyncio.run`) never does, and its key's window ends at the key's next line.
        self._loops: dict[str, asyncio.AbstractEventLoop] = {}
        _OPEN_WINDOWS.add(self)

    def log(self, key: str, message: str, *args: Any) -> bool:
        """Whether the line was logged (False: counted)."""
        import asyncio  # here: a CLI command that logs none runs without it

        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop to end the window: each one is logged
            loop = None
        count = self._repeats.get(key)
        if count is not None:
            window_loop = self._loops.get(key)
            if window_loop is None or window_loop is loop or window_loop.is_running():
                self._repeats[key] = count + 1  # (from a thread too, while its loop runs)
                return False
            self._end_window(key)  # its loop stopped before the window's end
        self.logger.log(self.level, message, *args)
        if loop is not None and len(self._repeats) < self.max_keys:
            self._repeats[key] = 0
            self._loops[key] = loop
            loop.call_later(self.window, self._end_window, key, loop)
        return True

    def _end_window(self, key: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if loop is not None and self._loops.get(key) is not loop:
            return  # a later window's, opened on another loop
        self._loops.pop(key, None)
        count = self._repeats.pop(key, 0)
        if count:
            self.logger.log(
                self.level,
                "%s in the last %g s: %s",
                how_many(count, "more time"),
                self.window,
                key,
            )

    def flush(self) -> None:
        """Log the counts of the windows still open (at shutdown)."""
        for key in list(self._repeats):
            self._end_window(key)


# Every RepeatsCounted of the process, so that a stop flushes them all (before, only the one
# the runner named: the count of CLIENTS_GONE's last window was lost).
_OPEN_WINDOWS: weakref.WeakSet[RepeatsCounted] = weakref.WeakSet()


def flush_repeats() -> None:
    """Log the counts of every window still open, of every RepeatsCounted (at shutdown)."""
    for repeats in list(_OPEN_WINDOWS):
        repeats.flush()
