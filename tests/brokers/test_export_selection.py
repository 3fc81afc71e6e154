"""What `botserver export` selects from a tracker store (a real SQLite one) before it
publishes: every event exactly as stored, and a bounded footprint in memory."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.brokers import export
from server.brokers.export import (
    PUBLISH_CHUNK,
    Found,
    ResumePoint,
    publish_events,
    select_events,
    selected_events,
)
from server.errors import CorruptConversation, ExportInterrupted, NothingToExport
from server.trackers.dynamo_store import DynamoTrackerStore
from server.trackers.factory import create_tracker_store
from tests.trackers.persistence_fixtures import (
    delete_dynamo_table,
    moto_credentials,
    moto_endpoint,
    tracker_store_config,
    unique_name,
)


def _user(number: int, at: float) -> dict[str, Any]:
    text = f"message number {number}"
    intent = {"name": "greet", "confidence": 0.9}
    return {
        "event": "user",
        "timestamp": at,
        "text": text,
        "parse_data": {
            "intent": intent,
            "entities": [],
            "intent_ranking": [intent, {"name": "goodbye", "confidence": 0.1}],
            "text": text,
        },
        "input_channel": "rest",
        "message_id": f"{number:032x}",
        "metadata": {},
    }


def _slot(number: int, at: float) -> dict[str, Any]:
    return {"event": "slot", "timestamp": at, "name": "city", "value": f"Paris {number}"}


class _Collecting:
    """A broker that keeps what it is handed (no queue, no outage)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def deliver(self, items: Any) -> None:
        while items:
            self.bodies.append(items.popleft().body())


async def test_events_go_out_exactly_as_stored(tmp_path: Path) -> None:
    odd = {
        "event": "slot",
        "timestamp": 2.5,
        "name": "odd",
        "value": {"text": "héllo 👋 \ud800", "tenth": 0.1, "zero": -0.0, "big": 10**30, "n": None},
    }
    events = [_user(1, 1.0), odd, {"event": "action", "name": "action_listen", "timestamp": 3}]
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    await store.append("ann", events)
    selection = await select_events(store)
    await store.close()
    broker = _Collecting()
    assert await publish_events(broker, selection) == 3  # type: ignore[arg-type]
    published = broker.bodies
    assert published == [{"sender_id": "ann", **event} for event in events]
    assert [list(body) for body in published] == [["sender_id", *event] for event in events]
    assert isinstance(published[2]["timestamp"], int)
    assert str(published[1]["value"]["zero"]) == "-0.0"


class _FailingAfter(_Collecting):
    """Takes `allowed` messages, then fails as a broker that lost its connection (or with
    `error`: a CancelledError is the export stopped by hand)."""

    def __init__(self, allowed: int, error: BaseException | None = None) -> None:
        super().__init__()
        self.allowed = allowed
        self.error = error or ConnectionError("connection reset")

    async def deliver(self, items: Any) -> None:
        while items:
            if len(self.bodies) == self.allowed:
                raise self.error
            self.bodies.append(items.popleft().body())


