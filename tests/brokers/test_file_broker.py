"""The file event broker writes Rasa's event log: one JSON line per event."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest

from server.brokers.delivery import Outgoing
from server.brokers.factory import create_event_broker
from server.brokers.file import FileEventBroker
from server.errors import InvalidConfig


async def test_each_event_is_a_json_line_as_rasas_file_broker_writes_it(tmp_path: Path) -> None:
    # Before, `type: file` stopped `botserver run` with "not supported".
    path = tmp_path / "events.log"
    broker = create_event_broker({"type": "file", "path": str(path)})
    assert broker is not None
    await broker.publish("alice", [{"event": "bot", "timestamp": 1.0, "text": "hé"}])
    await broker.publish("bob", [{"event": "restart", "timestamp": 2.0}])
    await broker.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"sender_id": "alice", "event": "bot", "timestamp": 1.0, "text": "hé"},
        {"sender_id": "bob", "event": "restart", "timestamp": 2.0},
    ]
    assert lines[0].startswith('{"sender_id": "alice"')


async def test_a_publish_returns_once_the_events_are_written(tmp_path: Path) -> None:
    """What a turn's answer waits for with `wait_for_delivery: true`: without it, the lines
    are still in memory when `publish` returns, lost to a process killed then."""
    path = tmp_path / "events.log"
    broker = create_event_broker({"type": "file", "path": str(path), "wait_for_delivery": True})
    assert broker is not None
    try:
        await broker.publish("alice", [{"event": "restart", "timestamp": 2.0}])
        assert path.read_text().count("\n") == 1
    finally:
        await broker.close()


async def test_the_default_path_is_rasas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    broker = create_event_broker({"type": "file"})
    assert broker is not None
    await broker.publish("alice", [{"event": "pause", "timestamp": 1.0}])
    await broker.close()
    assert os.listdir(tmp_path) == ["rasa_event.log"]


@pytest.mark.parametrize("where", ["no-such-dir/events.log", "a-directory"])
def test_a_path_that_cannot_be_appended_to_stops_the_start(tmp_path: Path, where: str) -> None:
    """As Rasa's broker, which opens its file when it is made, the start stops, here with an
    error naming the section and the path. Before, `botserver run` started, each event's
    write failed and was retried, and the events piled up in memory, lost at the stop."""
    (tmp_path / "a-directory").mkdir()
    path = tmp_path / where
    with pytest.raises(InvalidConfig) as refused:
        create_event_broker({"type": "file", "path": str(path)})
    assert "section 'event_broker'" in str(refused.value) and str(path) in str(refused.value)


def test_the_file_is_made_at_the_start_as_rasas(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    assert create_event_broker({"type": "file", "path": str(path)}) is not None
    assert path.exists() and path.read_text() == ""


async def test_a_log_moved_away_is_made_again_at_its_path(tmp_path: Path) -> None:
    """logrotate's default (`create`, no `copytruncate`, no signal): the events after the
    move go to a new file at the path, not on into the moved one, which Rasa's broker, holding
    its file open, writes to until it restarts."""
    path = tmp_path / "events.log"
    broker = FileEventBroker({"type": "file", "path": str(path)})
    await broker.publish("alice", [{"event": "pause", "timestamp": 1.0}])
    assert await broker.flush(timeout=10)
    path.rename(tmp_path / "events.log.1")
    await broker.publish("alice", [{"event": "resume", "timestamp": 2.0}])
    await broker.close()

    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == ["resume"]
    assert "resume" not in (tmp_path / "events.log.1").read_text()


@pytest.mark.parametrize(
    ("kind", "key", "said"),
    [
        ("file", "pth", "did you mean 'path'?"),
        ("sql", "dilect", "did you mean 'dialect'?"),
        ("sql", "tabel_name", "did you mean 'table_name'?"),
    ],
)
async def test_a_misspelt_file_or_sql_event_broker_key_is_named_at_start(
    kind: str, key: str, said: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa's file and SQL brokers stop the start on a key they do not take; botserver
    dropped it without a word (a misspelt `path` wrote the events to `rasa_event.log`, a
    misspelt `dialect` to a SQLite file). The start now names it, as for RabbitMQ."""
    where = {"path": str(tmp_path / "e.log")} if kind == "file" else {"db": str(tmp_path / "e.db")}
    broker = create_event_broker({"type": kind, **where, key: "x"})
    assert broker is not None
    await broker.close()
    (line,) = [r.getMessage() for r in caplog.records if f"'{key}'" in r.getMessage()]
    assert line.startswith(f"endpoints.yml: event_broker: unknown setting '{key}' is not read")
    assert said in line


async def test_events_dropped_for_room_while_being_written_take_no_later_event_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue is full (`max_pending`) while its oldest events are being written: they are
    the ones dropped for room. Before, the end of their write then popped as many later
    events from the queue, never written, with no word of them."""
    path = tmp_path / "events.log"
    broker = create_event_broker({"type": "file", "path": str(path)})
    assert isinstance(broker, FileEventBroker)
    broker._delivery._max_pending = 10
    writing, go_on = threading.Event(), threading.Event()
    write = broker._append_batch

    def slow_write(batch: list[Outgoing]) -> None:
        writing.set()
        go_on.wait(10)
        write(batch)

    monkeypatch.setattr(broker, "_append_batch", slow_write)
    said = [{"event": "user", "timestamp": float(i), "text": str(i)} for i in range(15)]
    try:
        await broker.publish("alice", said[:5])
        assert await asyncio.to_thread(writing.wait, 10)
        await broker.publish("alice", said[5:])  # the 5 being written dropped for room
        go_on.set()
        assert await broker.flush(timeout=10)
    finally:
        go_on.set()
        await broker.close()
    written = [json.loads(line)["timestamp"] for line in path.read_text().splitlines()]
    assert written[-10:] == [float(i) for i in range(5, 15)], written
