"""The log of refused requests (401/403): route, client and reason on one line, at most
`LINES_PER_WINDOW` lines a window, so a flood of bad credentials cannot flood the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from server.errors import how_many

logger = logging.getLogger(__name__)

LINES_PER_WINDOW = 20
WINDOW_SECONDS = 60.0
# A URL may be 64 KiB long; the log line keeps its start.
MAX_WHAT_CHARS = 200


class RefusalLog:
    """Logs refusals one per line until `lines_per_window` in a window, then counts them; the
    first refusal of a later window logs how many went unlogged."""

    def __init__(
        self,
        lines_per_window: int = LINES_PER_WINDOW,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines_per_window = lines_per_window
        self.window_seconds = window_seconds
        self._clock = clock
        self.window_started: float | None = None
        self._logged = 0
        self._unlogged = 0

    def record(self, what: str, client: str, why: str) -> None:
        """Log that `what` (`GET /status with 401`) from `client` was refused, and `why`."""
        now = self._clock()
        if self.window_started is None or now - self.window_started >= self.window_seconds:
            if self._unlogged:
                logger.warning(
                    "%s %s refused in %g s without a line each",
                    how_many(self._unlogged, "more request"),
                    "was" if self._unlogged == 1 else "were",
                    now - (self.window_started or now),
                )
            self.window_started, self._logged, self._unlogged = now, 0, 0
        if self._logged >= self.lines_per_window:
            self._unlogged += 1
            return
        self._logged += 1
        if len(what) > MAX_WHAT_CHARS:
            what = what[:MAX_WHAT_CHARS] + "..."
        logger.info("Refused %s from %s: %s", what, client, why)
        if self._logged == self.lines_per_window:
            logger.warning(
                "%s refused within %g s; the next ones until then are counted, "
                "not logged one by one",
                how_many(self._logged, "request"),
                self.window_seconds,
            )