@pytest.mark.parametrize(
    "allowed", [PUBLISH_CHUNK - 1, PUBLISH_CHUNK, PUBLISH_CHUNK + 1, 2 * PUBLISH_CHUNK]
)
async def test_an_export_stopped_at_a_batch_boundary_goes_on_without_a_gap(
    tmp_path: Path, allowed: int
) -> None:
    """The events go to the broker a batch at a time; a failure around a batch's edge names
    the count, conversation and timestamp of the first event not published, so the export
    resumed there publishes every other one (again only those of that conversation sharing
    its timestamp)."""
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    for c in range(3):
        await store.append(f"c{c}", [_user(i, float(i // 3)) for i in range(c, 2500, 3)])
    everything = [json.dumps(m.body()) for m in (await select_events(store)).messages]
    failing = _FailingAfter(allowed)
    with pytest.raises(ExportInterrupted) as raised:
        await publish_events(failing, await select_events(store))  # type: ignore[arg-type]
    assert raised.value.published == allowed
    stopped = raised.value
    first_left = json.loads(everything[allowed])
    assert (first_left["sender_id"], first_left["timestamp"]) == (
        stopped.resume_sender_id,
        stopped.resume_timestamp,
    )
    rest = _Collecting()
    resume = ResumePoint(stopped.resume_sender_id, stopped.resume_timestamp)
    await publish_events(rest, await select_events(store, resume=resume))  # type: ignore[arg-type]
    await store.close()
    first, second = [json.dumps(b) for b in failing.bodies], [json.dumps(b) for b in rest.bodies]
    assert first == everything[:allowed]
    assert second == everything[allowed:]  # (no event of c1 shares another's timestamp)
    assert sorted(set(first + second)) == sorted(everything)


@pytest.fixture
async def dynamo() -> AsyncIterator[tuple[DynamoTrackerStore, list[str]]]:
    """A DynamoDB store on a new table on moto's server, and the names of the requests it
    makes (botocore's own hook: nothing is faked)."""
    pytest.importorskip("boto3")
    endpoint, table = moto_endpoint(), unique_name("bs_export")
    with moto_credentials():
        store = create_tracker_store(
            {"type": "dynamo", "table_name": table, "endpoint_url": endpoint}
        )
        assert isinstance(store, DynamoTrackerStore)
        requests: list[str] = []
        store._client.meta.events.register(
            "before-call.dynamodb.*", lambda model, **_: requests.append(model.name)
        )
        try:
            yield store, requests
        finally:
            await store.close()
            delete_dynamo_table(endpoint, table)


async def test_conversation_ids_are_read_without_scanning_the_table(
    dynamo: tuple[DynamoTrackerStore, list[str]],
) -> None:
    """`--conversation-ids` reads those conversations alone. Before, the export first listed
    every conversation of the store (on DynamoDB a Scan, which reads and bills every item
    of the table) to find which of them it held."""
    store, requests = dynamo
    for c in range(3):
        await store.append(f"c{c}", [_user(i, 10.0 * i + c) for i in range(2)])
    requests.clear()
    selection = await select_events(store, ["c1", "zed"])
    assert (selection.conversations, selection.missing) == (["c1"], ["zed"])
    assert [m.event["timestamp"] for m in selection.messages] == [1.0, 11.0]
    assert requests == ["GetItem", "GetItem"]


async def test_every_conversation_of_a_dynamodb_table_is_read_in_one_scan(
    dynamo: tuple[DynamoTrackerStore, list[str]],
) -> None:
    """The whole table in one pass, a Scan page (1 MB) at a time. Before, a Scan listed the
    conversations (it reads, and bills, every item whole), then a GetItem read each one
    again: a request per conversation, and three times the read units."""
    store, requests = dynamo
    for c in (2, 0, 1):
        await store.append(f"c{c}", [_user(i, 10.0 * i) for i in range(2)])
    requests.clear()
    selection = await select_events(store)
    assert requests == ["Scan"]
    assert selection.conversations == ["c0", "c1", "c2"]
    # Conversation after conversation (in the table's scan order), each by timestamp.
    sent = [(m.sender_id, m.event["timestamp"]) for m in selection.messages]
    order = list(dict.fromkeys(sender_id for sender_id, _ in sent))
    assert sent == [(sender_id, at) for sender_id in order for at in (0.0, 10.0)]


@pytest.mark.parametrize(
    "event",
    [{"S": "{not json"}, {"M": {"event": {"S": "user"}, "tags": {"SS": ["a"]}}}],
    ids=["text not JSON", "a string set in it"],
)
async def test_an_unreadable_dynamodb_item_is_skipped_and_the_scan_goes_on(
    event: dict[str, Any],
    dynamo: tuple[DynamoTrackerStore, list[str]],
) -> None:
    """An item whose event is text that is not JSON ended the table's one Scan pass, on every
    run: with `skip_unreadable` it is named and the scan goes on past it. Until review123, an
    event holding a value JSON has none of (another program's string set) ended it even with
    `skip_unreadable`, as a StoreFailed naming no conversation."""
    store, _ = dynamo
    for c in range(3):
        await store.append(f"c{c}", [_user(0, 1.0)])
    store._client.put_item(
        TableName=store.table,
        Item={"sender_id": {"S": "bad"}, "events": {"L": [event]}},
    )
    with pytest.raises(CorruptConversation, match="'bad'"):
        await select_events(store)
    found = Found()
    chosen = selected_events(store, found=found, skip_unreadable=True)
    sent = [item.sender_id async for item in chosen]
    assert sorted(sent) == ["c0", "c1", "c2"]
    assert (found.conversations, found.unreadable) == (3, ["bad"])


async def test_a_resumed_dynamodb_export_leaves_an_unreadable_item_before_its_point_alone(
    dynamo: tuple[DynamoTrackerStore, list[str]],
) -> None:
    """`--resume-from` on DynamoDB: the conversations before the resume point in the scan's
    order were done by the export resumed, as on SQL or Redis. Before, an unreadable item
    among them stopped the resumed export (without --skip-unreadable), or (with it) was named
    as skipped again and made the exit status 3, though this export had nothing of it to
    publish."""
    store, _ = dynamo
    for c in range(6):
        await store.append(f"c{c}", [_user(0, 1.0)])
    store._client.put_item(
        TableName=store.table,
        Item={"sender_id": {"S": "bad"}, "events": {"L": [{"S": "{not json"}]}},
    )
    found = Found()
    order = [
        item.sender_id async for item in selected_events(store, found=found, skip_unreadable=True)
    ]
    assert found.unreadable == ["bad"]
    scan = [item["sender_id"]["S"] for item in store._scan_all()]  # the table's order
    after = scan[scan.index("bad") + 1 :]
    assert after, scan  # (moto scans in key order: "bad" before the c's)
    resume = ResumePoint(after[0], 0.0)
    selection = await select_events(store, resume=resume)
    assert selection.conversations == sorted(after)
    found = Found()
    resumed = selected_events(store, resume=resume, found=found, skip_unreadable=True)
    assert [item.sender_id async for item in resumed] == after
    assert found.unreadable == []
    assert order[-len(after) :] == after


async def test_a_conversation_id_longer_than_dynamodb_keys_is_named_missing(
    dynamo: tuple[DynamoTrackerStore, list[str]],
) -> None:
    """DynamoDB refuses a partition key over 2,048 bytes (a ValidationException: the whole
    export failed). Such an id in `--conversation-ids` is no conversation of the table: it
    is named missing, with no request, as before the ids were read one by one."""
    store, requests = dynamo
    await store.append("c1", [_user(0, 1.0)])
    requests.clear()
    too_long = ["x" * 2049, "é" * 1025]  # 2,049 and 2,050 bytes of UTF-8
    selection = await select_events(store, ["c1", "x" * 2048, *too_long])
    assert selection.conversations == ["c1"]
    assert selection.missing == sorted(["x" * 2048, *too_long])
    assert requests == ["GetItem", "GetItem"]  # c1, and the longest key DynamoDB takes


def _counting_round_trips(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the store sends its database: a SQL store's statements (one awaited call of its
    database object each), a Redis store's sends (a pipeline is one)."""
    sent: list[str] = []
    if hasattr(store, "_db"):
        for name in ("senders", "all_data", "all_data_of"):
            if hasattr(store._db, name):
                method = getattr(store._db, name)

                async def counted(*args: Any, _m: Any = method, _n: str = name) -> Any:
                    sent.append(_n)
                    return await _m(*args)

                monkeypatch.setattr(store._db, name, counted)
    else:
        from redis.asyncio.connection import AbstractConnection

        send = AbstractConnection.send_packed_command

        async def counted_send(self: Any, command: Any, check_health: bool = True) -> None:
            packed = command if isinstance(command, bytes) else b"".join(command)
            sent.append("senders" if b"\r\nSCAN\r\n" in packed[:20] else "read")
            await send(self, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted_send)
    return sent


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb", "redis"])
async def test_conversations_are_read_a_batch_at_a_time(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store of 100 conversations in batches of 40: the listing, then three reads (on
    Redis, two pipelines each: the keys' sizes, for the byte budget, then the batch's
    reads), every event selected. Before, one round trip a conversation after the listing:
    101 (a store of a million conversations, a million round trips)."""
    monkeypatch.setattr(export, "EXPORT_BATCH", 40)
    async with tracker_store_config(kind, tmp_path) as config:
        store = create_tracker_store(config)
        try:
            for c in range(100):
                await store.append(f"c{c:03}", [_user(c, 1000.0 + c), _slot(c, 2000.0 - c)])
            await store.keys()  # (connected, the schema made)
            sent = _counting_round_trips(store, monkeypatch)
            selection = await select_events(store)
            listing, reads = sent.count("senders"), len(sent) - sent.count("senders")
            del sent[:]
            chosen = await select_events(store, [f"c{c:03}" for c in range(0, 100, 2)] + ["zed"])
            chosen_trips = list(sent)
        finally:
            await store.close()
    assert len(selection.messages) == 200
    # Conversation after conversation, by id, each one's events by timestamp.
    stamps = [m.event["timestamp"] for m in selection.messages]
    assert stamps[:4] == [1000.0, 2000.0, 1001.0, 1999.0]
    assert [m.sender_id for m in selection.messages][::2] == [f"c{c:03}" for c in range(100)]
    # (Redis: a SCAN page a step over the whole database, which other keys may share.)
    assert listing == 1 or (kind == "redis" and listing >= 1)
    per_batch = 2 if kind == "redis" else 1
    assert reads == 3 * per_batch, sent
    assert (len(chosen.conversations), chosen.missing) == (50, ["zed"])
    # 51 ids, in two batches, and no listing
    assert len(chosen_trips) == 2 * per_batch, chosen_trips


async def test_a_redis_batch_reads_rasas_layout_and_names_a_value_that_is_not_utf8() -> None:
    """In a batch's pipeline, a conversation in Rasa's layout (one JSON string) is read as
    `load_all` reads it, and one holding bytes that are no UTF-8 text is named, as a read
    of it alone names it: the pipeline's answer alone was a WRONGTYPE, or a decoding error
    naming no conversation."""
    from redis.asyncio import Redis

    from server.errors import CorruptConversation
    from tests.trackers.persistence_fixtures import REDIS, delete_redis_keys, require_service

    require_service("Redis", REDIS)
    prefix = unique_name("left24batch")
    store = create_tracker_store(
        {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    )
    raw = Redis(host=REDIS[0], port=REDIS[1])
    try:
        await store.append("ann", [_user(1, 1.0)])
        rasas = {"sender_id": "bob", "events": [_slot(2, 2.0)]}
        await raw.set(f"{prefix}:tracker:bob", json.dumps(rasas))
        selection = await select_events(store)
        assert [(m.sender_id, m.event["timestamp"]) for m in selection.messages] == [
            ("ann", 1.0),
            ("bob", 2.0),
        ]
        await raw.rpush(f"{prefix}:tracker:dee", b"\xff\xfe")
        with pytest.raises(CorruptConversation, match="'dee' holds a value that is not UTF-8"):
            await select_events(store)
    finally:
        await store.close()
        await raw.aclose()
        await delete_redis_keys(prefix)


class _Counting:
    """A broker that counts what it is handed and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    async def deliver(self, items: Any) -> None:
        while items:
            items.popleft()
            self.count += 1


async def _export_peak(
    tmp_path: Path, conversations: int, each: int, kind: str = "sqlite"
) -> tuple[int, int]:
    """The peak of memory taken while a store (`tracker_store_config`'s kind) of these many
    conversations of `each` user messages is exported, and its JSON."""
    folder = tmp_path / f"{kind}{conversations}"
    folder.mkdir()
    async with tracker_store_config(kind, folder) as config:
        store = create_tracker_store(config)
        for c in range(conversations):
            await store.append(f"c{c:02}", [_user(i, 1e9 + 10 * i + c / 100) for i in range(each)])
        await store.close()
        json_bytes = conversations * sum(len(json.dumps(_user(i, 1e9))) for i in range(each))
        store = create_tracker_store(config, create_missing=False, read_only=True)
        broker = _Counting()
        tracemalloc.start()
        try:
            published = await export.export_events(broker, store)  # type: ignore[arg-type]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await store.close()
    assert published == broker.count == conversations * each
    return peak, json_bytes


async def test_an_export_holds_one_conversation_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events go out conversation after conversation, as Rasa's `rasa export` sends
    them, so an export holds a conversation (with a batch of conversations' JSON as read,
    and a chunk for the broker), not the store: three times the conversations, the same
    peak. Before, every selected event was held until the end to sort them across
    conversations: the peak grew with the store, 1.6 times its JSON and more."""
    monkeypatch.setattr(export, "EXPORT_BATCH", 2)
    monkeypatch.setattr(export, "PUBLISH_CHUNK", 50)
    await _export_peak(tmp_path, 1, 1)  # (what the first export imports, out of the way)
    small, _ = await _export_peak(tmp_path, 10, 100)
    large, _ = await _export_peak(tmp_path, 40, 100)
    assert large < 1.2 * small, f"{small} bytes for 10 conversations, {large} for 40"


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb", "redis"])
async def test_a_batch_of_large_conversations_is_read_within_a_byte_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A batch is up to 100 conversations; their stored JSON was read all at once, so 100
    long conversations took 100 times one of them in memory. Now a batch holds about
    EXPORT_BATCH_BYTES of it (here two conversations' worth): four times the conversations
    in one batch, the same peak. Every event still goes out once, in order."""
    each = 60
    _, one = await _export_peak(tmp_path, 1, each, kind)  # (the imports out of the way)
    monkeypatch.setattr(export, "EXPORT_BATCH_BYTES", 2 * one)
    monkeypatch.setattr(export, "PUBLISH_CHUNK", 50)  # (the broker's chunk: small, as ever)
    small, _ = await _export_peak(tmp_path, 10, each, kind)
    large, _ = await _export_peak(tmp_path, 40, each, kind)
    assert large < 1.3 * small, f"{small} bytes for 10 conversations, {large} for 40"


def _failing_at_the_second_read(store: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Makes the store's second batch read fail (unavailable); returns its own read."""
    from server.errors import StoreUnavailable

    reads = store.load_all_of
    calls: list[int] = []

    def failing_second(sender_ids: Any, max_bytes: int | None = None) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise StoreUnavailable("the tracker store is unavailable", "SQLite", "gone")
        return reads(sender_ids, max_bytes)

    monkeypatch.setattr(store, "load_all_of", failing_second)
    return reads


@pytest.mark.parametrize(
    ("batch", "chunk", "conversations", "published", "resume"),
    [
        # c0's two events and c1's first went out: c1's second is the first not out.
        (2, 3, 5, 3, ResumePoint("c1", 11.0)),
        # A whole chunk (c0's two) went out just before the store failed reading c1: the
        # point is after the last one out (c0's at 10.0, the first of that time).
        (1, 2, 2, 2, ResumePoint("c0", 10.0, 1)),
    ],
)
async def test_a_tracker_store_failing_midway_names_what_went_out_and_where_to_go_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
    chunk: int,
    conversations: int,
    published: int,
    resume: ResumePoint,
) -> None:
    """The export reads as it publishes: a tracker store lost (at its second read) after
    some events went out says how many, and where to go on from, as a broker failure does;
    the export resumed there publishes the rest, each event once (counted: none sent twice).
    Before (with reading and publishing interleaved), the store's error alone: nothing said
    that events were out, nor how to go on."""

    monkeypatch.setattr(export, "EXPORT_BATCH", batch)
    monkeypatch.setattr(export, "PUBLISH_CHUNK", chunk)
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    for c in range(conversations):
        await store.append(f"c{c}", [_user(i, 10.0 * i + c) for i in range(2)])
    everything = [json.dumps(m.body()) for m in (await select_events(store)).messages]
    reads = _failing_at_the_second_read(store, monkeypatch)
    first = _Collecting()
    with pytest.raises(ExportInterrupted) as raised:
        await publish_events(first, export.selected_events(store))  # type: ignore[arg-type]
    stopped = raised.value
    assert str(stopped).startswith(
        f"the tracker store failed (after {published} events): the tracker store is unavailable"
    )
    assert len(first.bodies) == stopped.published == published
    point = ResumePoint(stopped.resume_sender_id, stopped.resume_timestamp, stopped.resume_skip)
    assert point == resume
    monkeypatch.setattr(store, "load_all_of", reads)
    rest = _Collecting()
    await publish_events(rest, export.selected_events(store, resume=point))  # type: ignore[arg-type]
    await store.close()
    assert [json.dumps(b) for b in first.bodies + rest.bodies] == everything


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
async def test_a_batch_read_is_not_cut_short_by_the_statement_timeout(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`SQL_STATEMENT_TIMEOUT` bounds a turn's statements; the export's batch reads, as the
    listing of every conversation, are not bounded by it (a batch of 100 long conversations
    may take longer than one turn's read), a database gone silent still ending them. Here
    a timeout no read meets: the export goes through."""
    async with tracker_store_config(kind, tmp_path) as config:
        writer = create_tracker_store(config)
        await writer.append("ann", [_user(1, 1.0)])
        await writer.close()
        monkeypatch.setenv("SQL_STATEMENT_TIMEOUT", "0.000001")
        store = create_tracker_store(config)
        try:
            selection = await select_events(store)
        finally:
            await store.close()
    assert [m.sender_id for m in selection.messages] == ["ann"]


async def test_an_export_stopped_by_hand_says_where_it_got_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C on a long export: it stops at once (the cancellation is not swallowed), and
    what it published, and the first event it did not, is known for the line it ends with.
    Before, nothing said how far it got (nor does Rasa's)."""
    monkeypatch.setattr(export, "PUBLISH_CHUNK", 4)
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    for c in range(3):
        await store.append(f"c{c}", [_user(i, 10.0 * i + c) for i in range(3)])
    progress = export.Progress()
    broker = _FailingAfter(6, asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await publish_events(broker, export.selected_events(store), progress)  # type: ignore[arg-type]
    await store.close()
    assert progress.published == len(broker.bodies) == 6
    assert progress.resume == ResumePoint("c2", 2.0)  # c0's and c1's three went out


@pytest.mark.parametrize("allowed", [2, 4, 5])
async def test_an_export_resumed_within_one_timestamp_sends_each_event_once(
    tmp_path: Path, allowed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five events of one conversation share a timestamp (a client's import, a form's slots):
    a broker failure among them names how many of them went out, and the export resumed
    there sends each other event once, and none twice, also after a second failure. Before,
    the resumed export sent again those of that timestamp already out."""
    monkeypatch.setattr(export, "PUBLISH_CHUNK", 2)
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    await store.append("ann", [_slot(i, 1.0) for i in range(3)])
    await store.append("bob", [_slot(i, 5.0) for i in range(5)] + [_slot(9, 6.0)])
    everything = [json.dumps(m.body()) for m in (await select_events(store)).messages]
    sent: list[str] = []
    resume: ResumePoint | None = None
    for limit in (allowed, 1, len(everything)):  # a failure, another, then through
        broker = _FailingAfter(limit)
        try:
            await publish_events(broker, export.selected_events(store, resume=resume))  # type: ignore[arg-type]
        except ExportInterrupted as stopped:
            resume = ResumePoint(
                stopped.resume_sender_id, stopped.resume_timestamp, stopped.resume_skip
            )
        sent += [json.dumps(body) for body in broker.bodies]
    await store.close()
    assert sent == everything


async def test_a_resume_point_before_the_minimum_timestamp_skips_nothing_at_the_minimum(
    tmp_path: Path,
) -> None:
    """`--minimum-timestamp 10 --resume-from=bob@5.0#1` (written by hand): no event of bob
    at 5.0 is selected, so none is skipped; bob's first at 10.0 goes out."""
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    await store.append("bob", [_slot(i, 10.0) for i in range(2)])
    selection = await select_events(
        store, minimum_timestamp=10.0, resume=ResumePoint("bob", 5.0, 1)
    )
    await store.close()
    assert [m.event["value"] for m in selection.messages] == ["Paris 0", "Paris 1"]


class _Scanned:
    """A store read in one pass, in an order of its own (DynamoDB's scan)."""

    def __init__(self, conversations: dict[str, list[dict[str, Any]]]) -> None:
        self.conversations = conversations

    async def each_conversation(self, unreadable: Any = None) -> Any:
        for sender_id, events in self.conversations.items():
            yield sender_id, events


async def test_a_resume_point_whose_conversation_left_a_scanned_table_says_to_start_again() -> None:
    """DynamoDB: the conversation an export was to resume from was deleted meanwhile (a
    prune): where it was in the scan's order is not known, so the conversations after it
    cannot be told from those before. The error says to export again without --resume-from;
    before, it said that nothing was left to publish, and those after it were never sent."""
    store = _Scanned({"zed": [_slot(1, 1.0)], "ann": [_slot(2, 2.0)]})
    with pytest.raises(NothingToExport) as raised:
        await select_events(store, resume=ResumePoint("bob", 1.0))  # type: ignore[arg-type]
    message = str(raised.value)
    assert "nothing left to publish" not in message, message
    assert "without --resume-from" in message, message


async def test_a_failure_after_one_event_says_one_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "after 1 events", where export's last line says "Published 1 event".
    monkeypatch.setattr(export, "EXPORT_BATCH", 1)
    monkeypatch.setattr(export, "PUBLISH_CHUNK", 1)
    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")})
    for c in range(2):
        await store.append(f"c{c}", [_user(0, 10.0 + c)])
    _failing_at_the_second_read(store, monkeypatch)
    with pytest.raises(ExportInterrupted) as raised:
        await publish_events(_Collecting(), export.selected_events(store))  # type: ignore[arg-type]
    await store.close()
    assert raised.value.published == 1
    assert str(raised.value).startswith("the tracker store failed (after 1 event): ")


class _Chunks:
    """A broker that keeps how many bytes of messages each hand-over held."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def deliver(self, items: Any) -> None:
        size = 0
        while items:
            size += len(json.dumps(items.popleft().body()))
        self.sizes.append(size)


async def test_the_broker_gets_a_bounded_number_of_bytes_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Up to 1,000 messages went to the broker at a time whatever their size: 1,000 long
    user messages (40,000 characters each) were 40 MB made at once. Now a chunk ends at
    about PUBLISH_CHUNK_BYTES (here three messages' worth)."""
    monkeypatch.setattr(export, "PUBLISH_CHUNK_BYTES", 25_000)
    store = create_tracker_store(None)
    long = [{**_user(i, 1e9 + i), "text": "x" * 10_000} for i in range(30)]
    await store.append("ann", long)
    broker = _Chunks()
    published = await export.export_events(broker, store)  # type: ignore[arg-type]
    assert published == 30
    assert max(broker.sizes) < 25_000 + 11_000, broker.sizes


class _StoppedAsTheFirstChunkWentOut(_Collecting):
    """Takes the first chunk, and is asked to stop (Ctrl-C, SIGTERM: the export's task
    cancelled) as its delivery ends."""

    async def deliver(self, items: Any) -> None:
        first = not self.bodies
        await super().deliver(items)
        if first:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()


async def test_an_export_whose_stop_a_redis_read_swallowed_publishes_no_further_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that comes as a Redis read goes out is dropped by Python 3.11's
    `asyncio.wait_for` (the client wraps each send in one): the export stops before its
    next chunk, and says where to go on. Before, it published every event to the end."""
    monkeypatch.setattr(export, "PUBLISH_CHUNK", 2)
    monkeypatch.setattr(export, "EXPORT_BATCH", 1)  # (a Redis read between the chunks)
    async with tracker_store_config("redis", tmp_path) as config:
        store = create_tracker_store(config)
        try:
            for c in range(4):
                await store.append(f"c{c}", [_user(i, 10.0 * i + c) for i in range(2)])
            progress = export.Progress()
            broker = _StoppedAsTheFirstChunkWentOut()
            with pytest.raises(asyncio.CancelledError):
                await publish_events(broker, export.selected_events(store), progress)  # type: ignore[arg-type]
        finally:
            await store.close()
    assert progress.published == len(broker.bodies) == 2
    assert progress.resume == ResumePoint("c1", 1.0)
