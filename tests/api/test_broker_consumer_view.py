"""What a consumer of the event broker reads for a whole conversation, as a team moving from
Rasa 3.6 reads it: each event of the tracker once, in order, as `{"sender_id": ..., **event}`,
from a RabbitMQ queue (with Rasa's message properties) and from the SQL broker's `events`
table (Rasa's columns), with the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from server.brokers import ordering
from server.brokers.export import select_events
from server.brokers.ordering import PREVIOUS_ID_HEADER, ConversationOrderer
from server.trackers.factory import create_tracker_store
from server.trackers.sql_store import SqlTrackerStore
from tests.brokers.test_rabbitmq_broker import consume
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    POSTGRES,
    REDIS,
    postgres_database,
    require_service,
    unique_name,
)

# Every kind of event a consumer may meet, appended through the events API.
APPENDED: list[dict[str, Any]] = [
    {"event": "slot", "name": "session_started_metadata", "value": {"page": 2}},
    {"event": "active_loop", "name": "a_form"},
    {"event": "loop_interrupted", "is_interrupted": True},
    {"event": "action_execution_rejected", "name": "a_form", "policy": "p", "confidence": 0.5},
    {"event": "active_loop", "name": None},
    {"event": "followup", "name": "utter_greet"},
    {"event": "reminder", "intent": "greet", "date_time": "2030-01-01T10:00:00", "name": "r1"},
    {"event": "cancel_reminder", "name": "r1"},
    {"event": "entities", "entities": [{"entity": "name", "value": "Zoë"}]},
    {"event": "bot", "text": "hi", "data": {"custom": {"deep": [1, 2]}}},
    {"event": "undo"},
    {"event": "rewind"},
    {"event": "restart"},
]


async def converse(client: httpx.AsyncClient, sender: str) -> list[dict[str, Any]]:
    """A conversation with turns of every route; the tracker's events at the end."""
    said = {"sender": sender, "message": "hello", "metadata": {"page": "start"}}
    assert (await client.post("/webhooks/rest/webhook", json=said)).status_code == 200
    url = f"/conversations/{sender}"
    assert (
        await client.post(f"{url}/messages", json={"text": "I am sad", "sender": "user"})
    ).status_code == 200
    assert (await client.post(f"{url}/execute", json={"name": "utter_cheer_up"})).status_code == 200
    trigger = {"name": "greet", "entities": {"name": "Ana"}}
    assert (await client.post(f"{url}/trigger_intent", json=trigger)).status_code == 200
    appended = await client.post(f"{url}/tracker/events?include_events=NONE", json=APPENDED)
    assert appended.status_code == 200
    restarted = {"sender": sender, "message": "/greet"}  # a new session after the restart
    assert (await client.post("/webhooks/rest/webhook", json=restarted)).status_code == 200
    tracker = await client.get(f"{url}/tracker?include_events=ALL")
    events: list[dict[str, Any]] = tracker.json()["events"]
    return events


def assert_rasas_shape(
    bodies: list[dict[str, Any]], sender: str, tracker: list[dict[str, Any]]
) -> None:
    assert all(list(body)[0] == "sender_id" and body["sender_id"] == sender for body in bodies)
    events = [{k: v for k, v in body.items() if k != "sender_id"} for body in bodies]
    # The tracker shows the entity of the `entities` event on the user message it was added
    # to (as Rasa's does); the consumer got that message as it was said.
    added = [e["event"] for e in tracker].index("entities")
    said = max(i for i, e in enumerate(tracker[:added]) if e["event"] == "user")
    expected = [dict(e) for e in tracker]
    parse_data = dict(expected[said]["parse_data"])
    parse_data["entities"] = [
        e for e in parse_data["entities"] if e["entity"] != "name" or e["value"] != "Zoë"
    ]
    expected[said] = {**expected[said], "parse_data": parse_data}
    assert events == expected
    kinds = {event["event"] for event in events}
    assert {"user", "bot", "action", "slot", "session_started", "user_featurization"} <= kinds
    assert {e["event"] for e in APPENDED} <= kinds
    for event in events:
        assert isinstance(event["timestamp"], float)
        assert set(event["metadata"]) >= {"model_id", "assistant_id"}
    user = next(e for e in events if e["event"] == "user")
    assert user["input_channel"] == "rest" and user["metadata"]["page"] == "start"
    assert user["message_id"] == user["parse_data"]["message_id"]
    assert user["parse_data"]["intent_ranking"][0] == user["parse_data"]["intent"]
    action = next(e for e in events if e["event"] == "action" and e["policy"])
    assert isinstance(action["confidence"], float)


