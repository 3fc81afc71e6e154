"""`botserver run` says at start-up whether its Redis lock store takes commands."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.trackers.persistence_fixtures import REDIS, require_service, unique_name
from tests.trackers.start_lines import lines_at_start


async def _start(lock_store: dict, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    endpoints = {"tracker_store": {"type": "in_memory"}, "lock_store": lock_store}
    return await lines_at_start(endpoints, caplog, "lock store")


async def test_a_lock_store_redis_refuses_is_an_error_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`db: 99` (Redis has 16): before, the server started without a word and every turn
    answered 500, each with its own ERROR line."""
    require_service("Redis", REDIS)
    config = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "db": 99}
    (line,) = await _start({**config, "key_prefix": unique_name("audit")}, caplog)
    assert line.levelname == "ERROR" and "DB index is out of range" in line.getMessage()


async def test_an_unreachable_lock_store_is_a_warning_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bench.tcp_proxy import free_port

    config = {"type": "redis", "url": "127.0.0.1", "port": free_port(), "socket_timeout": 1}
    (line,) = await _start(config, caplog)
    assert line.levelname == "WARNING" and "503" in line.getMessage()


async def test_a_lock_store_line_has_no_full_stop_before_its_clause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """redis-py's words end in one: before, "Name or service not known.; turns answer 503"."""
    config = {"type": "redis", "url": "lock-store.invalid", "socket_timeout": 1}
    (line,) = await _start(config, caplog)
    said = line.getMessage()
    assert said.endswith("; turns answer 503 until it is reachable") and ".;" not in said, said


async def test_a_lock_store_that_answers_says_nothing_more_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_service("Redis", REDIS)
    config = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "db": 1}
    assert await _start({**config, "key_prefix": unique_name("audit")}, caplog) == []


async def test_a_lock_store_on_a_unix_socket_is_named_by_its_path(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Before, the line named it `redis at ?:?/0`."""
    socket = tmp_path / "redis.sock"
    (line,) = await _start({"type": "redis", "url": f"unix://{socket}"}, caplog)
    assert line.getMessage().startswith(f"The lock store (redis at {socket}/0) is unavailable")
