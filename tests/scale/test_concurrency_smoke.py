"""`bench/concurrency.py --smoke --rabbitmq`: two server processes sharing PostgreSQL and a
Redis lock, 10 clients on 5 conversations:
every acknowledged message is stored once, in order, followed by its own bot turn, and a
RabbitMQ consumer gets every stored event once, in order per conversation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import run_all
from bench.concurrency import main
from tests.scale.scale_services import require

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any]]:
    """The concurrency step of `bench/run_all.py --smoke` (its command line, run here in
    process rather than there: that suite's test leaves this step to this module), with
    `--rabbitmq`: its exit status and the JSON report it wrote."""
    require("PostgreSQL", "Redis", "RabbitMQ")
    results = tmp_path_factory.mktemp("concurrency")
    command = run_all.steps(True, results, results / "unused.tar.gz")["concurrency"]
    assert Path(command[1]).name == "concurrency.py"
    status = main([*command[2:], "--rabbitmq"])
    report: dict[str, Any] = json.loads((results / "concurrency.json").read_text())
    return status, report


@pytest.fixture(scope="module")
def report(smoke_run: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    return smoke_run[1]


def test_the_command_exits_0(smoke_run: tuple[int, dict[str, Any]]) -> None:
    status, report = smoke_run
    assert status == 0, report["checks"]


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
