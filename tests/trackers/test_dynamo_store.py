"""The DynamoDB tracker store against moto's server: Rasa 3's table layout, its settings,
and what a user sees when DynamoDB cannot be reached or a conversation outgrows an item.

The contract every store keeps runs in test_tracker_stores.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.tcp_proxy import SilentProxy, free_port
from server.errors import (
    CorruptConversation,
    InvalidConfig,
    StoreFailed,
    StoreRefusedData,
    StoreUnavailable,
)
from server.trackers import dynamo_store
from server.trackers.dynamo_store import DynamoTrackerStore
from server.trackers.factory import create_tracker_store
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    botocore_files_read,
    delete_dynamo_table,
    moto_credentials,
    moto_endpoint,
    unique_name,
)

boto3 = pytest.importorskip("boto3")


@pytest.fixture
def endpoint() -> Iterator[str]:
    with moto_credentials():
        yield moto_endpoint()


@pytest.fixture
def table(endpoint: str) -> Iterator[str]:
    name = unique_name("bstest")
    yield name
    delete_dynamo_table(endpoint, name)


@pytest.fixture
async def store(endpoint: str, table: str) -> AsyncIterator[DynamoTrackerStore]:
    opened = create_tracker_store({"type": "dynamo", "table_name": table, "endpoint_url": endpoint})
    assert isinstance(opened, DynamoTrackerStore)
    yield opened
    await opened.close()


def raw_client(endpoint: str, region: str = "us-east-1") -> Any:
    return boto3.client("dynamodb", region_name=region, endpoint_url=endpoint)


def user(text: str, timestamp: float) -> dict[str, Any]:
    return {
        "event": "user",
        "timestamp": timestamp,
        "text": text,
        "parse_data": {"intent": {"name": "greet", "confidence": 0.93}, "entities": []},
        "input_channel": "rest",
        "message_id": None,
        "metadata": {},
    }


async def test_the_table_is_created_on_first_use_with_rasas_key(
    store: DynamoTrackerStore, endpoint: str, table: str
) -> None:
    client = raw_client(endpoint)
    assert table not in client.list_tables()["TableNames"]  # nothing before the first use

    await store.ping()

    described = client.describe_table(TableName=table)["Table"]
    assert described["KeySchema"] == [{"AttributeName": "sender_id", "KeyType": "HASH"}]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


async def test_an_item_is_rasas_dialogue_with_floats_as_numbers(
    store: DynamoTrackerStore, endpoint: str, table: str
) -> None:
    await store.append("alice", [user("hi", 1700000000.25)])
    await store.append("alice", [{"event": "bot", "timestamp": 1700000001.5, "text": "hey"}])

    item = boto3.resource("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
    stored = item.Table(table).get_item(Key={"sender_id": "alice"})["Item"]
    assert stored["sender_id"] == "alice" and stored["name"] == "alice"
    assert [event["event"] for event in stored["events"]] == ["user", "bot"]
    assert stored["events"][0]["timestamp"] == Decimal("1700000000.25")
    assert stored["events"][0]["parse_data"]["intent"]["confidence"] == Decimal("0.93")


async def test_a_conversation_rasa_stored_loads(
    store: DynamoTrackerStore, endpoint: str, table: str
) -> None:
    """An item as Rasa 3 puts it (the whole dialogue, floats as Decimal) in a table it made."""
    await store.ping()
    resource = boto3.resource("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
    events = [
        {"event": "action", "timestamp": Decimal("1.5"), "name": "action_session_start"},
        {"event": "session_started", "timestamp": Decimal("1.75")},
        {"event": "slot", "timestamp": Decimal("2.25"), "name": "n", "value": Decimal("3")},
        {"event": "action", "timestamp": Decimal("100.5"), "name": "action_session_start"},
        {"event": "session_started", "timestamp": Decimal("100.75")},
    ]
    resource.Table(table).put_item(Item={"sender_id": "bob", "name": "bob", "events": events})

    loaded = await store.load_all("bob")
    assert loaded is not None and loaded[2] == {
        "event": "slot",
        "timestamp": 2.25,
        "name": "n",
        "value": 3,
    }
    assert [e["timestamp"] for e in await store.load("bob") or []] == [100.5, 100.75]
    assert await store.keys() == ["bob"]


# Stored events no store of ours or Rasa's writes: text that is not JSON, or not a JSON
# object, a value that is not a map (a number, a list, a null), and a map holding a value
# JSON has no counterpart for (another program's string set or binary).
_BROKEN_EVENTS = {
    "text not JSON": {"S": "{oops"},
    "text not an object": {"S": "[1]"},
    "a number": {"N": "5"},
    "a list": {"L": [{"S": "action"}]},
    "a null": {"NULL": True},
    "a string set in it": {"M": {"event": {"S": "user"}, "tags": {"SS": ["a", "b"]}}},
    "binary in it": {"M": {"event": {"S": "user"}, "raw": {"L": [{"B": b"\x00"}]}}},
}


@pytest.mark.parametrize("event", _BROKEN_EVENTS.values(), ids=_BROKEN_EVENTS.keys())
async def test_an_event_kept_as_text_that_is_not_json_names_its_conversation(
    event: dict[str, Any],
    store: DynamoTrackerStore,
    endpoint: str,
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An event kept as JSON text (one DynamoDB cannot hold as a map) that is not JSON, or
    an event that is no map at all: its loads are CorruptConversation (a 500, logged without
    a traceback) naming it, and the prune keeps it with a warning and deletes the other old
    ones. Before: a JSONDecodeError (a 500 with a traceback) that also stopped the prune;
    until review73, for an event that is no map, a TypeError likewise; until review123, for
    a string set or binary in an event, a StoreFailed naming no conversation that stopped
    the prune (and `botserver export --skip-unreadable`)."""
    await store.ping()
    raw = raw_client(endpoint)
    old = {"M": {"event": {"S": "action"}, "timestamp": {"N": "1.0"}}}
    broken = {"L": [old, event]}
    raw.put_item(TableName=table, Item={"sender_id": {"S": "bob"}, "events": broken})
    await store.append("ann", [user("hi", 1.0)])
    for load in (store.load, store.load_all):
        named = "Conversation 'bob' .* (not JSON|not a JSON ob|no JSON)"
        with pytest.raises(CorruptConversation, match=named):
            await load("bob")
    with caplog.at_level(logging.WARNING):
        assert await store.delete_older_than(time.time()) == 1
    assert await store.keys() == ["bob"]
    assert any("'bob'" in r.getMessage() for r in caplog.records)
    kept = raw.get_item(TableName=table, Key={"sender_id": {"S": "bob"}})["Item"]["events"]
    assert kept == broken