async def test_a_rabbitmq_consumer_reads_the_whole_conversation_as_rasa_sends_it(
    rabbitmq: dict[str, Any], make_client: Callable[..., Any]
) -> None:
    queue, exchange = rabbitmq["queues"][0], rabbitmq["exchange_name"]
    client = await make_client(
        endpoints={"tracker_store": {"type": "in_memory"}, "event_broker": rabbitmq}
    )
    tracker = await converse(client, "zoë")
    messages = await consume(queue, expected=len(tracker))

    assert_rasas_shape([json.loads(m.body) for m in messages], "zoë", tracker)
    for previous, message in zip([None, *messages[:-1]], messages, strict=True):
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.content_type == "application/json"
        assert message.exchange == exchange and message.routing_key == ""
        expected = {} if previous is None else {"previous_message_id": previous.message_id}
        assert message.headers == expected
    assert len({m.message_id for m in messages}) == len(messages)


async def test_a_sql_consumer_reads_the_whole_conversation_from_rasas_events_table(
    make_client: Callable[..., Any],
) -> None:
    async with postgres_database() as database:
        broker = {**database, "type": "sql", "dialect": "postgresql"}
        client = await make_client(
            endpoints={"tracker_store": {"type": "in_memory"}, "event_broker": broker}
        )
        tracker = await converse(client, "zoë")
        reader = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=database["db"]
        )
        try:
            for _ in range(100):  # delivered in the background
                # A Rasa consumer's query, unchanged.
                try:
                    rows = await reader.fetch("SELECT id, sender_id, data FROM events ORDER BY id")
                except asyncpg.UndefinedTableError:  # made at the broker's first write
                    rows = []
                if len(rows) >= len(tracker):
                    break
                await asyncio.sleep(0.05)
            columns = await reader.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'events' ORDER BY ordinal_position"
            )
        finally:
            await reader.close()

        assert {row["sender_id"] for row in rows} == {"zoë"}
        assert_rasas_shape([json.loads(row["data"]) for row in rows], "zoë", tracker)
        assert [(c["column_name"], c["data_type"]) for c in columns][:3] == [
            ("id", "integer"),
            ("sender_id", "character varying"),
            ("data", "text"),
        ]


# A client's events sharing one timestamp (an import with whole seconds, say), some
# byte-identical, over two requests: the second request's run continues the first's.
SAME_SECOND = {"timestamp": 1700000000, "metadata": {}}
OK = {"event": "bot", "text": "ok", **SAME_SECOND}
LISTEN = {"event": "action", "name": "action_listen", **SAME_SECOND}
REPEATED = [[OK, OK, LISTEN, OK, LISTEN], [OK, LISTEN]]


