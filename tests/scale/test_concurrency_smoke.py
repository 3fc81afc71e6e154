"""Two server processes sharing PostgreSQL and a Redis lock, 10 clients on 5 conversations:
every acknowledged message is stored once, in order, followed by its own bot turn, and a
RabbitMQ consumer gets every stored event once, in order per conversation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.concurrency import Scenario, format_report, run
from tests.scale.scale_services import require

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require("PostgreSQL", "Redis", "RabbitMQ")
    scenario = Scenario.smoke()
    scenario.rabbitmq = True
    result = asyncio.run(run(scenario, tmp_path_factory.mktemp("concurrency")))
    print(format_report(result))
    return result


def test_every_message_is_answered(report: dict[str, Any]) -> None:
    assert report["acknowledged"] == report["messages"] == 10 * 20, report["errors"]


def test_stored_turns_are_complete_and_in_order(report: dict[str, Any]) -> None:
    checks = report["checks"]
    assert checks["lost"] == 0
    assert checks["duplicated"] == 0
    assert checks["interleaved"] == 0
    assert checks["reply_mismatch"] == 0
    assert checks["out_of_order"] == 0


def test_consumer_gets_every_event_once_in_order(report: dict[str, Any]) -> None:
    broker = report["broker"]
    assert broker["expected"] == report["checks"]["stored_events"]
    assert broker["missing"] == broker["extra"] == broker["duplicated"] == 0
    assert broker["held_back"] == 0
    assert broker["conversations_out_of_order"] == 0
