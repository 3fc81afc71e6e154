"""What a turn or a bulk append hands the event broker, saved or in doubt, and where it is made."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from server.dialogue import processor as processor_module
from server.dialogue.processor import Processor
from server.trackers.events import OFF_LOOP_EVENTS, ActionExecuted, Event
from server.trackers.tracker import Tracker


class _Repository:
    """Saves nothing; its save raises when told to (a connection cut after the commit)."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.store = object()

    async def save(self, tracker: Tracker, events: list[Event]) -> None:
        if self.fails:
            raise ConnectionError("the connection was cut")


class _Broker:
    def __init__(self) -> None:
        self.published: list[list[dict[str, Any]]] = []
        self.in_doubt: list[list[dict[str, Any]]] = []

    async def publish(self, sender_id: str, events: list[dict[str, Any]], *args: Any) -> None:
        self.published.append(events)

    def publish_in_doubt(self, sender_id: str, events: list[dict[str, Any]], *args: Any) -> None:
        self.in_doubt.append(events)


@pytest.fixture
def made_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events each call made into dicts on the loop's thread."""
    counts: list[int] = []
    as_dicts = processor_module._as_dicts

    def counted(events: list[Event]) -> list[dict[str, Any]]:
        if threading.current_thread() is threading.main_thread():
            counts.append(len(events))
        return as_dicts(events)

    monkeypatch.setattr(processor_module, "_as_dicts", counted)
    return counts


@pytest.mark.parametrize("fails", [False, True], ids=["saved", "in doubt"])
@pytest.mark.parametrize("events", [3, OFF_LOOP_EVENTS + 1, 20_000])
async def test_a_bulk_s_broker_dicts_are_made_off_the_loop_saved_or_in_doubt(
    made_on_the_loop: list[int], fails: bool, events: int
) -> None:
    """The dicts the broker gets for more than OFF_LOOP_EVENTS events are made in a thread,
    whether the save succeeded or raised (when the broker reads the store back to publish
    them if they were committed). Before, a save that raised had them made on the loop:
    100,000 events held it 65 ms. A turn's few are made on the loop (no thread hop)."""
    tracker = Tracker("bulk")
    tracker.update_many(ActionExecuted(action_name="action_listen") for _ in range(events))
    broker = _Broker()
    processor = Processor(_Repository(fails), lock_store=None, broker=broker)  # type: ignore[arg-type]
    model = SimpleNamespace(model_id="m1", assistant_id="a1")
    try:
        await processor.save(tracker, 0, model)  # type: ignore[arg-type]
    except ConnectionError:
        assert fails
    handed = broker.in_doubt if fails else broker.published
    assert [len(dicts) for dicts in handed] == [events]
    assert handed[0][-1] == tracker.events[-1].as_dict()  # model ids stamped
    assert handed[0][-1]["metadata"] == {"model_id": "m1", "assistant_id": "a1"}
    assert sum(made_on_the_loop) == (events if events <= OFF_LOOP_EVENTS else 0)