@pytest.mark.parametrize("stamp", [{"S": "soon"}, {"M": {"at": {"N": "1"}}}], ids=["text", "map"])
async def test_prune_keeps_a_conversation_whose_timestamp_is_no_number(
    stamp: dict[str, Any],
    store: DynamoTrackerStore,
    endpoint: str,
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An event whose timestamp is no number (its loads are CorruptConversation): the prune
    keeps the conversation with a warning naming it and deletes the other old ones. Before
    review73: a ValueError or TypeError with a traceback that stopped the prune."""
    await store.ping()
    raw = raw_client(endpoint)
    broken = {"L": [{"M": {"event": {"S": "action"}, "timestamp": stamp}}]}
    raw.put_item(TableName=table, Item={"sender_id": {"S": "bob"}, "events": broken})
    await store.append("ann", [user("hi", 1.0)])
    with caplog.at_level(logging.WARNING):
        assert await store.delete_older_than(time.time()) == 1
    assert await store.keys() == ["bob"]
    assert any("'bob'" in r.getMessage() and "timestamp" in r.getMessage() for r in caplog.records)


async def test_region_and_table_name_are_the_ones_configured(endpoint: str) -> None:
    """The table goes where Rasa's `region` and `table_name` put it; AWS_ENDPOINT_URL points
    at the server when endpoint_url is not set."""
    name = unique_name("bstest")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        store = create_tracker_store({"type": "DYNAMO", "table_name": name, "region": "eu-west-1"})
    try:
        await store.append("carol", [user("hi", 1.5)])
        assert name in raw_client(endpoint, "eu-west-1").list_tables()["TableNames"]
        assert name not in raw_client(endpoint, "us-east-1").list_tables()["TableNames"]
    finally:
        await store.close()
        client = raw_client(endpoint, "eu-west-1")
        client.delete_table(TableName=name)


def test_rasas_defaults_name_the_table_states_in_us_east_1(endpoint: str) -> None:
    store = create_tracker_store({"type": "dynamo", "endpoint_url": endpoint})
    assert isinstance(store, DynamoTrackerStore)
    assert (store.table, store.region) == ("states", "us-east-1")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"region": "us east"}, "region 'us east' is no AWS region name"),
        ({"region": 5}, "region '5' is no AWS region name"),
        ({"table_name": "my bot"}, "table_name 'my bot' is no DynamoDB table name"),
        ({"table_name": "ab"}, "table_name 'ab' is no DynamoDB table name"),
        ({"table_name": "x" * 256}, "table_name .x{256}. is no DynamoDB table name"),
    ],
    ids=["region-space", "region-number", "table-space", "table-short", "table-long"],
)
def test_a_region_or_table_name_dynamodb_refuses_is_named_at_start(
    endpoint: str, setting: dict[str, Any], message: str
) -> None:
    """Before, a bad region was blamed on endpoint_url ("endpoint_url 'http://...' is not
    usable: Provided region_name..."), and a table name DynamoDB refuses (AWS allows 3-255
    letters, digits, '_', '-', '.') was taken, each request then failing with a 500."""
    with pytest.raises(InvalidConfig, match=f"section 'tracker_store': {message}") as raised:
        create_tracker_store({"type": "dynamo", "endpoint_url": endpoint, **setting})
    assert "endpoint_url" not in str(raised.value)


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("AWS_PROFILE", "nope", "The config profile (nope) could not be found"),
        ("AWS_CONFIG_FILE", "broken", "Unable to parse config file"),
    ],
    ids=["profile-missing", "config-file-broken"],
)
def test_an_aws_profile_or_config_file_botocore_cannot_use_is_named_at_start(
    endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    setting: str,
    value: str,
    said: str,
) -> None:
    """Before, botocore's ProfileNotFound or ConfigParseError left `botserver run` (and
    prune, export) with a traceback, where S3 remote storage named the settings."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    (tmp_path / "broken-config").write_text("{not an ini file")
    monkeypatch.setenv(setting, str(tmp_path / "broken-config") if value == "broken" else value)

    with pytest.raises(InvalidConfig) as raised:
        create_tracker_store({"type": "dynamo", "endpoint_url": endpoint})

    message = str(raised.value)
    assert message.startswith("endpoints.yml, section 'tracker_store': ")
    assert said in message
    assert "check AWS_PROFILE, AWS_CONFIG_FILE" in message


def test_a_table_named_by_its_arn_is_taken(endpoint: str) -> None:
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/states"
    store = create_tracker_store({"type": "dynamo", "endpoint_url": endpoint, "table_name": arn})
    assert isinstance(store, DynamoTrackerStore) and store.table == arn


async def test_a_table_with_another_key_is_refused_with_what_to_do(
    endpoint: str, table: str
) -> None:
    raw_client(endpoint).create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "sender_id", "KeyType": "HASH"},
            {"AttributeName": "session_date", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "sender_id", "AttributeType": "S"},
            {"AttributeName": "session_date", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    store = create_tracker_store({"type": "dynamo", "table_name": table, "endpoint_url": endpoint})
    try:
        with pytest.raises(StoreFailed, match="partition key 'sender_id' .string., no sort key"):
            await store.load("dave")
    finally:
        await store.close()


async def test_a_conversation_past_400_kb_is_refused_and_keeps_what_it_had(
    store: DynamoTrackerStore,
) -> None:
    """DynamoDB holds at most 400 KB in an item, so in a conversation of Rasa's layout: the
    append that would pass it is refused with what to do, and nothing of it is stored."""
    kept = [user("hi", 1.5)]
    await store.append("erin", kept)
    big = [{"event": "bot", "timestamp": 2.5 + i, "text": "x" * 50_000} for i in range(9)]

    with pytest.raises(StoreRefusedData, match="grown past 400 KB") as refused:
        await store.append("erin", big)

    assert "an empty list deletes it" in str(refused.value)
    assert await store.load_all("erin") == kept
    with pytest.raises(StoreRefusedData, match="grown past 400 KB"):
        await store.replace("erin", big)
    assert await store.load_all("erin") == kept


def size_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "a DynamoDB item holds" in r.getMessage()]


