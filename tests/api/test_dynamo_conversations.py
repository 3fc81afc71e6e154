"""The HTTP API on a DynamoDB tracker store (moto's server): turns, trackers, and the
answers a client gets when DynamoDB is unreachable or a conversation outgrows an item."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from bench.tcp_proxy import free_port
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    delete_dynamo_table,
    moto_credentials,
    moto_endpoint,
    unique_name,
)

pytest.importorskip("boto3")


@pytest.fixture
def dynamo_store() -> Iterator[dict[str, Any]]:
    """The `tracker_store:` section of a new table on moto's server."""
    with moto_credentials():
        endpoint, table = moto_endpoint(), unique_name("bsapi")
        yield {"type": "dynamo", "table_name": table, "endpoint_url": endpoint}
        delete_dynamo_table(endpoint, table)


async def test_a_conversation_is_kept_in_dynamodb(
    make_client: Callable[..., Any], dynamo_store: dict[str, Any]
) -> None:
    client: httpx.AsyncClient = await make_client(endpoints={"tracker_store": dynamo_store})
    reply = await client.post("/webhooks/rest/webhook", json={"sender": "ann", "message": "hi"})
    assert reply.status_code == 200 and reply.json()

    tracker = (await client.get("/conversations/ann/tracker")).json()
    assert [e["event"] for e in tracker["events"]][:3] == [
        "action",
        "session_started",
        "action",
    ]
    assert tracker["latest_message"]["intent"]["name"] == "greet"

    # A second server on the same table (another process, after a restart) sees it.
    other: httpx.AsyncClient = await make_client(endpoints={"tracker_store": dynamo_store})
    again = (await other.get("/conversations/ann/tracker")).json()
    assert again["events"] == tracker["events"]


@pytest.mark.timing
async def test_an_unreachable_dynamodb_is_a_503_with_one_log_line(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    with moto_credentials():
        section = {"type": "dynamo", "endpoint_url": f"http://127.0.0.1:{free_port()}"}
        client: httpx.AsyncClient = await make_client(endpoints={"tracker_store": section})
        caplog.clear()
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            reply = await client.post(
                "/webhooks/rest/webhook", json={"sender": "bo", "message": "hi"}
            )
        elapsed = time.monotonic() - started

    assert reply.status_code == 503 and reply.headers["Retry-After"] == "1"
    assert reply.json()["message"] == "A storage backend is unavailable; retry later."
    assert elapsed < paced(5, below=10)  # two attempts of a 5 s connect timeout
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1
    assert "StoreUnavailable" in lines[0]
    assert "DynamoDB table 'states' in us-east-1" in lines[0] and "is unavailable" in lines[0]
    assert not any(r.exc_info for r in caplog.records)


async def test_events_past_the_item_limit_are_a_400_saying_what_to_do(
    make_client: Callable[..., Any], dynamo_store: dict[str, Any]
) -> None:
    client: httpx.AsyncClient = await make_client(endpoints={"tracker_store": dynamo_store})
    await client.post("/webhooks/rest/webhook", json={"sender": "cy", "message": "hi"})
    before = (await client.get("/conversations/cy/tracker")).json()["events"]
    big = [{"event": "bot", "timestamp": 10.0 + i, "text": "x" * 50_000} for i in range(9)]

    reply = await client.post("/conversations/cy/tracker/events", json=big)

    assert reply.status_code == 400
    assert "has grown past 400 KB" in reply.json()["message"]
    assert "an empty list deletes it" in reply.json()["message"]
    assert (await client.get("/conversations/cy/tracker")).json()["events"] == before

    # What the message says to do: the conversation takes turns again.
    assert (await client.put("/conversations/cy/tracker/events", json=[])).status_code == 200
    again = await client.post("/webhooks/rest/webhook", json={"sender": "cy", "message": "hi"})
    assert again.status_code == 200 and again.json()


async def test_an_empty_sender_is_a_400_not_a_500(
    make_client: Callable[..., Any], dynamo_store: dict[str, Any]
) -> None:
    """DynamoDB holds no empty key: the id is refused as the client's, before any request."""
    client: httpx.AsyncClient = await make_client(endpoints={"tracker_store": dynamo_store})
    reply = await client.post("/webhooks/rest/webhook", json={"sender": "", "message": "hi"})
    assert reply.status_code == 400
    assert "empty" in reply.json()["message"]
