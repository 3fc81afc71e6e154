"""A conversation holds at most MAX_REMINDERS_PER_CONVERSATION pending reminders: a custom
action or a client posting reminders of ever new names cannot grow the server's memory
without bound. A reminder of a pending one's name replaces it, as in Rasa, and always may."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest

from server.dialogue import reminders
from server.dialogue.reminders import ReminderScheduler
from server.errors import InvalidConfig
from server.outages import RepeatsCounted
from server.trackers.events import (
    OFF_LOOP_EVENTS,
    ReminderCancelled,
    ReminderScheduled,
    event_from_dict,
)
from tests.dialogue.conversation_fixtures import BotModels, make_agent


def tomorrow() -> str:
    return (datetime.datetime.now() + datetime.timedelta(days=1)).isoformat()


def reminder(name: str) -> ReminderScheduled:
    return ReminderScheduled(intent="EXTERNAL_reminder", trigger_date_time=tomorrow(), name=name)


async def no_turn(*_: Any) -> None:
    """A reminder's turn that does nothing (its timer never runs out in these tests)."""


async def test_a_reminder_past_the_cap_is_refused_with_a_warning_and_a_replacement_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = ReminderScheduler(max_per_conversation=3)
    try:
        for i in range(5):
            scheduler.schedule("full", reminder(f"r{i}"), no_turn)
        assert scheduler.pending("full") == ["r0", "r1", "r2"]
        refused = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(refused) == 1  # the second refusal is counted, not logged again
        assert "reminder 'r3' of conversation full is not scheduled" in refused[0]
        assert "MAX_REMINDERS_PER_CONVERSATION" in refused[0]
        # One an action returned marked scheduled (copied from a stored event) is stored as
        # only recorded when refused: marked, another process read it as a replacement.
        copied = reminder("r5")
        copied.metadata[reminders.SCHEDULED] = True
        scheduler.schedule("full", copied, no_turn)
        assert not reminders.was_scheduled(copied)

        again = reminder("r1")
        scheduler.schedule("full", again, no_turn)  # replaces: the count stays 3
        assert scheduler.pending("full") == ["r0", "r2", "r1"]
        assert reminders.was_scheduled(again)

        scheduler.schedule("other", reminder("r3"), no_turn)  # a cap per conversation
        assert scheduler.pending("other") == ["r3"]

        scheduler.cancel("full", ReminderCancelled(name="r0"))
        scheduler.schedule("full", reminder("r4"), no_turn)
        assert scheduler.pending("full") == ["r2", "r1", "r4"]
    finally:
        scheduler.cancel_all()


def test_the_cap_is_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(reminders.MAX_REMINDERS_ENV, "7")
    assert ReminderScheduler().max_per_conversation == 7
    for wrong in ("0", "-1", "many", "2.5"):
        monkeypatch.setenv(reminders.MAX_REMINDERS_ENV, wrong)
        with pytest.raises(InvalidConfig, match="MAX_REMINDERS_PER_CONVERSATION"):
            ReminderScheduler()


@pytest.mark.parametrize("count", [OFF_LOOP_EVENTS, OFF_LOOP_EVENTS + 1])
async def test_reminders_posted_of_ever_new_names_stop_at_the_cap(
    bot_models: BotModels,
    count: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST .../tracker/events with execute_side_effects (on the loop, and a bulk POST's in a
    thread): before, each of 1,000 reminders of new names stayed pending (and so, without
    end, for a client that kept posting). Those refused are stored as only recorded: stored
    as scheduled, another process's pending reminder of the same name read one as its
    replacement, and did not fire."""
    monkeypatch.setattr(reminders, "_REFUSED", RepeatsCounted(reminders.logger, 60.0))
    agent = make_agent(bot_models["reminderbot"])
    cap = reminders.MAX_REMINDERS_PER_CONVERSATION
    posted = [
        event_from_dict(
            {"event": "reminder", "intent": "EXTERNAL_reminder", "date_time": tomorrow()}
            | {"name": f"r{i % (count - 1)}"}  # the last one replaces the first
        )
        for i in range(count)
    ]
    try:
        await agent.append_events("flood", posted, execute_side_effects=True)
        pending = agent.processor.reminders.pending("flood")
        assert sorted(pending) == sorted(f"r{i}" for i in range(cap))
        # Nothing posted is lost: those refused are stored, not scheduled.
        tracker = await agent.tracker("flood")
        stored = [e for e in tracker.events if isinstance(e, ReminderScheduled)]
        assert len(stored) == count
        scheduled = [e.name for e in stored if reminders.was_scheduled(e)]
        assert scheduled == [f"r{i}" for i in range(cap)] + ["r0"]
        warned = [r.getMessage() for r in caplog.records if r.name == reminders.logger.name]
        assert len(warned) == 1, warned  # one line, the rest counted
        assert f"reminder 'r{cap}' of conversation flood is not scheduled" in warned[0]
    finally:
        agent.processor.reminders.cancel_all()


async def test_a_cancel_posted_before_a_reminder_makes_room_for_it(
    bot_models: BotModels,
) -> None:
    """Posted in one request, a cancel frees its reminders' places for those after it, as
    when applied one by one: the reminder after it is scheduled, and stored so."""
    agent = make_agent(bot_models["reminderbot"])
    agent.processor.reminders.max_per_conversation = 2
    when = {"intent": "EXTERNAL_reminder", "date_time": tomorrow()}
    posted = [
        event_from_dict({"event": "reminder", "name": "a"} | when),
        event_from_dict({"event": "reminder", "name": "b"} | when),
        event_from_dict({"event": "cancel_reminder", "name": "a"}),
        event_from_dict({"event": "reminder", "name": "c"} | when),
        event_from_dict({"event": "reminder", "name": "d"} | when),
    ]
    try:
        await agent.append_events("room", posted, execute_side_effects=True)
        assert sorted(agent.processor.reminders.pending("room")) == ["b", "c"]
        tracker = await agent.tracker("room")
        stored = [e for e in tracker.events if isinstance(e, ReminderScheduled)]
        assert [e.name for e in stored if reminders.was_scheduled(e)] == ["a", "b", "c"]
    finally:
        agent.processor.reminders.cancel_all()


async def test_a_reminder_whose_time_cannot_be_read_is_refused_alike_when_set_or_posted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Set by an action (`schedule`) or posted (`Admission`), a reminder whose date_time is
    no date is logged as such, left unscheduled and stored as only recorded; it takes no
    place under the cap and is no refusal past it."""
    scheduler = ReminderScheduler(max_per_conversation=1)
    try:
        bad = ReminderScheduled(intent="EXTERNAL_reminder", trigger_date_time="soon", name="b")
        bad.metadata[reminders.SCHEDULED] = True
        scheduler.schedule("c", bad, no_turn)
        assert scheduler.pending("c") == []
        assert not reminders.was_scheduled(bad)

        posted = ReminderScheduled(intent="EXTERNAL_reminder", trigger_date_time="soon", name="p")
        admission = scheduler.admission("c")
        reminders.mark_posted([posted, reminder("ok")], True, admission)
        assert not reminders.was_scheduled(posted)
        assert admission.refused == []
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors == [
            "reminder 'b' has an invalid date_time",
            "reminder 'p' has an invalid date_time",
        ]
    finally:
        scheduler.cancel_all()