def bot_texts(count: int, start: int = 0) -> list[dict[str, Any]]:
    """`count` bot events of 20 KB of text each."""
    return [{"event": "bot", "timestamp": start + i, "text": "x" * 20_000} for i in range(count)]


async def test_a_conversation_nearing_400_kb_is_warned_of_once_per_process(
    store: DynamoTrackerStore, endpoint: str, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, nothing told an operator until the append past the limit was refused (400)
    and the conversation took no more turns. Now one warning when it passes 300 KB (75 %),
    naming it and what to do, in each process that reads it."""
    caplog.set_level(logging.WARNING, logger="server.trackers.dynamo_store")
    await store.replace("ivy", bot_texts(14))  # 274 KB: no warning
    await store.replace("jay", bot_texts(16))  # 312 KB, and the replace's token
    for _ in range(2):
        assert await store.load("ivy") is not None
        assert await store.load("jay") is not None
    [line] = size_warnings(caplog)
    assert line == (
        "Conversation 'jay' takes about 313 KB of the 400 KB a DynamoDB item holds: past that "
        "its messages are refused (400). Replace its events with fewer (PUT "
        "/conversations/<id>/tracker/events) or use the sql or redis tracker store."
    )

    other = create_tracker_store({"type": "dynamo", "table_name": table, "endpoint_url": endpoint})
    try:
        await other.load("jay")
        await other.load("jay")
    finally:
        await other.close()
    assert size_warnings(caplog) == [line, line]


async def test_a_conversation_growing_turn_by_turn_is_warned_of_once(
    store: DynamoTrackerStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that knows the conversation counts what each append adds. The threshold is
    lowered to 150,000 bytes: moto refuses an append past about 200 KB (it counts the old
    list and the new one together; DynamoDB counts the item)."""
    monkeypatch.setattr(dynamo_store, "WARN_AT_BYTES", 150_000)
    caplog.set_level(logging.WARNING, logger="server.trackers.dynamo_store")
    for turn in range(10):  # a turn: a load, then an append of 20 KB
        await store.load("kim")
        await store.append("kim", bot_texts(1, start=turn))
    # Past 150,000 bytes with the 8th append; said at the next load (the item is then read
    # whole and measured: the lengths of the replies that read it only bound its size).
    [line] = size_warnings(caplog)
    assert line.startswith("Conversation 'kim' takes about 156 KB of the 400 KB "), line


async def test_an_append_botocore_sends_again_is_stored_once(store: DynamoTrackerStore) -> None:
    """A request whose reply was lost is sent again by botocore with the same token."""
    await store.ping()
    events = [user("hi", 1.5)]
    assert store._append("frank", events, "token-1", None)[0] is False  # nothing known before
    store._append("frank", events, "token-1", None)
    assert await store.load_all("frank") == events
    assert store._append("frank", events, "token-2", "token-1")[0] is True
    assert store._append("frank", events, "token-2", "token-1")[0] is False
    assert await store.load_all("frank") == events + events


@pytest.mark.timing
async def test_an_unreachable_endpoint_is_unavailable_at_once(endpoint: str) -> None:
    """Nothing listens at the endpoint: 503 at once, naming the table and region."""
    store = create_tracker_store(
        {"type": "dynamo", "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    try:
        for attempt in (store.ping, lambda: store.append("a", [user("hi", 1.5)]), store.keys):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="DynamoDB table 'states' in us-east-1"):
                await attempt()
            assert time.monotonic() - started < paced(5, below=10)
    finally:
        await store.close()


@pytest.mark.timing
async def test_a_silent_endpoint_is_unavailable_after_its_socket_timeout(
    store: DynamoTrackerStore, endpoint: str, table: str
) -> None:
    """DynamoDB taking the connection and never answering: 503 within socket_timeout times
    botserver's two attempts, not botocore's default of five 60 s reads."""
    host, port = endpoint.removeprefix("http://").split(":")
    proxy = SilentProxy((host, int(port)))
    await proxy.restore()
    silent = create_tracker_store(
        {
            "type": "dynamo",
            "table_name": table,
            "endpoint_url": f"http://127.0.0.1:{proxy.port}",
            "socket_timeout": 1,
        }
    )
    try:
        await silent.append("gina", [user("hi", 1.5)])
        proxy.silent = True
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="is unavailable"):
            await silent.load("gina")
        assert time.monotonic() - started < 2 + paced(4, below=10)  # two 1 s timeouts
        proxy.silent = False
        assert await silent.load("gina") is not None  # and back once it answers
    finally:
        await silent.close()
        await proxy.cut()


async def test_no_credentials_is_a_clear_error(endpoint: str) -> None:
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        store = create_tracker_store({"type": "dynamo", "endpoint_url": endpoint})
        try:
            with pytest.raises(StoreFailed, match="has no AWS credentials.*AWS_ACCESS_KEY_ID"):
                await store.ping()
        finally:
            await store.close()


async def test_values_no_dynamodb_map_holds_load_back_exactly(store: DynamoTrackerStore) -> None:
    """A slot set to a map with an empty key (before: stored, then every load of the
    conversation failed), nested deeper than DynamoDB's 32 levels, or a number beyond its
    range: the event is kept as JSON text in the list."""
    deep: Any = 1
    for _ in range(40):
        deep = {"a": deep}
    odd = [
        {"event": "slot", "timestamp": 1.5, "name": "empty_key", "value": {"": 1, "b": [2.5]}},
        {"event": "slot", "timestamp": 2.5, "name": "deep", "value": deep},
        {"event": "slot", "timestamp": 3.5, "name": "tiny", "value": 1e-150},
        {"event": "slot", "timestamp": 4.0, "name": "plain", "value": {"x": 0.0, "y": 10**20}},
    ]
    await store.append("odd", odd)
    loaded = await store.load_all("odd")
    assert loaded == odd
    assert loaded is not None and type(loaded[3]["value"]["x"]) is float


async def test_a_known_conversation_is_read_again_only_when_another_writer_changed_it(
    store: DynamoTrackerStore, endpoint: str, table: str
) -> None:
    """A turn of a conversation this process served reads the item's append token alone;
    before, every load read and parsed the whole item (near 400 KB, 700 events: about 21 ms
    of CPU to parse). Another process's append, Rasa's put and a delete are all seen."""
    reads: list[str] = []
    store._client.meta.events.register(
        "provide-client-params.dynamodb.GetItem",
        lambda params, **_: reads.append(params["ProjectionExpression"]),
    )
    first = [user("hi", 1.5)]
    await store.append("hana", first)
    assert await store.load("hana") == first  # unknown: the whole item
    await store.append("hana", [user("again", 2.5)])
    reads.clear()
    assert await store.load("hana") == first + [user("again", 2.5)]
    assert reads == ["#append"]  # the token alone: the process knows the rest

    other = create_tracker_store({"type": "dynamo", "table_name": table, "endpoint_url": endpoint})
    try:
        await other.append("hana", [user("elsewhere", 3.5)])
    finally:
        await other.close()
    reads.clear()
    loaded = await store.load("hana")
    assert loaded is not None and [e["text"] for e in loaded] == ["hi", "again", "elsewhere"]
    assert reads == ["#append", "#events, #append, #rewrite"]

    rasa = boto3.resource("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
    rasa.Table(table).put_item(
        Item={"sender_id": "hana", "name": "hana", "events": [{"event": "restart"}]}
    )
    assert await store.load("hana") == [{"event": "restart"}]
    rasa.Table(table).delete_item(Key={"sender_id": "hana"})
    assert await store.load("hana") is None


async def test_another_store_reads_no_botocore_model_file_the_process_read_before(
    store: DynamoTrackerStore, endpoint: str, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, each store made a botocore session that read and parsed the DynamoDB model,
    the endpoint rules and the partitions again (about 0.1 s of CPU); now a process reads
    them once, and each store still asks with its own settings."""
    await store.append("ines", [user("hi", 1.5)])
    read = botocore_files_read(monkeypatch)

    other = create_tracker_store(
        {"type": "dynamo", "table_name": table, "endpoint_url": endpoint, "region": "eu-west-1"}
    )
    try:
        assert isinstance(other, DynamoTrackerStore)
        assert other._client.meta.region_name == "eu-west-1"
        assert await other.load("ines") is None  # another region, another table
        assert read == []
    finally:
        await other.close()
        client = raw_client(endpoint, "eu-west-1")
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=table)


def test_without_boto3_the_error_names_the_extra_that_installs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One wording with the remote storages' (server.errors.needs_extra).
    monkeypatch.setitem(sys.modules, "boto3", None)  # its import fails, as when not installed

    with pytest.raises(InvalidConfig) as caught:
        DynamoTrackerStore({"table_name": "states"})

    assert str(caught.value) == (
        "tracker_store type 'dynamo' needs boto3: pip install 'botserver[aws]'"
    )


async def test_a_turn_on_a_pruned_conversation_waits_for_a_few_deletes_not_a_whole_page(
    store: DynamoTrackerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`botserver prune` with the lock store (IdleLocks) took the locks of every old
    conversation of a Scan page (up to 1 MB: thousands of small ones) and deleted them one
    request at a time before it let any go: a turn on the first of them waited for every
    delete of the page (each a round trip), near the lock's 60 s wait on AWS. Now
    the locks are held DELETE_HELD at a time, as SQL and Redis prune 500 rows at a time.
    (Held 10 at a time here, of 60: a page's worth of conversations costs 3 s of CPU in the
    emulated DynamoDB.)"""
    from server.trackers.memory_lock import InMemoryLockStore
    from server.trackers.retention import delete_conversations_older_than

    monkeypatch.setattr(dynamo_store, "DELETE_HELD", 10)
    for c in range(60):
        await store.append(f"c{c:03}", [user("hi", 1.0)])
    locks = InMemoryLockStore()
    loop = asyncio.get_running_loop()
    deletes: list[str] = []
    waited: list[int] = []  # the deletes made when the turn got its lock
    turn: list[asyncio.Task[None]] = []

    async def a_turn(sender_id: str) -> None:
        async with locks.lock(sender_id):
            waited.append(len(deletes))

    def deleting(params: dict[str, Any], **_: Any) -> None:
        deletes.append(params["Key"]["sender_id"]["S"])
        if len(deletes) == 1:  # its lock held by the prune: a turn comes
            loop.call_soon_threadsafe(lambda: turn.append(loop.create_task(a_turn(deletes[0]))))

    store._client.meta.events.register("provide-client-params.dynamodb.DeleteItem", deleting)
    pruned = await delete_conversations_older_than(store, 60, locks)
    await asyncio.gather(*turn)
    assert pruned.deleted == 60
    # (+ 1: the next hold's first delete may set out, in its thread, as the turn is let in.)
    assert len(waited) == 1 and waited[0] <= dynamo_store.DELETE_HELD + 1 < 60, waited


@pytest.mark.parametrize("events", [{"S": "[]"}, {"M": {"0": {"S": "x"}}}], ids=["text", "map"])
async def test_an_item_whose_events_are_no_list_is_named_unreadable(
    events: dict[str, Any],
    store: DynamoTrackerStore,
    endpoint: str,
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another program's item in the table, its `events` no list (Rasa's layout holds a
    list): before review123 it read as no conversation at all, so `botserver export` left it
    out saying nothing (exit 0, where --skip-unreadable names what it passes over), and a
    turn on it found an empty tracker, then a 400 on its first message. Now it is
    CorruptConversation naming it, as a Redis key that is no list is; the prune keeps it."""
    from server.brokers.export import Found, selected_events

    await store.ping()
    raw = raw_client(endpoint)
    raw.put_item(TableName=table, Item={"sender_id": {"S": "bob"}, "events": events})
    await store.append("ann", [user("hi", 1.0)])
    for load in (store.load, store.load_all):
        with pytest.raises(CorruptConversation, match="Conversation 'bob' .* not a list"):
            await load("bob")
    found = Found()
    sent = [
        item.sender_id async for item in selected_events(store, found=found, skip_unreadable=True)
    ]
    assert (sent, found.unreadable) == (["ann"], ["bob"])
    with caplog.at_level(logging.WARNING):
        assert await store.delete_older_than(time.time()) == 1
    assert await store.keys() == ["bob"]
    assert any("'bob'" in r.getMessage() for r in caplog.records)


async def test_a_prune_stopped_as_a_delete_goes_out_counts_that_delete(
    store: DynamoTrackerStore, endpoint: str, table: str
) -> None:
    """SIGTERM or Ctrl-C as the prune's second delete is in flight: the delete, in its
    thread, still goes through, and `botserver prune` says so in its `after deleting N`.
    Before, the stop ended the wait for it uncounted: one fewer than were gone."""
    import threading

    for sender_id in ("c1", "c2", "c3"):
        await store.append(sender_id, [user("hi", 1.0)])
    loop = asyncio.get_running_loop()
    deletes: list[str] = []
    counted: list[int] = []
    prune = asyncio.ensure_future(store.delete_older_than(60, None, counted.append))

    def deleting(params: dict[str, Any], **_: Any) -> None:
        deletes.append(params["Key"]["sender_id"]["S"])
        if len(deletes) == 2:  # stopped as it goes out
            stopped = threading.Event()

            def stop() -> None:
                prune.cancel()
                stopped.set()

            loop.call_soon_threadsafe(stop)
            stopped.wait(30)

    store._client.meta.events.register("provide-client-params.dynamodb.DeleteItem", deleting)
    with pytest.raises(asyncio.CancelledError):
        await prune
    left = [s for s in ("c1", "c2", "c3") if await store.load(s)]
    assert len(left) == 1, (left, deletes)
    assert sum(counted) == 2, (counted, deletes)


async def test_a_heavy_conversation_weighs_its_kib_and_is_not_kept_over_the_bound(
    endpoint: str, table: str
) -> None:
    """A conversation weighs its item's KiB (when more than its events): one of ~200 KB
    outweighs `cache_events: 60` alone, so it and the conversation used less recently go,
    and it is read whole at each load."""
    config = {"type": "dynamo", "table_name": table, "endpoint_url": endpoint}
    store = create_tracker_store({**config, "cache_events": 60})
    assert isinstance(store, DynamoTrackerStore)
    try:
        await store.append("light", [user("hi", 1.0)])
        assert await store.load("light") == [user("hi", 1.0)]
        assert "light" in store._known
        heavy = user("big", 2.0) | {"metadata": {"blob": "x" * 200_000}}
        await store.append("heavy", [heavy])
        assert await store.load("heavy") == [heavy]

        assert "light" not in store._known and "heavy" not in store._known
        assert store._known.weight == 0
        assert await store.load("light") == [user("hi", 1.0)]
        assert await store.load("heavy") == [heavy]
    finally:
        await store.close()


async def test_a_conversation_let_go_of_near_the_item_limit_leaves_the_cache_weight_right(
    store: DynamoTrackerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append that takes a conversation near the item limit lets it go (read whole and
    measured at its next load): the cache's weight is then what the conversations it keeps
    weigh, not less by that append's events (which let later ones be kept over the bound)."""
    monkeypatch.setattr(dynamo_store, "WARN_AT_BYTES", 150_000)
    for turn in range(10):
        await store.load("kim")
        await store.append("kim", bot_texts(1, start=turn))
        kept = list(store._known._entries.values())
        assert store._known.weight == sum(len(k.events) + k.extra for k in kept), turn
