"""A conversation's message ids and links do not depend on how its events were split into
requests: each publish (`chain_ids` with `same_time_run`'s `before`) gives every event the id
and the link `botserver export` computes over the whole conversation at once."""

from __future__ import annotations

import cProfile
import pstats
from pathlib import Path
from typing import Any

import pytest

from server.brokers import ordering
from server.brokers.export import select_events
from server.brokers.ordering import chain_ids, same_time_run
from server.trackers.events import event_from_dict
from server.trackers.factory import create_tracker_store

A = {"event": "bot", "text": "a", "timestamp": 5}
B = {"event": "bot", "text": "b", "timestamp": 5}
LATER = {"event": "action", "name": "action_listen", "timestamp": 6.5}
# Runs of one timestamp with repeats, a run broken and taken up again, int and float stamps.
CONVERSATION = [A, A, B, A, LATER, LATER, {**A, "timestamp": 5.0}, A, A, LATER, B]


def published(dicts: list[dict[str, Any]], splits: list[int]) -> list[tuple[str, str | None]]:
    """The ids and links of the events as published request by request, cut at `splits`."""
    events = [event_from_dict(d) for d in dicts]
    ids: list[tuple[str, str | None]] = []
    for start, stop in zip([0, *splits], [*splits, len(events)], strict=True):
        previous = events[start - 1].as_dict() if start else None
        before = [e.as_dict() for e in same_time_run(events, start)]
        ids += chain_ids("ana", [e.as_dict() for e in events[start:stop]], previous, before)
    return ids


@pytest.mark.parametrize("cut", range(1, len(CONVERSATION)))
def test_ids_and_links_do_not_depend_on_where_the_requests_were_cut(cut: int) -> None:
    whole = chain_ids("ana", [event_from_dict(d).as_dict() for d in CONVERSATION], None)

    assert published(CONVERSATION, [cut]) == whole
    assert published(CONVERSATION, list(range(1, len(CONVERSATION)))) == whole
    assert len({message_id for message_id, _ in whole[:6]}) == 6  # each of a run its own


def test_a_turn_after_a_long_run_hashes_only_the_twins_of_the_event_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A turn after an import of 100,000 events of one second: its link needs the id of the
    import's last event, which hashes its twins in the run, not the whole run."""
    run = [{"event": "bot", "text": f"line {n}", "timestamp": 5} for n in range(100_000)]
    run[10] = run[-1]
    hashed: list[str] = []
    original = ordering.canonical_text

    def counted(body: dict[str, Any]) -> str:
        hashed.append(body["sender_id"])
        return original(body)

    monkeypatch.setattr(ordering, "canonical_text", counted)

    turn = chain_ids("ana", [LATER], run[-1], run)

    assert len(hashed) < 10
    monkeypatch.undo()
    assert turn == chain_ids("ana", [*run, LATER], None)[-1:]


async def test_an_export_from_a_minimum_timestamp_gives_the_ids_a_whole_export_gives(
    tmp_path: Path,
) -> None:
    """The events an export leaves out still break the runs around them: each event exported
    has the id the live broker published it with (a run is never cut: one timestamp)."""
    events = [{"event": "bot", "text": "a", "timestamp": stamp} for stamp in (5, 5, 4, 5, 5)]
    store = create_tracker_store({"type": "sql", "db": str(tmp_path / "trackers.db")})
    try:
        await store.append("ana", events)
        whole = {m.message_id: m.event for m in (await select_events(store)).messages}
        later = (await select_events(store, minimum_timestamp=5)).messages
    finally:
        await store.close()

    assert len(whole) == 3  # the runs of 5 apart share their ids (docs/persistence.md)
    assert [m.event["timestamp"] for m in later] == [5, 5, 5, 5]
    assert {m.message_id for m in later} <= whole.keys()


def test_an_events_message_id_costs_a_few_python_calls() -> None:
    """Counted (cProfile's calls, builtins included): `json.dumps` with arguments made a
    JSONEncoder and its C encoder at each call, 11 calls an id; now 6."""
    event = {"event": "user", "timestamp": 5.0, "text": "hi", "parse_data": {"entities": []}}
    profile = cProfile.Profile()
    profile.enable()
    for number in range(100):
        ordering.event_message_id(f"user{number}", event)
    profile.disable()

    calls = pstats.Stats(profile).total_calls / 100  # type: ignore[attr-defined]
    assert calls < 9, calls
