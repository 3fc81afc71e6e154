"""PostgreSQL and RabbitMQ go away during the load (TCP proxies cut and restored), and
PostgreSQL is away while the servers start: no acknowledged message is lost, clients get
503 with Rasa's error body while the database is away, and everything recovers by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.concurrency import Scenario, format_report, run
from tests.loop_lag import paced
from tests.scale.scale_services import require

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def report(
    tmp_path_factory: pytest.TempPathFactory, moodbot_copy: Callable[[str], Path]
) -> dict[str, Any]:
    require("PostgreSQL", "Redis", "RabbitMQ")
    scenario = Scenario(
        clients=10,
        conversations=5,
        messages=40,
        think_time=0.2,  # at least 8 s of load: both outages happen while clients send
        rabbitmq=True,
        db_down_at_start=1.0,
        db_outage=(1.0, 2.0),
        broker_outage=(3.5, 2.0),
    )
    workdir = tmp_path_factory.mktemp("outages")
    # The session's moodbot model: a training fewer.
    result = asyncio.run(run(scenario, workdir, moodbot_copy("outages-model")))
    print(format_report(result))
    return result


# The bounds below are paced: the report's times were taken on a host that the suite's other
# workers and jobs may crowd. A marked test's rerun reads the same report (the fixture is the
# module's), so it measures the host's pace again, not the outage.
@pytest.mark.timing
def test_servers_start_without_the_database_and_are_not_ready(report: dict[str, Any]) -> None:
    startup = report["startup_without_db"]
    assert startup["ready_while_db_down"] == [503, 503]
    assert startup["webhook_while_db_down"]["status"] == 503
    assert startup["ready_seconds_after_db_returned"] < paced(10)


@pytest.mark.timing
def test_database_outage_answers_503_with_rasas_body(report: dict[str, Any]) -> None:
    outage = report["database_outage"]
    assert set(outage["answers_during"]) <= {"200", "503"}, outage
    assert outage["answers_during"].get("503", 0) > 0
    assert outage["slowest_answer_during_s"] < paced(10)
    assert set(report["errors"]) == {"503 ServiceUnavailable"}
    body = report["startup_without_db"]["webhook_while_db_down"]["body"]
    assert set(body) == {"version", "status", "message", "reason", "details", "help", "code"}
    assert (body["status"], body["reason"], body["code"]) == ("failure", "ServiceUnavailable", 503)


@pytest.mark.timing
def test_answers_resume_within_seconds(report: dict[str, Any]) -> None:
    assert report["database_outage"]["first_200_after_restore_s"] < paced(5)
    assert report["broker_outage"]["first_200_after_restore_s"] < paced(5)


def test_no_acknowledged_message_is_lost(report: dict[str, Any]) -> None:
    checks = report["checks"]
    assert checks["lost"] == checks["duplicated"] == checks["interleaved"] == 0
    assert checks["reply_mismatch"] == checks["out_of_order"] == 0


def test_the_conversation_carries_on_while_the_broker_is_down(report: dict[str, Any]) -> None:
    assert set(report["broker_outage"]["answers_during"]) == {"200"}


def test_consumer_gets_every_event_once_in_order_across_the_outage(
    report: dict[str, Any],
) -> None:
    broker = report["broker"]
    assert broker["expected"] == report["checks"]["stored_events"]
    assert broker["missing"] == broker["extra"] == broker["duplicated"] == 0
    assert broker["held_back"] == 0
    assert broker["conversations_out_of_order"] == 0
