"""The RabbitMQ broker relies on aiormq's channel internals (`amqp_publish`): the installed
aio-pika, aiormq and pamqp are within the ranges `botserver[rabbitmq]` pins, so the tests run
against a version a user gets."""

from __future__ import annotations

import asyncio
import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from server.brokers import amqp_publish

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_rabbitmq_extra_pins_the_aiormq_the_broker_writes_on() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    pinned = {Requirement(line).name: Requirement(line) for line in extras["rabbitmq"]}

    assert set(pinned) == {"aio-pika", "aiormq", "pamqp"}
    for name, requirement in pinned.items():
        assert requirement.specifier.filter([importlib.metadata.version(name)]), requirement
        assert any(spec.operator == "<" for spec in requirement.specifier), requirement


def test_the_broker_checks_at_connect_for_the_versions_the_extra_pins() -> None:
    """With others, it publishes through aio-pika's public API (`amqp_publish.untested`)."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    pinned = {Requirement(line).name: Requirement(line) for line in extras["rabbitmq"]}

    assert set(amqp_publish.TESTED_VERSIONS) == set(pinned)
    for name, (low, below) in amqp_publish.TESTED_VERSIONS.items():
        assert pinned[name].specifier == SpecifierSet(f">={low},<{below}"), name


class _Connection:
    def __init__(self) -> None:
        setattr(self, amqp_publish._UNBLOCKED, asyncio.Event())


class _Channel:
    """What `untested` looks for on aiormq's channel."""

    lock = delivery_tag = confirmations = message_id_delivery_tag = write_queue = None
    max_content_size = number = create_future = None

    def __init__(self) -> None:
        self.connection = _Connection()


def test_the_versions_are_those_the_process_loaded_read_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An aiormq upgraded in place under a running server changes its files, not the code the
    server runs: the next connect still writes on the channel, without reading the packages'
    metadata again (1 ms of CPU each connect)."""
    assert amqp_publish.untested(_Channel()) is None  # type: ignore[arg-type]
    read: list[str] = []

    def upgraded(name: str) -> str:
        read.append(name)
        return "7.3.0"

    monkeypatch.setattr(importlib.metadata, "version", upgraded)

    assert amqp_publish.untested(_Channel()) is None  # type: ignore[arg-type]
    assert read == []
