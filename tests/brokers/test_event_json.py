"""The brokers' event JSON is `json.dumps`'s, byte for byte: consumers get the bodies Rasa
sends, and message ids (hashes of the canonical text) stay those earlier releases and other
processes give the same events."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from server.brokers.event_json import canonical_text, rasa_text

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
