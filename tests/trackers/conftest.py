"""Fixtures the lock store tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)


@pytest.fixture
async def redis_config() -> AsyncIterator[dict[str, Any]]:
    """A Redis lock store's settings, with a key prefix of its own (its keys deleted after)."""
    require_service("Redis", REDIS)
    prefix = unique_name("bslock")
    yield {"type": "redis", "url": REDIS[0], "port": REDIS[1], "db": 1, "key_prefix": prefix}
    await delete_redis_keys(prefix, db=1)
