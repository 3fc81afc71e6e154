"""The brokers' event JSON is `json.dumps`'s, byte for byte: consumers get the bodies Rasa
sends, and message ids (hashes of the canonical text) stay those earlier releases and other
processes give the same events."""

from __future__ import annotations

import cProfile
import datetime
import json
import pstats
from pathlib import Path
from typing import Any

import pytest

from server.brokers import sql
from server.brokers.delivery import Outgoing
from server.brokers.event_json import canonical_text, rasa_text
from server.brokers.file import FileEventBroker

EVENTS: list[Any] = [
    {"event": "user", "text": 'héllo 👋 \u2028 \x7f "quoted" \\', "timestamp": 1733580000.123},
    {"event": "slot", "name": "n", "value": [1e16, 1e-7, 0.1, -0.0, 2**70, -(2**64), True, None]},
    {"event": "slot", "name": "f", "value": [float("nan"), float("inf"), float("-inf")]},
    {"event": "bot", "data": {"z": {"b": [], "a": {}}, "é": "", "A": 1}, "metadata": {}},
    {"event": "user", "parse_data": {"entities": [{"start": 0, "end": 3, "value": "x"}]}},
    {"event": "slot", "value": {1: "an int key", "2": "a str key"}},
    [],
    "a text",
    3.5,
]


@pytest.mark.parametrize("event", EVENTS)
def test_the_texts_are_json_dumps_byte_for_byte(event: Any) -> None:
    assert rasa_text(event) == json.dumps(event)
    try:
        expected = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    except TypeError:  # keys of several types cannot be sorted: the same error
        with pytest.raises(TypeError):
            canonical_text(event)
    else:
        assert canonical_text(event) == expected


def test_a_value_json_has_no_type_for_is_its_text_in_the_id_and_refused_in_the_body() -> None:
    event = {"event": "slot", "value": datetime.date(2026, 12, 7)}

    assert canonical_text(event) == '{"event":"slot","value":"2026-12-07"}'
    with pytest.raises(TypeError):
        json.dumps(event)
    with pytest.raises(TypeError):
        rasa_text(event)


def test_the_sql_and_file_brokers_json_costs_a_few_python_calls(tmp_path: Path) -> None:
    """Counted (cProfile's calls, builtins included): `json.dumps` made its C encoder again
    for each event, 8 calls an event with its body; 4 now. The lines and rows are the same
    (`test_the_texts_are_json_dumps_byte_for_byte`)."""
    items = [Outgoing(f"u{number}", {"event": "user", "text": "hi"}) for number in range(100)]
    broker = FileEventBroker({"type": "file", "path": str(tmp_path / "events.log")})
    profile = cProfile.Profile()
    profile.enable()
    rows = [sql._row(item) for item in items]
    profile.disable()
    sql_calls = pstats.Stats(profile).total_calls / 100  # type: ignore[attr-defined]
    appended: list[str] = []
    broker._append = appended.append  # type: ignore[method-assign,assignment]
    profile = cProfile.Profile()
    profile.enable()
    broker._append_batch(items)
    profile.disable()
    file_calls = pstats.Stats(profile).total_calls / 100  # type: ignore[attr-defined]

    assert [row["data"] for row in rows] == [json.dumps(item.body()) for item in items]
    assert appended == ["".join(json.dumps(item.body()) + "\n" for item in items)]
    assert sql_calls < 6, sql_calls
    assert file_calls < 6, file_calls
