"""The file event broker writes Rasa's event log: one JSON line per event."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from server.brokers.factory import create_event_broker


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


async def test_the_default_path_is_rasas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    broker = create_event_broker({"type": "file"})
    assert broker is not None
    await broker.publish("alice", [{"event": "pause", "timestamp": 1.0}])
    await broker.close()
    assert os.listdir(tmp_path) == ["rasa_event.log"]
