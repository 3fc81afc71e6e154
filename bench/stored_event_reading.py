"""CPU time to read one stored event (`server.trackers.store.stored_events`, with SQL's and
Redis's JSON readers), for events as Rasa stores them, with the code on PYTHONPATH (run once
with the base's, once with the head's):

    PYTHONPATH=<checkout> python bench/stored_event_reading.py
"""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable
from typing import Any

from server.trackers.sql_store import _load_json
from server.trackers.store import stored_events

READERS: list[tuple[str, Callable[[Any], Any]]] = [("SQL", _load_json), ("Redis", json.loads)]
EVENTS_A_CALL = 100
CALLS = 200


def _user(intents: int) -> dict[str, Any]:
    ranking = [{"name": f"intent_{i}", "confidence": 0.5 / (i + 1)} for i in range(intents)]
    return {
        "event": "user",
        "timestamp": 1765126000.123456,
        "metadata": {"model_id": "0123456789abcdef0123456789abcdef"},
        "text": "I am feeling rather good today, thanks",
        "parse_data": {
            "intent": ranking[0],
            "entities": [],
            "text": "I am feeling rather good today, thanks",
            "message_id": "0123456789abcdef0123456789abcdef",
            "metadata": {},
            "intent_ranking": ranking,
        },
        "input_channel": "rest",
        "message_id": "0123456789abcdef0123456789abcdef",
    }


EVENTS = {
    "action (short)": {"event": "action", "timestamp": 1765126000.5, "name": "action_listen"},
    "user, 10 intents ranked": _user(10),
    "user, 40 intents ranked": _user(40),
}


def main() -> None:
    for name, event in EVENTS.items():
        texts = [json.dumps(event)] * EVENTS_A_CALL
        for reader_name, reader in READERS:

            def read(reader: Callable[[Any], Any] = reader, texts: list[str] = texts) -> None:
                stored_events("bench", texts, reader)

            best = min(timeit.repeat(read, number=CALLS, repeat=7, timer=time.process_time))
            each = best / (CALLS * EVENTS_A_CALL) * 1e6
            print(f"{name} ({len(texts[0])} bytes), {reader_name}: {each:.2f} us CPU an event")


if __name__ == "__main__":
    main()
