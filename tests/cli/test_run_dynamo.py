"""`botserver run` with a Rasa user's `tracker_store: {type: dynamo}` endpoints.yml, on
moto's DynamoDB server named by AWS_ENDPOINT_URL, as an AWS deployment names its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.botserver_process import ServerProcess
from tests.trackers.persistence_fixtures import (
    MOTO_ENVIRONMENT,
    delete_dynamo_table,
    moto_endpoint,
    unique_name,
)

boto3 = pytest.importorskip("boto3")


@pytest.fixture
def dynamo_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(endpoint, table name): the server process reads credentials and endpoint from its
    environment, as boto3 does everywhere."""
    endpoint, table = moto_endpoint(), unique_name("bsrun")
    for name, value in MOTO_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    yield endpoint, table
    delete_dynamo_table(endpoint, table)


def test_run_keeps_a_moodbot_conversation_in_dynamodb_across_a_restart(
    start_server: Callable[..., ServerProcess],
    moodbot_model: Path,
    tmp_path: Path,
    dynamo_table: tuple[str, str],
) -> None:
    """Before, `botserver run` refused `type: dynamo` at start-up (exit code 1)."""
    endpoint, table = dynamo_table
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: dynamo\n  table_name: {table}\n  region: us-east-1\n"
    )
    args = ["-m", str(moodbot_model), "--enable-api", "--endpoints", "endpoints.yml"]
    server = start_server(*args, cwd=tmp_path)
    server.wait_until("/health/ready")

    reply = httpx.post(
        server.url + "/webhooks/rest/webhook",
        json={"sender": "mood-1", "message": "I am very sad"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()[0]["text"] == "Here is something to cheer you up:"
    tracker = httpx.get(server.url + "/conversations/mood-1/tracker", timeout=30).json()
    assert tracker["latest_message"]["intent"]["name"] == "mood_unhappy"
    assert server.stop() == 0

    stored = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint).get_item(
        TableName=table, Key={"sender_id": {"S": "mood-1"}}
    )["Item"]
    assert len(stored["events"]["L"]) == len(tracker["events"])

    restarted = start_server(*args, cwd=tmp_path)
    restarted.wait_until("/health/ready")
    again = httpx.get(restarted.url + "/conversations/mood-1/tracker", timeout=30).json()
    assert again["events"] == tracker["events"]
    reply = httpx.post(
        restarted.url + "/webhooks/rest/webhook",
        json={"sender": "mood-1", "message": "yes"},
        timeout=30,
    )
    assert reply.json()[0]["text"] == "Great, carry on!"
