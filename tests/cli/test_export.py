"""`botserver export`: the tracker store's events published to the event broker, as Rasa's
`rasa export`, with the real SQL broker, SQLite tracker store and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from bench.tcp_proxy import free_port
from server.brokers.ordering import PREVIOUS_ID_HEADER, ConversationOrderer
from server.trackers.factory import create_tracker_store
from tests.brokers.test_rabbitmq_broker import AMQP_URL, consume
from tests.trackers.persistence_fixtures import (
    RABBITMQ,
    delete_dynamo_table,
    moto_credentials,
    moto_endpoint,
    require_service,
    unique_name,
)

TRACKERS = "trackers.db"


def _user(text: str, at: float) -> dict[str, Any]:
    return {
        "event": "user",
        "timestamp": at,
        "text": text,
        "parse_data": {"intent": {"name": "greet", "confidence": 1.0}, "entities": []},
        "metadata": {},
    }


def _action(name: str, at: float) -> dict[str, Any]:
    return {"event": "action", "name": name, "timestamp": at}


CONVERSATIONS = {
    "ana": [_user("hi", 10.0), _action("utter_greet", 12.0), _user("bye", 14.0)],
    "bob": [_user("hello", 11.0), _action("utter_greet", 13.0)],
    "carl": [_action("action_listen", 20.0)],
}


def _in_order(conversations: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The order `rasa export` publishes in: conversation after conversation (by id, here),
    each one's events by timestamp."""
    bodies = [{"sender_id": s, **e} for s, events in conversations.items() for e in events]
    return sorted(bodies, key=lambda body: (body["sender_id"], body["timestamp"]))


def _seed(project: Path, conversations: dict[str, list[dict[str, Any]]]) -> None:
    async def seed() -> None:
        store = create_tracker_store(
            {"type": "sql", "dialect": "sqlite", "db": str(project / TRACKERS)}
        )
        for sender_id, events in conversations.items():
            await store.append(sender_id, events)
        await store.close()

    asyncio.run(seed())


def _endpoints(project: Path, broker: str) -> None:
    (project / "endpoints.yml").write_text(
        f"tracker_store:\n  type: sql\n  dialect: sqlite\n  db: {TRACKERS}\n{broker}"
    )


SQL_BROKER = "event_broker:\n  type: sql\n  dialect: sqlite\n  db: events.db\n"


