"""The logging configuration of the test process, put back after code that configures it
(`configure_logging`, which `botserver run` calls: run in process by some tests)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from server.auth import log_redaction


@contextmanager
def logging_restored() -> Iterator[None]:
    """The root logger's handlers and level, every logger's level and `disabled` flag, and
    the log filter's registered secrets, as they were. Left changed, they hid later tests'
    log records from caplog in the same process (with `-n 4`, whichever tests xdist put
    after them)."""
    root = logging.getLogger()
    root_handlers, level = list(root.handlers), root.level
    loggers = logging.Logger.manager.loggerDict
    enabled = [x for x in loggers.values() if isinstance(x, logging.Logger) and not x.disabled]
    # configure_logging sets libraries' levels too (httpx at DEBUG with -vv): left so, they
    # reached the caplog of later tests in the same process.
    levels = {name: x.level for name, x in loggers.items() if isinstance(x, logging.Logger)}
    # A logging config file's `rasa` logger gives ours its handlers and `propagate: false`:
    # left so, caplog (on the root) saw nothing of later tests' records from `server.*`.
    wiring = {
        name: (list(x.handlers), x.propagate)
        for name, x in loggers.items()
        if isinstance(x, logging.Logger)
    }
    # The secrets an endpoint registered for the log filter (a token, its query names): left
    # so, a later test's `?x=1` was hidden because a PUT /model of an earlier one named `x`.
    pinned = set(log_redaction._pinned_literals), set(log_redaction._pinned_names)
    transient = dict(log_redaction._transient)
    try:
        yield
    finally:
        log_redaction._pinned_literals.clear()
        log_redaction._pinned_literals.update(pinned[0])
        log_redaction._pinned_names.clear()
        log_redaction._pinned_names.update(pinned[1])
        log_redaction._transient.clear()
        log_redaction._transient.update(transient)
        log_redaction._merge()
        for logger in enabled:  # a config file's `disable_existing_loggers: true`
            logger.disabled = False
        for name, each in list(loggers.items()):
            if isinstance(each, logging.Logger):
                # Only a level that changed is set: `setLevel` empties every logger's cache,
                # so setting each of them cost the square of their number at every test (406
                # loggers in a worker that collected the suite: 14 ms a test, loaded host);
                # the root's `setLevel` below empties them all once.
                wanted = levels.get(name, logging.NOTSET)
                if each.level != wanted:
                    each.setLevel(wanted)
                # A logger made during the test (`server` was a placeholder until the config
                # named it) goes back to a new logger's wiring: no handler, propagating.
                handlers, propagate = wiring.get(name, ([], True))
                if each.handlers != handlers:
                    each.handlers = list(handlers)
                each.propagate = propagate
                if name not in levels:
                    # ... and enabled: one made as the test began (a module `main()`
                    # imported before it read a config file's `disable_existing_loggers:
                    # true`) was left disabled, and a later test found alembic's silent.
                    each.disabled = False
        # pytest's own handlers (caplog's, its report's) are its to add and remove at each
        # phase of a test: the ones found at the start may be gone, others in their place.
        for handler in list(root.handlers):
            if handler not in root_handlers and not _pytests(handler):
                root.removeHandler(handler)
                handler.close()
        for handler in root_handlers:
            if handler not in root.handlers and not _pytests(handler):
                root.addHandler(handler)
        root.setLevel(level)  # and every logger's cache emptied, once


def _pytests(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("_pytest.")
