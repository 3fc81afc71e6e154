"""The services the scale tests need (PostgreSQL, Redis, RabbitMQ on this machine): skip
without them, or fail under CI=true."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.concurrency import POSTGRES, RABBITMQ, REDIS, reachable
from tests.trackers.persistence_fixtures import unique_name


def require(*services: str) -> None:
    """Skip (or fail under CI=true) unless every named service answers."""
    addresses = {"PostgreSQL": POSTGRES, "Redis": REDIS, "RabbitMQ": RABBITMQ}
    for name in services:
        host, port = addresses[name]
        if not reachable((host, port)):
            message = f"{name} is not reachable at {host}:{port}"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)


def sqlite_and_redis_endpoints(directory: Path) -> Path:
    """An endpoints.yml in `directory` for `--workers N` without PostgreSQL: SQLite trackers
    (in `directory`) and Redis locks."""
    require("Redis")
    endpoints = directory / "endpoints.yml"
    sqlite = {"type": "sql", "dialect": "sqlite", "db": str(directory / "t.db")}
    # A key prefix of its own: the senders (u0, m0...) are the same in every run, and other
    # runs (another xdist worker, another checkout) share this Redis.
    prefix = unique_name("workers")
    redis = {"type": "redis", "url": "127.0.0.1", "port": 6379, "key_prefix": prefix}
    endpoints.write_text(json.dumps({"tracker_store": sqlite, "lock_store": redis}))
    return endpoints