def _broker_rows(project: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(project / "events.db") as db:
        rows = db.execute("SELECT sender_id, data FROM events ORDER BY id").fetchall()
    bodies = [json.loads(data) for _, data in rows]
    assert [sender for sender, _ in rows] == [body["sender_id"] for body in bodies]
    return bodies


@pytest.fixture
def project(tmp_path: Path) -> Path:
    _seed(tmp_path, CONVERSATIONS)
    _endpoints(tmp_path, SQL_BROKER)
    return tmp_path


def test_every_stored_event_is_published_conversation_after_conversation(
    run_cli, project: Path
) -> None:
    """Before, `botserver export` was "invalid choice: 'export'" (exit 2); then it sorted
    every event of the store by timestamp, which held them all in memory until the end."""
    result = run_cli("export", cwd=project)
    assert result.code == 0, result.err
    assert "Published 6 events of 3 conversations." in result.out
    assert _broker_rows(project) == _in_order(CONVERSATIONS)


def test_time_range_and_conversation_ids_choose_the_events(run_cli, project: Path) -> None:
    result = run_cli(
        "export",
        "--minimum-timestamp", "12",  # inclusive
        "--maximum-timestamp", "14",  # exclusive
        "--conversation-ids", "ana,zed",
        cwd=project,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "Not in the tracker store: conversations zed" in result.err
    assert _broker_rows(project) == [{"sender_id": "ana", **_action("utter_greet", 12.0)}]


def test_a_conversation_id_the_terminal_could_not_decode_is_named_missing(project: Path) -> None:
    """Bytes that are no text in the locale's encoding (`café` typed in a Latin-1 terminal)
    reach Python as lone surrogates, which no store can hold: the id is named missing and
    the others are exported. Before (with the ids read one by one), the SQLite store's
    UnicodeEncodeError was a traceback, and nothing was exported. A subprocess: the bytes
    go through the command line as a shell passes them."""
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        # (os.fsdecode: the bytes go to the process as they are)
        [sys.executable, str(repo / "cli.py"), "export", "--conversation-ids"]
        + [os.fsdecode(b"ana,caf\xe9")],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(repo), "LC_ALL": "C.UTF-8"},
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-800:]
    assert "Not in the tracker store: conversations caf\\udce9" in result.stderr
    assert "Traceback" not in result.stderr
    assert [row["sender_id"] for row in _broker_rows(project)] == ["ana"] * 3


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        ("no-file", [], "error: --endpoints endpoints.yml: no such file"),
        ("", [], "error: endpoints.yml: no tracker_store section"),
        ("no-broker", [], "error: endpoints.yml: no event_broker section"),
        ("yaml", [], "error: endpoints.yml:3: invalid YAML"),
        (
            SQL_BROKER,
            ["--minimum-timestamp", "14", "--maximum-timestamp", "12"],
            "error: --maximum-timestamp 12.0 is smaller than --minimum-timestamp 14.0",
        ),
        (
            SQL_BROKER,
            ["--minimum-timestamp", "100"],
            "error: no event of these conversations is within the requested time range",
        ),
        (
            SQL_BROKER,
            ["--conversation-ids", "zed,yan"],
            "error: none of the conversations of --conversation-ids is in the tracker store: "
            "yan, zed",
        ),
        ("empty-store", [], "error: the tracker store holds no conversation: nothing to export"),
        (
            SQL_BROKER,
            ["--minimum-timestamp", "12", "--maximum-timestamp", "12"],
            "error: --maximum-timestamp 12.0 is not above --minimum-timestamp 12.0: no time is "
            "in that range (the maximum is left out)",
        ),
        (
            SQL_BROKER,
            ["--conversation-ids", " , "],
            "error: --conversation-ids ' , ' names no conversation (without the flag, every "
            "one is exported)",
        ),
    ],
    ids=[
        "no-endpoints",
        "no-tracker-store",
        "no-broker",
        "invalid-yaml",
        "max-below-min",
        "nothing-in-range",
        "unknown-ids",
        "empty-store",
        "empty-range",
        "no-ids",
    ],
)
def test_what_cannot_be_exported_is_one_error_line_and_exit_1(
    run_cli, project: Path, setup: str, argv: list[str], message: str
) -> None:
    endpoints = project / "endpoints.yml"
    if setup == "no-file":
        endpoints.unlink()
    elif setup == "no-broker":
        _endpoints(project, "")
    elif setup == "yaml":
        endpoints.write_text("tracker_store:\n  type: [sql\n")
    elif setup == "empty-store":
        (project / "empty.db").touch()  # (a database without a table yet)
        endpoints.write_text(endpoints.read_text().replace(TRACKERS, "empty.db"))
    elif setup == "":
        endpoints.write_text(SQL_BROKER)
    result = run_cli("export", *argv, cwd=project)
    assert result.code == 1
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err
    assert not (project / "events.db").exists()  # nothing published


def test_resume_from_skips_the_conversations_before_and_the_events_before(
    run_cli, project: Path
) -> None:
    """`--resume-from ID@TIMESTAMP`, as an interrupted export's error line gives it: the
    conversations before ID (by id) are done, and ID's events before TIMESTAMP."""
    result = run_cli("export", "--resume-from=bob@13", cwd=project)
    assert result.code == 0, result.err
    assert _broker_rows(project) == [
        {"sender_id": "bob", **_action("utter_greet", 13.0)},
        {"sender_id": "carl", **_action("action_listen", 20.0)},
    ]


