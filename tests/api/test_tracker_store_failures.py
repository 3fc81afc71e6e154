"""How a client hears of a store that refuses a statement: 500 for the server's own
problem, 400 for values the database cannot hold; never 503 "retry later" when no retry can
help, and never a webhook's 200 for a message that was not stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.trackers.test_redis_refusals import full_redis  # noqa: F401  (a fixture)
from tests.trackers.test_sql_store_errors import execute
from tests.trackers.test_sql_tracker_store import sql_config


@pytest.mark.parametrize("kind", ["mariadb", "sqlite"])
async def test_a_broken_table_is_a_500_not_a_retry_later_503(
    kind: str, make_client: Callable[..., Any], tmp_path: Path
) -> None:
    async with sql_config(kind, tmp_path) as config:
        client = await make_client(endpoints={"tracker_store": config})
        hello = {"sender": "alice", "message": "hello"}
        assert (await client.post("/webhooks/rest/webhook", json=hello)).status_code == 200
        await execute(config, "ALTER TABLE events DROP COLUMN intent_name")

        for response in (
            await client.post("/webhooks/rest/webhook", json={"sender": "bob", "message": "hi"}),
            await client.post(
                "/conversations/bob/tracker/events", json={"event": "bot", "text": "x"}
            ),
        ):
            assert response.status_code == 500
            assert "retry-after" not in response.headers
            assert response.json()["message"] == (
                "A storage backend failed; the server log has the details."
            )


async def test_an_event_larger_than_mysql_takes_is_a_400(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    async with sql_config("mariadb", tmp_path) as config:
        # A server that takes larger bodies than the default 10 MB.
        client = await make_client(
            endpoints={"tracker_store": config}, max_body_bytes=64 * 1024 * 1024
        )
        event = {"event": "bot", "text": "é" * (9 * 1024 * 1024)}
        response = await client.post("/conversations/alice/tracker/events", json=event)
        assert response.status_code == 400
        assert "max_allowed_packet" in response.json()["message"]
        assert "127.0.0.1" not in response.text
        response = await client.post(
            "/conversations/alice/tracker/events", json={"event": "bot", "text": "ok"}
        )
        assert response.status_code == 200


async def test_a_database_holding_another_events_table_is_a_500_not_a_200_or_400(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """A tracker store pointed at an event broker's database (its table is also `events`):
    before, the REST webhook answered 200 with no reply for a message it did not store, and
    the events API a 400 blaming the client's request."""
    async with sql_config("sqlite", tmp_path) as config:
        await execute(config, "CREATE TABLE events (id INTEGER PRIMARY KEY, sender_id TEXT)")
        client = await make_client(endpoints={"tracker_store": config})
        for response in (
            await client.post("/webhooks/rest/webhook", json={"sender": "bob", "message": "hi"}),
            await client.post(
                "/conversations/bob/tracker/events", json={"event": "bot", "text": "x"}
            ),
        ):
            assert response.status_code == 500
            assert response.json()["reason"] == "ServerError"


async def test_a_message_is_not_answered_200_when_the_lock_store_is_full(
    full_redis: dict[str, Any],  # noqa: F811
    make_client: Callable[..., Any],
) -> None:
    """Redis out of memory refuses the lock: before, the webhook answered 200 with no reply
    for a message it had neither handled nor stored."""
    client = await make_client(
        endpoints={
            "tracker_store": {"type": "in_memory"},
            "lock_store": {"type": "redis", **full_redis},
        }
    )
    response = await client.post("/webhooks/rest/webhook", json={"sender": "a", "message": "hi"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_a_turn_the_store_refuses_to_save_is_a_500_without_the_replies_rasa_sends(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """The store reads the conversation, the turn runs, and the save is refused (here a
    trigger; a dropped column, an ACL in real life). Rasa's REST webhook catches every error
    and answers 200 with what its collector holds: the bot's replies of a turn it did not
    store. Ours is a 500 with the fixed error body and no replies (docs/differences-from-
    rasa.md): the client may send the message again, which a 200 told it not to."""
    async with sql_config("sqlite", tmp_path) as config:
        client = await make_client(endpoints={"tracker_store": config})
        hello = {"sender": "alice", "message": "hello"}
        first = await client.post("/webhooks/rest/webhook", json=hello)
        assert first.status_code == 200 and first.json(), first.text  # Rasa's would be this
        await execute(
            config,
            "CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN "
            "SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        refused = await client.post("/webhooks/rest/webhook", json=hello)
        await execute(config, "DROP TRIGGER refuse")
        tracker = await client.get("/conversations/alice/tracker")

    assert refused.status_code == 500
    body = refused.json()
    assert {k: v for k, v in body.items() if k not in ("details", "help")} == {
        "version": body["version"],
        "status": "failure",
        "message": "A storage backend failed; the server log has the details.",
        "reason": "ServerError",
        "code": 500,
    }
    assert list(body["details"]) == ["request_id"]
    assert body["details"]["request_id"] == refused.headers["x-request-id"]
    texts = [e.get("text") for e in tracker.json()["events"] if e["event"] == "user"]
    assert texts == ["hello"]  # the refused turn is not there
