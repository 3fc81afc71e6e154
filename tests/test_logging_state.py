"""The test process's logging put back after a test that configured it (tests/logging_state)."""

from __future__ import annotations

import logging

from tests.logging_state import logging_restored


def test_the_root_gets_back_its_own_handlers_not_another_loggers() -> None:
    """Before, the root was given the handlers of whichever logger came last in logging's
    registry: a logger made during the block with a handler of its own passed it on to the
    root, and every later test's records went through it."""
    root = logging.getLogger()
    before = list(root.handlers)
    stray = logging.StreamHandler()
    with logging_restored():
        made_here = logging.getLogger("tests.logging_state.made_here")
        made_here.addHandler(stray)
        root.addHandler(logging.NullHandler())

    assert root.handlers == before
    assert stray not in root.handlers
    assert made_here.handlers == []


def test_a_root_handler_removed_in_the_block_comes_back() -> None:
    root = logging.getLogger()
    kept = logging.NullHandler()
    root.addHandler(kept)
    try:
        with logging_restored():
            root.removeHandler(kept)
        assert kept in root.handlers
    finally:
        root.removeHandler(kept)