def test_resume_from_skips_the_events_of_its_time_already_published(
    run_cli, tmp_path: Path
) -> None:
    """`#N` after the time: the first N events of that conversation with that time went out
    (a failure among events of one timestamp); the id holds an `@` of its own. Before, all
    of that time were published again."""
    _seed(tmp_path, {"a@b": [_action(f"utter_{i}", 5.0) for i in range(4)] + [_user("x", 6.0)]})
    _endpoints(tmp_path, SQL_BROKER)
    result = run_cli("export", "--resume-from=a@b@5.0#3", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "Published 2 events of 1 conversation." in result.out  # (was "conversations")
    assert _broker_rows(tmp_path) == [
        {"sender_id": "a@b", **_action("utter_3", 5.0)},
        {"sender_id": "a@b", **_user("x", 6.0)},
    ]


@pytest.mark.parametrize(
    "value", ["bob", "bob@", "bob@soon", "bob@nan", "bob@13#", "bob@13#two", "bob@13#-1"]
)
def test_a_resume_point_without_a_time_is_refused(run_cli, project: Path, value: str) -> None:
    result = run_cli("export", f"--resume-from={value}", cwd=project)
    assert result.code == 2
    assert (
        "argument --resume-from: must be a conversation id, '@' and a Unix time, then '#' and "
        "a count of its events done if some were (ana@1700000256.1, ana@1700000256.1#2), "
        f"not '{value}'"
    ) in result.err
    assert not (project / "events.db").exists()


def test_an_export_stopped_by_hand_ends_with_how_to_go_on(
    run_cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after some events went out: the line says how many, and the command that
    publishes the rest. Before, exit 130 without a word."""
    from server.brokers import export

    async def stopped_by_hand(broker: Any, selected: Any, progress: Any) -> int:
        progress.published = 3
        progress.resume = export.ResumePoint("bob", 11.0)
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "publish_events", stopped_by_hand)
    result = run_cli("export", "--minimum-timestamp", "5", "--log-file", "out.log", cwd=project)
    assert result.code == 130
    said = (
        "stopped (after 3 events); to go on from there: botserver export --endpoints "
        "endpoints.yml --minimum-timestamp 5.0 --resume-from=bob@11.0"
    )
    assert result.err.strip().splitlines()[-1] == f"error: {said}"
    assert result.err.count(said) == 1
    # The log file ends with it too; before, with the lines before it.
    last = (project / "out.log").read_text(encoding="utf-8").splitlines()[-1:]
    assert last and last[0].endswith(f"ERROR   botserver - {said}"), last


def test_an_export_stopped_by_sigterm_ends_with_how_to_go_on(
    run_cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (`kill`, a Kubernetes Job's deadline) after some events went out: as Ctrl-C,
    the line says how many and how to go on; exit 143. Before, the process ended at once
    without a word (here: the test's own handler, reached)."""
    import asyncio
    import os
    import signal

    from server.brokers import export

    async def stopped_by_sigterm(broker: Any, selected: Any, progress: Any) -> int:
        progress.published = 3
        progress.resume = export.ResumePoint("bob", 11.0)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(60)
        raise AssertionError("SIGTERM did not stop the export")

    def reached(signum: int, frame: Any) -> None:
        raise AssertionError("SIGTERM reached the process: the export did not handle it")

    monkeypatch.setattr(export, "publish_events", stopped_by_sigterm)
    previous = signal.signal(signal.SIGTERM, reached)
    try:
        result = run_cli("export", "--minimum-timestamp", "5", cwd=project)
        assert signal.getsignal(signal.SIGTERM) is reached  # (given back after)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.code == 143
    assert result.err.strip().splitlines()[-1] == (
        "error: stopped by SIGTERM (after 3 events); to go on from there: botserver export "
        "--endpoints endpoints.yml --minimum-timestamp 5.0 --resume-from=bob@11.0"
    )


def test_a_timestamp_that_is_not_a_number_is_refused(run_cli, project: Path) -> None:
    result = run_cli("export", "--minimum-timestamp", "yesterday", cwd=project)
    assert result.code == 2
    assert "argument --minimum-timestamp: invalid number: 'yesterday'" in result.err


def test_offset_timestamps_shifts_what_is_published_not_what_is_stored(
    run_cli, project: Path
) -> None:
    """Rasa 3.6's `--offset-timestamps-by-seconds`: the time range is of the stored events,
    the broker gets each one moved by the offset. Before, exit 2 (`unrecognized arguments`)."""
    result = run_cli(
        "export", "--minimum-timestamp", "12", "--offset-timestamps-by-seconds", "-10",
        cwd=project,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "Event timestamps are offset by -10 s (0:00:10 earlier) in what is published" in (
        result.out
    )
    stored = [e for e in _in_order(CONVERSATIONS) if e["timestamp"] >= 12]
    assert _broker_rows(project) == [{**e, "timestamp": e["timestamp"] - 10} for e in stored]
    (project / "events.db").unlink()
    assert run_cli("export", cwd=project).code == 0
    assert _broker_rows(project) == _in_order(CONVERSATIONS)  # the store is unchanged


def test_an_offset_that_is_no_integer_is_refused_as_rasa(run_cli, project: Path) -> None:
    result = run_cli("export", "--offset-timestamps-by-seconds", "1.5", cwd=project)
    assert result.code == 2
    assert "argument --offset-timestamps-by-seconds: invalid int value: '1.5'" in result.err


@pytest.mark.parametrize("offset", ["99999999999999999999999", "-1000000000001"])
def test_an_offset_beyond_any_date_is_refused(run_cli, project: Path, offset: str) -> None:
    """Before, an OverflowError with a traceback (as in Rasa, whose start line fails the
    same way)."""
    result = run_cli("export", "--offset-timestamps-by-seconds", offset, cwd=project)
    assert result.code == 2
    assert (
        "argument --offset-timestamps-by-seconds: must be between -1000000000000 and "
        f"1000000000000 seconds (about 31,700 years), not {offset}"
    ) in result.err
    assert "Traceback" not in result.err
    assert not (project / "events.db").exists()


# -- RabbitMQ ---------------------------------------------------------------------------------
@pytest.fixture
def queue() -> Iterator[dict[str, str]]:
    require_service("RabbitMQ", RABBITMQ)
    names = {"queue": unique_name("bs_export_q"), "exchange": unique_name("bs_export_x")}
    yield names

    async def delete() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        channel = await connection.channel()
        await channel.queue_delete(names["queue"])
        await channel.exchange_delete(names["exchange"])
        await connection.close()

    asyncio.run(delete())


def _pika(names: dict[str, str], port: int = RABBITMQ[1]) -> str:
    return (
        f"event_broker:\n  type: pika\n  url: {RABBITMQ[0]}\n  port: {port}\n"
        f"  username: guest\n  password: guest\n  queues: [{names['queue']}]\n"
        f"  exchange_name: {names['exchange']}\n"
    )


def _received(names: dict[str, str], expected: int) -> list[dict[str, Any]]:
    messages = asyncio.run(consume(names["queue"], expected=expected))
    return [json.loads(message.body) for message in messages]


def test_rabbitmq_receives_the_events_in_order(
    run_cli, project: Path, queue: dict[str, str]
) -> None:
    _endpoints(project, _pika(queue))
    result = run_cli("export", cwd=project)
    assert result.code == 0, result.err
    assert "Published 6 events of 3 conversations." in result.out
    assert _received(queue, 6) == _in_order(CONVERSATIONS)


def test_each_export_marks_its_rabbitmq_messages_with_rasas_export_header(
    run_cli, project: Path, queue: dict[str, str]
) -> None:
    """Rasa's `rasa export` puts a `rasa-export-process-id` header (a uuid4 hex, one per
    run) on the messages it publishes through RabbitMQ, by which consumers (Rasa X's event
    service among them) tell a re-published history from live events. Before, botserver
    export sent none: such a consumer took every exported event for a live one."""
    _endpoints(project, _pika(queue))
    runs = []
    for _ in range(2):
        assert run_cli("export", cwd=project).code == 0
        runs.append(asyncio.run(consume(queue["queue"], expected=6)))

    marks = [{m.headers.get("rasa-export-process-id") for m in run} for run in runs]
    assert all(len(mark) == 1 for mark in marks)  # one id per run, on each message
    first, second = (mark.pop() for mark in marks)
    assert isinstance(first, str) and re.fullmatch("[0-9a-f]{32}", first)
    assert first != second
    # The message ids (and links) stay those the live broker gives the same events.
    assert [m.message_id for m in runs[0]] == [m.message_id for m in runs[1]]


def test_a_consumer_restoring_the_order_gets_an_export_from_a_minimum_timestamp_at_once(
    run_cli, project: Path, queue: dict[str, str]
) -> None:
    """The first exported event of each conversation names no predecessor: the events
    before --minimum-timestamp are not coming. Before, it named the stored event before
    it, so a consumer restoring the order with the previous-message header (our
    ConversationOrderer) held every conversation's events for a predecessor never sent."""
    _endpoints(project, _pika(queue))
    assert run_cli("export", "--minimum-timestamp", "12", cwd=project).code == 0
    messages = asyncio.run(consume(queue["queue"], expected=4))

    orderer: ConversationOrderer[dict[str, Any]] = ConversationOrderer()
    handed = []
    for message in messages:
        previous = (message.headers or {}).get(PREVIOUS_ID_HEADER)
        handed += orderer.add(message.message_id, previous, json.loads(message.body))
    assert orderer.waiting == 0
    assert handed == [e for e in _in_order(CONVERSATIONS) if e["timestamp"] >= 12]
    # Within the export, each conversation's events are still linked in their order.
    ana = [m for m in messages if json.loads(m.body)["sender_id"] == "ana"]
    assert ana[1].headers[PREVIOUS_ID_HEADER] == ana[0].message_id


def test_an_unreachable_rabbitmq_is_an_error_and_exit_1(
    run_cli, project: Path, queue: dict[str, str]
) -> None:
    _endpoints(project, _pika(queue, port=free_port()))
    result = run_cli("export", cwd=project)
    assert result.code == 1
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert errors and "the event broker failed (nothing published)" in errors[0]
    assert "Connect call failed" in errors[0]
    assert "Traceback" not in result.err


def test_a_rabbitmq_that_never_answers_is_named_as_such(
    run_cli, project: Path, queue: dict[str, str]
) -> None:
    """A host that takes the connection and says nothing (a hung broker, a firewall that
    lets the handshake through). Before, the error line ended with an empty reason: `the
    event broker failed (nothing published): `."""
    with socket.socket() as silent:  # the kernel takes connections; nothing answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        _endpoints(project, _pika(queue, port=silent.getsockname()[1]))
        result = run_cli("export", cwd=project)
    assert result.code == 1
    [error] = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert error == "error: the event broker failed (nothing published): TimeoutError (no answer)"


@pytest.mark.parametrize("offset", [None, 3600])
def test_a_broker_failing_midway_says_how_to_go_on(
    run_cli, tmp_path: Path, queue: dict[str, str], offset: int | None
) -> None:
    """RabbitMQ refuses messages past a queue's length limit; the export stops there and names
    the command that publishes the rest: of the conversation it stopped in, and of those it
    had not reached (Rasa's, a `--minimum-timestamp` of the last event published, skips the
    older events of the conversations it had not reached)."""
    events = [_action("action_listen", float(i)) for i in range(400)]
    _seed(tmp_path, {"ana": events[0::2], "bob": events[1::2], "carl": events[:50]})
    _endpoints(tmp_path, _pika(queue))

    async def limited_queue() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            queue["exchange"], aio_pika.ExchangeType.FANOUT, durable=True
        )
        limited = await channel.declare_queue(
            queue["queue"],
            durable=True,
            arguments={"x-max-length": 300, "x-overflow": "reject-publish"},
        )
        await limited.bind(exchange, routing_key="")
        await connection.close()

    asyncio.run(limited_queue())
    shift = ["--offset-timestamps-by-seconds", str(offset)] if offset is not None else []
    stopped = run_cli("export", *shift, cwd=tmp_path)
    assert stopped.code == 1
    [error] = [line for line in stopped.err.splitlines() if line.startswith("error:")]
    # Each event counted once RabbitMQ confirmed it and those before it: all 300 the queue
    # took (before, the 256 of a whole window, and the 44 after them were sent again).
    assert "the event broker failed (after 300 events)" in error
    resume = error.split("to go on from there: ")[1]
    # ana's 200 went out, and bob's first 100: bob's from the stored time of his 101st on.
    assert resume == " ".join(
        ["botserver export --endpoints endpoints.yml", *shift, "--resume-from=bob@201.0"]
    )
    first = _received(queue, 300)  # what the queue took, emptying it

    went_on = run_cli(*shlex.split(resume)[1:], cwd=tmp_path)
    assert went_on.code == 0, went_on.err
    assert "Published 150 events of 2 conversations." in went_on.out
    second = _received(queue, 150)
    moved = offset or 0
    assert [(b["sender_id"], b["timestamp"]) for b in second] == [
        ("bob", float(i + moved)) for i in range(201, 400, 2)
    ] + [("carl", float(i + moved)) for i in range(50)]
    assert len([(b["sender_id"], b["timestamp"]) for b in first + second]) == 450


def test_an_unreachable_tracker_store_is_an_error_and_exit_1(run_cli, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: sql\n  dialect: postgresql\n  url: 127.0.0.1\n  port: {port}\n"
        f"  db: nowhere\n{SQL_BROKER}"
    )
    result = run_cli("export", cwd=tmp_path)
    assert result.code == 1
    assert result.err.startswith(
        f"error: The tracker store (postgresql at 127.0.0.1:{port}/nowhere) is unavailable"
    )
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "events.db").exists()


def test_a_stored_topic_event_is_not_published(run_cli, tmp_path: Path) -> None:
    """A conversation of Rasa Core 0.x holds `topic` events, which Rasa 3.6 leaves out of the
    trackers it loads and so of `rasa export`. Before, the broker's consumers got them."""
    topic = {"event": "topic", "timestamp": 11.0, "topic": "greetings"}
    _seed(tmp_path, {"old": [_user("hi", 10.0), topic, _action("utter_greet", 12.0)]})
    _endpoints(tmp_path, SQL_BROKER)
    result = run_cli("export", cwd=tmp_path)
    assert result.code == 0, result.err
    assert [body["event"] for body in _broker_rows(tmp_path)] == ["user", "action"]


def _ann_with_last_event(project: Path, data: str) -> None:
    """Conversation 'ann' (a user message, then an action whose row holds `data` as it is)
    in the project's SQLite store, and the endpoints exporting it to an SQLite broker."""
    _seed(project, {"ann": [_user("hi", 10.0), _action("utter_greet", 12.0)]})
    with sqlite3.connect(project / TRACKERS) as db:
        db.execute("UPDATE events SET data = ? WHERE id = (SELECT MAX(id) FROM events)", (data,))
    _endpoints(project, SQL_BROKER)


@pytest.mark.parametrize("data", ["5", "[1, 2]", "null", "{oops"])
def test_a_stored_event_that_is_not_a_json_object_is_an_error_and_exit_1(
    data: str, run_cli, tmp_path: Path
) -> None:
    """A stored row whose data is JSON but no object (or no JSON): one error line naming the
    conversation, exit 1, nothing published. Before review73, JSON that is not an object was
    an AttributeError with a traceback."""
    _ann_with_last_event(tmp_path, data)
    result = run_cli("export", cwd=tmp_path)
    assert result.code == 1, result.err
    assert result.err.startswith("error: Conversation 'ann' holds a stored event that is not")
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert not (tmp_path / "events.db").exists() or not _broker_rows(tmp_path)


# -- DynamoDB ---------------------------------------------------------------------------------
@pytest.fixture
def dynamo_table() -> Iterator[tuple[str, str]]:
    """(endpoint, table name) of a table on moto's server (none is made here)."""
    pytest.importorskip("boto3")
    endpoint, table = moto_endpoint(), unique_name("bs_export")
    with moto_credentials():
        yield endpoint, table
    delete_dynamo_table(endpoint, table)


def _dynamo_tables(endpoint: str, region: str = "us-east-1") -> list[str]:
    import boto3

    client = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint)
    return client.list_tables()["TableNames"]