async def test_byte_identical_events_each_reach_a_consumer_and_an_export_repeats_their_ids(
    rabbitmq: dict[str, Any], make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """Each of a conversation's events once through `ConversationOrderer`, identical ones
    too, and `botserver export` gives them the ids they were published with. Before, events
    with one JSON shared an id: the consumer dropped all but the first as already seen."""
    stored = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
    client = await make_client(endpoints={"tracker_store": stored, "event_broker": rabbitmq})
    for events in REPEATED:
        url = "/conversations/ana/tracker/events?include_events=NONE"
        assert (await client.post(url, json=events)).status_code == 200
    tracker = (await client.get("/conversations/ana/tracker")).json()["events"]
    messages = await consume(rabbitmq["queues"][0], expected=len(tracker))

    orderer: ConversationOrderer[dict[str, Any]] = ConversationOrderer()
    handed = []
    for message in messages:
        previous = (message.headers or {}).get(PREVIOUS_ID_HEADER)
        handed += orderer.add(message.message_id, previous, json.loads(message.body))
    assert [{k: v for k, v in body.items() if k != "sender_id"} for body in handed] == tracker
    assert orderer.waiting == 0
    store = create_tracker_store(stored)
    try:
        exported = (await select_events(store)).messages
    finally:
        await store.close()
    # In timestamp order (the client's events are older than the session's start).
    published = [m.message_id for m in messages]
    assert sorted(m.message_id for m in exported) == sorted(published)
    assert len(set(published)) == len(published)


async def test_the_event_after_a_repeat_names_the_repeats_own_id_as_export_does(
    rabbitmq: dict[str, Any], make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """Each message's `previous_message_id` is the id the event before it was published
    with, also where that one was a repeat (of the same second or not), and `botserver
    export` links them alike. Before, a request after a repeat named the repeat's first
    twin: a consumer restoring the order let it pass before the repeat."""
    stored = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
    client = await make_client(endpoints={"tracker_store": stored, "event_broker": rabbitmq})
    later = {"event": "bot", "text": "later", "timestamp": 1700000001, "metadata": {}}
    for events in [*REPEATED, [later]]:
        url = "/conversations/ana/tracker/events?include_events=NONE"
        assert (await client.post(url, json=events)).status_code == 200
    tracker = (await client.get("/conversations/ana/tracker")).json()["events"]
    messages = await consume(rabbitmq["queues"][0], expected=len(tracker))

    assert len(messages) == len(tracker)
    for previous, message in zip([None, *messages[:-1]], messages, strict=True):
        expected = {} if previous is None else {PREVIOUS_ID_HEADER: previous.message_id}
        assert message.headers == expected
    store = create_tracker_store(stored)
    try:
        exported = (await select_events(store)).messages
    finally:
        await store.close()
    live = {m.message_id: (m.headers or {}).get(PREVIOUS_ID_HEADER) for m in messages}
    assert {m.message_id: m.previous_id for m in exported if m.previous_id} == {
        k: v for k, v in live.items() if v
    }


@pytest.mark.timing
async def test_a_failed_repeat_of_an_older_event_is_not_published_for_its_stored_twin(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """A client's event sent again with its timestamp after another event, whose save failed
    without committing: the broker's read-back does not take the stored twin for it. Before,
    the twin had another timestamp than the event before the retry, the read-back looked for
    the retry alone, found the twin and published an event the store does not hold."""
    trackers_db, events_db = tmp_path / "trackers.db", tmp_path / "events.db"
    client = await make_client(
        endpoints={
            "tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(trackers_db)},
            "event_broker": {"type": "sql", "dialect": "sqlite", "db": str(events_db)},
        }
    )
    url = "/conversations/ana/tracker/events?include_events=NONE"
    twin = {"event": "bot", "text": "twin", "timestamp": 1700000000}
    for events in [[twin], [{"event": "bot", "text": "between", "timestamp": 1700000001}]]:
        assert (await client.post(url, json=events)).status_code == 200

    def refuse_inserts(refuse: bool) -> None:
        with sqlite3.connect(trackers_db) as db:
            if refuse:
                db.execute(
                    "CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN "
                    "SELECT RAISE(ABORT, 'refused'); END"
                )
            else:
                db.execute("DROP TRIGGER refuse")

    await asyncio.to_thread(refuse_inserts, True)
    assert (await client.post(url, json=[twin])).status_code == 500  # nothing stored
    await asyncio.to_thread(refuse_inserts, False)
    after = {"event": "bot", "text": "after", "timestamp": 1700000002}
    assert (await client.post(url, json=[after])).status_code == 200

    def published() -> list[str]:
        with sqlite3.connect(events_db) as db:
            try:
                rows = db.execute("SELECT data FROM events ORDER BY id").fetchall()
            except sqlite3.OperationalError:  # no table before the broker's first write
                return []
        return [json.loads(row[0]).get("text") for row in rows if '"bot"' in row[0]]

    deadline = asyncio.get_running_loop().time() + paced(10)
    while "after" not in (texts := await asyncio.to_thread(published)):
        assert asyncio.get_running_loop().time() < deadline, texts
        await asyncio.sleep(0.05)
    assert texts == ["twin", "between", "after"]
    stored = (await client.get("/conversations/ana/tracker")).json()["events"]
    assert [e["text"] for e in stored if e["event"] == "bot"] == texts


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb", "redis", "dynamo"])
async def test_repeats_after_a_session_start_of_their_second_keep_their_own_ids(
    tracker_store: Callable[..., Any],
    rabbitmq: dict[str, Any],
    make_client: Callable[..., Any],
    tmp_path: Path,
    kind: str,
) -> None:
    """A client's import of two sessions within one second, in three requests: each event
    has its own id, live as in an export (the run of that second crosses the session start),
    with each kind of tracker store."""
    stored = await tracker_store(kind, tmp_path)
    client = await make_client(endpoints={"tracker_store": stored, "event_broker": rabbitmq})
    start = [
        {"event": "action", "name": "action_session_start", **SAME_SECOND},
        {"event": "session_started", **SAME_SECOND},
    ]
    for events in [[OK], [*start, OK], [OK]]:
        url = "/conversations/ana/tracker/events?include_events=NONE"
        assert (await client.post(url, json=events)).status_code == 200
    store = create_tracker_store(stored)
    try:
        exported = (await select_events(store)).messages
    finally:
        await store.close()
    messages = await consume(rabbitmq["queues"][0], expected=len(exported))

    published = [m.message_id for m in messages]
    assert len(set(published)) == len(published)
    assert sorted(m.message_id for m in exported) == sorted(published)


async def test_two_processes_taking_turns_give_each_event_the_id_an_export_gives(
    tracker_store: Callable[..., Any],
    rabbitmq: dict[str, Any],
    make_client: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """`--workers 2`: two servers on one PostgreSQL store and Redis lock take a client's
    requests in turn (repeats of one second, a session start within it): each event has its
    own id, the one an export gives it, and each names the one before it."""
    require_service("Redis", REDIS)
    prefix = unique_name("consumer_view_lock")
    endpoints = {
        "tracker_store": await tracker_store("postgres", tmp_path),
        "lock_store": {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix},
        "event_broker": rabbitmq,
    }
    clients = [await make_client(endpoints=endpoints) for _ in range(2)]
    start = [
        {"event": "action", "name": "action_session_start", **SAME_SECOND},
        {"event": "session_started", **SAME_SECOND},
    ]
    requests = [*REPEATED, [*start, OK, OK], [OK], [LISTEN, OK]]
    for n, events in enumerate(requests):
        url = "/conversations/ana/tracker/events?include_events=NONE"
        assert (await clients[n % 2].post(url, json=events)).status_code == 200
    store = create_tracker_store(endpoints["tracker_store"])
    try:
        exported = (await select_events(store)).messages
    finally:
        await store.close()
    messages = await consume(rabbitmq["queues"][0], expected=len(exported))

    live = {m.message_id: (m.headers or {}).get(PREVIOUS_ID_HEADER) for m in messages}
    assert len(live) == len(messages) == len(exported)
    assert {m.message_id: m.previous_id for m in exported if m.previous_id} == {
        k: v for k, v in live.items() if v
    }


async def test_an_ordinary_turn_hashes_its_events_and_the_one_before_once_each(
    make_client: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation's turns (the server stamps each event): a publish hashes each new event
    and the event before it once, and reads the store no more than the turn does. Before, the
    event before was hashed three times (its content, its id in its run, and to compare)."""
    store = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
    broker = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "events.db")}
    client = await make_client(endpoints={"tracker_store": store, "event_broker": broker})
    said = {"sender": "ana", "message": "hello"}
    assert (await client.post("/webhooks/rest/webhook", json=said)).status_code == 200
    hashed: list[str] = []
    original = ordering.canonical_text

    def counted(body: dict[str, Any]) -> str:
        hashed.append(body["event"])
        return original(body)

    monkeypatch.setattr(ordering, "canonical_text", counted)
    read_all: list[str] = []
    load_all = SqlTrackerStore.load_all

    async def counted_load_all(self: SqlTrackerStore, sender_id: str) -> Any:
        read_all.append(sender_id)
        return await load_all(self, sender_id)

    monkeypatch.setattr(SqlTrackerStore, "load_all", counted_load_all)
    for _ in range(3):
        length = len((await client.get("/conversations/ana/tracker")).json()["events"])
        hashed.clear()
        read_all.clear()  # the GET reads every session
        assert (await client.post("/webhooks/rest/webhook", json=said)).status_code == 200
        assert read_all == []  # the current session only, as the turn loaded it
        after = len((await client.get("/conversations/ana/tracker")).json()["events"])

        assert len(hashed) == after - length + 1, hashed
