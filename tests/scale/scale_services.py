"""The services the scale tests need (PostgreSQL, Redis, RabbitMQ on this machine): skip
without them, or fail under CI=true."""

from __future__ import annotations

import os

import pytest

from bench.concurrency import POSTGRES, RABBITMQ, REDIS, reachable


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