def _dynamo_endpoints(tmp_path: Path, endpoint: str, table: str, region: str) -> None:
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: dynamo\n  table_name: {table}\n  region: {region}\n"
        f"  endpoint_url: {endpoint}\n{SQL_BROKER}"
    )


def test_a_rasa_dynamodb_table_is_exported_in_order(
    run_cli, tmp_path: Path, dynamo_table: tuple[str, str]
) -> None:
    """Items as Rasa 3 puts them (the whole dialogue, floats as Decimal) go out as Rasa's
    export sends them."""
    import boto3

    endpoint, table = dynamo_table
    _dynamo_endpoints(tmp_path, endpoint, table, "us-east-1")
    store = create_tracker_store({"type": "dynamo", "table_name": table, "endpoint_url": endpoint})
    asyncio.run(store.ping())  # the table, made as botserver run makes it
    asyncio.run(store.close())
    resource = boto3.resource("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
    for sender_id, events in CONVERSATIONS.items():
        stored = json.loads(json.dumps(events), parse_float=Decimal)
        resource.Table(table).put_item(
            Item={"sender_id": sender_id, "name": sender_id, "events": stored}
        )
    result = run_cli("export", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "Published 6 events of 3 conversations." in result.out
    assert _broker_rows(tmp_path) == _in_order(CONVERSATIONS)


def test_a_dynamodb_item_without_events_is_skipped_by_name(
    run_cli, tmp_path: Path, dynamo_table: tuple[str, str]
) -> None:
    """An item holding no `events` attribute (another program's, or one whose events were
    removed by hand): before, it read as no conversation, so an export passed over it saying
    nothing and exited 0. Now it is an unreadable conversation, as an item whose events are
    no list: the export stops naming it, and `--skip-unreadable` names it, counts it and
    exits 3."""
    import boto3

    endpoint, table = dynamo_table
    _dynamo_endpoints(tmp_path, endpoint, table, "us-east-1")
    store = create_tracker_store({"type": "dynamo", "table_name": table, "endpoint_url": endpoint})
    asyncio.run(store.append("ann", [_action("action_listen", 1.0), _user("hi", 2.0)]))
    asyncio.run(store.close())
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
    client.put_item(TableName=table, Item={"sender_id": {"S": "bob"}, "name": {"S": "bob"}})

    stopped = run_cli("export", cwd=tmp_path)
    assert stopped.code == 1, stopped.err
    assert "Conversation 'bob' is an item without an `events` attribute" in stopped.err
    skipped = run_cli("export", "--skip-unreadable", cwd=tmp_path)
    assert skipped.code == 3, skipped.err
    assert (
        "Published 2 events of 1 conversation; skipped 1 conversation that could not be "
        "read: bob." in skipped.out
    ), skipped.out
    assert "Traceback" not in stopped.err + skipped.err


@pytest.mark.parametrize("command", [["export"], ["prune", "--older-than-days", "1"]])
def test_a_dynamodb_table_that_is_not_there_is_named_not_created(
    run_cli, tmp_path: Path, dynamo_table: tuple[str, str], command: list[str]
) -> None:
    """A table_name or region mistyped in the endpoints file: `botserver export` and
    `prune` say which table they found missing, and make none. Before, each created an
    empty table (in the user's AWS account, in that region) and found nothing in it."""
    endpoint, table = dynamo_table
    _dynamo_endpoints(tmp_path, endpoint, table, "eu-west-3")
    result = run_cli(*command, cwd=tmp_path)
    assert result.code == 1
    assert result.err.startswith(
        f"error: The tracker store's DynamoDB table '{table}' in eu-west-3 at {endpoint} "
        "does not exist: check table_name and region (botserver run creates it)"
    ), result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert table not in _dynamo_tables(endpoint, "eu-west-3")
    assert not (tmp_path / "events.db").exists()


@pytest.mark.parametrize("command", [["export"], ["prune", "--older-than-days", "1"]])
def test_a_sqlite_file_that_is_not_there_is_named_not_created(
    run_cli, project: Path, command: list[str]
) -> None:
    """A `db:` mistyped in the endpoints file: `botserver export` and `prune` name the file
    they did not find, and make none. Before, each created an empty database there (as
    Rasa's `rasa export` does), found nothing in it, and the next run found that empty file
    instead of an error."""
    endpoints = project / "endpoints.yml"
    endpoints.write_text(endpoints.read_text().replace(TRACKERS, "trakers.db"))
    result = run_cli(*command, cwd=project)
    assert result.code == 1
    assert result.err.startswith(
        "error: endpoints.yml, section 'tracker_store': SQLite database 'trakers.db' "
        f"({project / 'trakers.db'}) does not exist: check db (botserver run creates it)"
    ), result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert not (project / "trakers.db").exists()
    assert not (project / "events.db").exists()


@pytest.fixture
def redis_with_unreadable(tmp_path: Path) -> Iterator[str]:
    """A Redis tracker store of five conversations, two of which cannot be read: `bad1`
    holds Rasa's layout (one string) that is not JSON, `bad2` a list item that is not."""
    from redis.asyncio import Redis

    from tests.trackers.persistence_fixtures import REDIS, delete_redis_keys

    require_service("Redis", REDIS)
    prefix = unique_name("bsexport").replace("_", "")  # (letters and digits, as Rasa takes)
    config = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}

    async def seed() -> None:
        store = create_tracker_store(config)
        for sender_id in ("ana", "bob", "cid"):
            await store.append(sender_id, [_action("action_listen", 1.0), _user("hi", 2.0)])
        await store.close()
        client = Redis(host=REDIS[0], port=REDIS[1])
        await client.set(f"{prefix}:tracker:bad1", "{not json")
        await client.rpush(f"{prefix}:tracker:bad2", json.dumps(_user("x", 1.0)), "[1, 2")
        await client.aclose()

    asyncio.run(seed())
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: redis\n  url: {REDIS[0]}\n  port: {REDIS[1]}\n"
        f"  key_prefix: {prefix}\n{SQL_BROKER}"
    )
    yield prefix
    asyncio.run(delete_redis_keys(prefix, db=0))


