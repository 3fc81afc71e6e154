"""The test process's logging put back after a test that configured it (tests/logging_state)."""

from __future__ import annotations

import logging

import pytest

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


def test_a_logger_made_and_disabled_in_the_block_is_enabled_after() -> None:
    """A module imported as `botserver run` began (alembic's, say) made its logger, then a
    logging config file's `disable_existing_loggers: true` disabled it: before, it stayed
    disabled, and a later test in the same process found alembic's lines gone."""
    import uuid

    name = f"tests.logging_state.made_{uuid.uuid4().hex}"
    with logging_restored():
        made_here = logging.getLogger(name)
        made_here.disabled = True  # as dictConfig's `disable_existing_loggers` does

    assert not made_here.disabled
    assert made_here.isEnabledFor(logging.WARNING)


def test_putting_back_what_did_not_change_empties_the_loggers_caches_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every test of the suite runs inside `logging_restored`. Before, it set every logger's
    level again, and each `setLevel` empties the cache of every logger: the square of their
    number at every test (406 loggers in a worker that collected the suite, 14 ms a test on
    a loaded host, over a minute of CPU a suite run)."""
    for i in range(50):
        logging.getLogger(f"tests.logging_state.many.{i}").setLevel(logging.INFO)
    levels_set: list[str] = []
    set_level = logging.Logger.setLevel

    def counted(logger: logging.Logger, level: int | str) -> None:
        levels_set.append(logger.name)
        set_level(logger, level)

    monkeypatch.setattr(logging.Logger, "setLevel", counted)
    with logging_restored():
        pass

    assert levels_set == ["root"]  # each `setLevel` empties every logger's cache


def test_a_level_changed_in_the_block_is_put_back_and_so_are_the_answers_cached_under_it() -> None:
    parent = logging.getLogger("tests.logging_state.cached")
    child = logging.getLogger("tests.logging_state.cached.child")
    parent.setLevel(logging.WARNING)
    with logging_restored():
        parent.setLevel(logging.DEBUG)
        assert child.isEnabledFor(logging.DEBUG)  # cached by the child, under DEBUG

    assert parent.level == logging.WARNING
    assert not parent.isEnabledFor(logging.DEBUG)
    assert not child.isEnabledFor(logging.DEBUG)