def test_an_unreadable_conversation_can_be_skipped_named_and_counted(
    run_cli, tmp_path: Path, redis_with_unreadable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a conversation whose stored value is not JSON stopped every export at the same
    place, the command to go on included: there was no way past it but to delete it. Now the
    error says how (`--skip-unreadable`), which publishes the others, names and counts each
    one skipped, and exits 3 (not 0: the export has holes). Batches of two: an unreadable
    conversation in the middle of a batch does not lose the others of it."""
    from server.brokers import export

    monkeypatch.setattr(export, "EXPORT_BATCH", 2)
    monkeypatch.setattr(export, "PUBLISH_CHUNK", 1)
    stopped = run_cli("export", cwd=tmp_path)
    assert stopped.code == 1
    [error] = [line for line in stopped.err.splitlines() if line.startswith("error:")]
    assert "the tracker store failed (after 2 events): Conversation 'bad1'" in error
    resume, hint = error.split("to go on from there: ")[1].split(" (with ")
    # (After ana's last event, which went out: bad1 is next.)
    assert resume == "botserver export --endpoints endpoints.yml '--resume-from=ana@2.0#1'"
    assert hint == (
        "--skip-unreadable the export passes over such a conversation, naming it, and "
        "publishes the others)"
    )

    skipped = run_cli(*shlex.split(resume)[1:], "--skip-unreadable", cwd=tmp_path)
    assert skipped.code == 3, skipped.err
    assert (
        "Published 4 events of 2 conversations; skipped 2 conversations that could not be "
        "read: bad1, bad2." in skipped.out
    )
    warned = [line for line in skipped.err.splitlines() if "Skipped (it cannot be read)" in line]
    assert len(warned) == 2
    assert "'bad1'" in warned[0] and "'bad2'" in warned[1]
    published = [body["sender_id"] for body in _broker_rows(tmp_path)]
    assert published == ["ana", "ana", "bob", "bob", "cid", "cid"]
    assert "Traceback" not in stopped.err + skipped.err


def test_an_export_stopped_after_a_skip_names_what_it_skipped(
    run_cli, tmp_path: Path, redis_with_unreadable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tracker store fails at the third batch (`cid`), after `bad1` and `bad2` were
    skipped: the command to go on starts after `bob`, so the run that goes on neither reads
    nor names them (and exits 0). Before, the error line did not name them either: only
    warnings above said the export has holes."""
    from server.brokers import export
    from server.errors import StoreUnavailable
    from server.trackers.redis_store import RedisTrackerStore

    monkeypatch.setattr(export, "EXPORT_BATCH", 2)
    monkeypatch.setattr(export, "PUBLISH_CHUNK", 1)
    reads = RedisTrackerStore.load_all_of
    calls: list[int] = []

    def failing_third(self: Any, sender_ids: Any, max_bytes: int | None = None) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise StoreUnavailable("the tracker store is unavailable", "Redis", "gone")
        return reads(self, sender_ids, max_bytes)

    monkeypatch.setattr(RedisTrackerStore, "load_all_of", failing_third)
    stopped = run_cli("export", "--skip-unreadable", cwd=tmp_path)
    assert stopped.code == 1
    [error] = [line for line in stopped.err.splitlines() if line.startswith("error:")]
    assert (
        "(skipped 2 conversations that could not be read: bad1, bad2); to go on from there: "
        in error
    ), error
    assert error.endswith("--skip-unreadable '--resume-from=bob@2.0#1'"), error


def test_another_programs_key_under_the_prefix_can_be_skipped(
    run_cli, tmp_path: Path, redis_with_unreadable: str
) -> None:
    """A hash under the tracker prefix (another program's) is no conversation: before, it
    stopped every export, `--skip-unreadable` or not (`WRONGTYPE`, the store failing)."""
    from redis.asyncio import Redis

    from tests.trackers.persistence_fixtures import REDIS

    async def other() -> None:
        client = Redis(host=REDIS[0], port=REDIS[1])
        await client.hset(f"{redis_with_unreadable}:tracker:cache", "field", "value")
        await client.aclose()

    asyncio.run(other())
    skipped = run_cli("export", "--skip-unreadable", cwd=tmp_path)
    assert skipped.code == 3, skipped.err
    assert (
        "Published 6 events of 3 conversations; skipped 3 conversations that could not be "
        "read: bad1, bad2, cache." in skipped.out
    )
    warned = [line for line in skipped.err.splitlines() if "'cache'" in line]
    assert warned and "a Redis hash" in warned[0], skipped.err


@pytest.mark.parametrize("depth", [600, 936, 980])
def test_a_stored_event_nested_too_deeply_to_send_is_skipped_with_a_warning(
    depth: int, run_cli, tmp_path: Path
) -> None:
    """An event the store reads (Python's limit, about 1,000 levels) but nested more than 500
    levels deep: before, from some 936 levels, the message id's or the broker's encoder
    raised RecursionError (a traceback, or the broker's error and nothing published). Now
    the store leaves the event out with a warning naming its conversation and the event, and
    the rest goes out; one of 500 levels goes out."""
    deep = json.dumps({**_user("deep", 11.0), "metadata": {"x": "DEEP"}})
    _ann_with_last_event(tmp_path, deep.replace('"DEEP"', "[" * depth + "]" * depth))
    result = run_cli("export", cwd=tmp_path)
    assert "Traceback" not in result.err, result.err
    assert result.code == 0, result.err
    warning = (
        "Conversation 'ann' holds a stored event ('user' event, timestamp 11.0) nested more "
        "than 500 levels deep, more than this server serves; left out"
    )
    assert warning in result.err
    assert [body["event"] for body in _broker_rows(tmp_path)] == ["user"]


def test_a_stored_event_of_500_levels_is_exported(run_cli, tmp_path: Path) -> None:
    # (metadata's 498 lists, inside the metadata and the event: 500 levels)
    deep = {**_user("deep", 11.0), "metadata": {"x": "DEEP"}}
    text = json.dumps(deep).replace('"DEEP"', "[" * 498 + "]" * 498)
    _ann_with_last_event(tmp_path, text)
    result = run_cli("export", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "nested too deeply" not in result.err
    [_, sent] = _broker_rows(tmp_path)
    assert sent["metadata"] == json.loads(text)["metadata"]
