"""The tracker is a fold over events: state after each step of real bots' stories, the
special events' semantics, and Rasa's tracker JSON for a recorded conversation."""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import pytest

from server.dialogue.story_steps import generate_training_stories
from server.trackers.events import (
    ActionExecuted,
    ActionExecutionRejected,
    ActionReverted,
    ActiveLoop,
    AllSlotsReset,
    BotUttered,
    ConversationPaused,
    ConversationResumed,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    Event,
    FollowupAction,
    LoopInterrupted,
    Restarted,
    SessionStarted,
    SlotSet,
    StoryExported,
    UserUtteranceReverted,
    UserUttered,
    event_from_dict,
)
from server.trackers.tracker import EventVerbosity, Tracker
from server.training.project import load_project, load_test_stories
from tests.shared_data import BOTS, RECORDED


def load(bot: str):
    root = BOTS / bot
    return load_project(root / "config.yml", root / "domain.yml", [root / "data"])


def user(intent: str, text: str | None = None, **kw: Any) -> UserUttered:
    return UserUttered(text=text or intent, parse_data={"intent": {"name": intent}}, **kw)


def action(name: str) -> ActionExecuted:
    return ActionExecuted(action_name=name)


def test_formbot_story_active_loop_after_each_step() -> None:
    project = load("formbot")
    [story] = [
        s
        for s in generate_training_stories(
            load_test_stories([BOTS / "formbot" / "tests"], project.domain)
        )
        if s.name == "Happy path with message providing requested value"
    ]
    tracker = Tracker("formbot", project.domain.slot_defaults())
    loops = []
    for event in story.events:
        tracker.update(event)
        loops.append((type(event).__name__, tracker.active_loop_name))
    assert loops == [
        ("ActionExecuted", None),
        ("UserUttered", None),
        ("ActionExecuted", None),
        ("ActionExecuted", None),
        ("UserUttered", None),
        ("ActionExecuted", None),
        ("ActiveLoop", "restaurant_form"),
        ("ActionExecuted", "restaurant_form"),
        ("UserUttered", "restaurant_form"),
        ("ActionExecuted", "restaurant_form"),
        ("ActiveLoop", None),
        ("ActionExecuted", None),
        ("ActionExecuted", None),
        ("ActionExecuted", None),
        ("UserUttered", None),
        ("ActionExecuted", None),
        ("ActionExecuted", None),
    ]
    # the loop remembers the message that triggered it
    inform = [e for e in story.events if isinstance(e, UserUttered)][2]
    assert inform.text == "afghan food"
    assert inform.entities[0]["entity"] == "cuisine"


def test_formbot_rule_condition_and_slots(tmp_path: Path) -> None:
    project = load("formbot")
    submit = next(s for s in project.training_stories() if s.name == "submit form")
    tracker = Tracker("formbot", project.domain.slot_defaults())
    tracker.update_many([*submit.condition, SlotSet("cuisine", "greek"), SlotSet("num_people", 4)])
    assert tracker.active_loop_name == "restaurant_form"
    assert tracker.get_slot("cuisine") == "greek" and tracker.get_slot("num_people") == 4
    tracker.update_many(submit.events)
    assert tracker.active_loop == {}
    assert tracker.latest_action_name == "action_listen"
    # slots stay set after the form is done
    assert tracker.get_slot("cuisine") == "greek"


def test_concertbot_slot_values_after_each_step() -> None:
    project = load("concertbot")
    story = next(s for s in project.training_stories() if s.name == "compare_reviews_venues")
    tracker = Tracker("concertbot", project.domain.slot_defaults())
    seen = []
    for event in story.events:
        tracker.update(event)
        seen.append(tracker.get_slot("venues"))
    venues = [{"name": "Big Arena", "reviews": 4.5}]
    first_set = next(i for i, e in enumerate(story.events) if isinstance(e, SlotSet))
    assert seen[:first_set] == [None] * first_set
    assert seen[first_set:] == [venues] * (len(seen) - first_set)


def test_moodbot_latest_message_after_each_step() -> None:
    project = load("moodbot")
    story = next(s for s in project.training_stories() if s.name == "sad path 1")
    tracker = Tracker("moodbot", project.domain.slot_defaults())
    intents = []
    for event in story.events:
        tracker.update(event)
        intents.append(tracker.latest_message.intent_name)
    assert [i for i in intents if i] == [
        "greet",
        "greet",
        "greet",
        "mood_unhappy",
        "mood_unhappy",
        "mood_unhappy",
        "mood_unhappy",
        "affirm",
        "affirm",
        "affirm",
    ]
    assert tracker.latest_action_name == "action_listen"


def test_restart_resets_state_and_asks_for_a_session_start() -> None:
    tracker = Tracker("u", {"name": None})
    tracker.update_many([action("action_listen"), user("greet"), SlotSet("name", "Ada")])
    tracker.update_many([ActiveLoop("form"), ConversationPaused()])
    tracker.update(Restarted())
    assert tracker.slots == {"name": None}
    assert tracker.active_loop == {} and not tracker.paused
    assert tracker.latest_message.text is None
    assert tracker.followup_action == "action_session_start"
    assert len(tracker.events) == 6  # events are kept
    assert [e["event"] for e in tracker.current_state()["events"]] == []


def test_session_started_resets_state_but_keeps_events() -> None:
    tracker = Tracker("u", {"name": "initial"})
    tracker.update_many([user("greet"), SlotSet("name", "Ada"), action("action_session_start")])
    tracker.update(SessionStarted())
    assert tracker.slots == {"name": "initial"}
    assert len(tracker.current_state()["events"]) == 4
    assert tracker.applied_events() == []


def test_the_tracker_until_a_time_is_the_conversation_as_it_was_then() -> None:
    """Events in stored order up to the first one after the time, as Rasa's
    `travel_back_in_time`: a slot stored later with an older timestamp (posted to
    `/tracker/events` from an import, or by a worker whose clock is behind) was not part of
    the conversation then. Before, every event at or before the time was kept, and the
    tracker showed a state the conversation never had."""
    tracker = Tracker("u", {"name": None})
    tracker.update_many(
        [
            user("greet", timestamp=100.0),
            SlotSet("name", "Ada", timestamp=200.0),
            SlotSet("name", "Bob", timestamp=150.0),
        ]
    )

    then = tracker.until(160.0)

    assert [e.timestamp for e in then.events] == [100.0]
    assert then.slots == {"name": None}
    assert [e.timestamp for e in tracker.until(200.0).events] == [100.0, 200.0, 150.0]


def test_rewind_drops_the_last_user_turn() -> None:
    tracker = Tracker("u", {"x": None})
    tracker.update_many(
        [action("action_listen"), user("greet"), action("utter_greet"), action("action_listen")]
    )
    tracker.update_many([user("inform", "Rome"), SlotSet("x", "Rome")])
    tracker.update(UserUtteranceReverted())
    assert tracker.latest_message.intent_name == "greet"
    assert tracker.get_slot("x") is None
    assert tracker.latest_action_name == "utter_greet"
    assert [type(e).__name__ for e in tracker.applied_events()] == [
        "ActionExecuted",
        "UserUttered",
        "ActionExecuted",
    ]


def test_undo_drops_the_last_action_and_what_followed() -> None:
    tracker = Tracker("u", {"x": None})
    tracker.update_many([user("greet"), action("utter_greet"), SlotSet("x", 1)])
    tracker.update(ActionReverted())
    assert tracker.get_slot("x") is None
    assert tracker.latest_action == {}
    assert tracker.latest_message.intent_name == "greet"


@pytest.mark.parametrize("turns", [3, 400])  # folded here, and in a thread (over 1,000 events)
async def test_a_rewind_folded_off_the_loop_leaves_the_state_a_rewind_leaves(turns: int) -> None:
    history: list[Event] = []
    for turn in range(turns):
        history += [
            user("greet"),
            action("utter_greet"),
            SlotSet("x", turn),
            action("action_listen"),
        ]
    history += [
        ActiveLoop("form"),
        ConversationPaused(),
        user("inform", "Rome"),
        SlotSet("x", "Rome"),
    ]
    rewinds = [UserUtteranceReverted(), action("utter_ask"), ActionReverted()]
    inline, folded = Tracker("u", {"x": None}), Tracker("u", {"x": None})
    inline.update_many([*history, *rewinds])
    folded.update_many(history)
    await folded.update_many_off_loop(rewinds)
    assert folded.events == inline.events
    assert folded.current_state(EventVerbosity.ALL) == inline.current_state(EventVerbosity.ALL)
    # Taken back: the message, its slot, the pause and the loop; then the action undone.
    assert folded.get_slot("x") == turns - 1 and not folded.paused and not folded.active_loop
    assert folded.latest_action_name == "utter_greet"


@pytest.mark.parametrize("seed", range(4))
async def test_events_folded_off_the_loop_leave_the_state_inline_folding_leaves(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every rewind through the thread (the bound at 0), whatever came before or comes along.
    monkeypatch.setattr("server.trackers.events.OFF_LOOP_EVENTS", 0)
    rng = random.Random(seed)
    kinds = [
        lambda: action(rng.choice(["action_listen", "utter_a", "a_form"])),
        lambda: ActionExecutionRejected(action_name=rng.choice(["utter_a", "a_form"])),
        lambda: user(rng.choice(["greet", "inform"]), rng.choice(["hi", None])),
        lambda: BotUttered(text="hi"),
        lambda: SlotSet(key=rng.choice(["s", "undeclared"]), value=rng.randint(0, 9)),
        lambda: ActiveLoop(name=rng.choice(["a_form", None])),
        UserUtteranceReverted,
        UserUtteranceReverted,
        ActionReverted,
        ActionReverted,
        Restarted,
        SessionStarted,
        lambda: FollowupAction(action_name="utter_a"),
        lambda: LoopInterrupted(is_interrupted=True),
        AllSlotsReset,
        ConversationPaused,
        ConversationResumed,
        lambda: EntitiesAdded(entities=[{"entity": "e", "value": rng.randint(0, 2)}]),
    ]
    for n in range(60):
        events = [rng.choice(kinds)() for _ in range(rng.randint(1, 40))]
        for index, event in enumerate(events):
            event.timestamp = float(index)
        cut = rng.randint(0, len(events))
        # Each tracker its own events: a fold writes an entity added into its message.
        inline = Tracker(f"r{n}", {"s": None})
        inline.update_many([event_from_dict(e.as_dict()) for e in events])
        folded = Tracker(f"r{n}", {"s": None})
        folded.update_many(events[:cut])
        await folded.update_many_off_loop(events[cut:])
        state = folded.current_state(EventVerbosity.ALL)
        assert state == inline.current_state(EventVerbosity.ALL), (seed, n, cut)
        assert folded.rejected_action == inline.rejected_action
        assert folded._undeclared_logged == inline._undeclared_logged


def test_pause_resume_and_followup() -> None:
    tracker = Tracker("u")
    tracker.update(ConversationPaused())
    assert tracker.paused and tracker.current_state()["paused"] is True
    tracker.update(ConversationResumed())
    assert not tracker.paused
    tracker.update(FollowupAction("utter_hi"))
    assert tracker.followup_action == "utter_hi"
    tracker.update(action("utter_hi"))
    assert tracker.followup_action is None
    tracker.update(FollowupAction("utter_bye"))
    tracker.update(user("bye"))
    assert tracker.followup_action is None


def test_bot_utterance_and_loop_interruption() -> None:
    tracker = Tracker("u")
    tracker.update_many([user("request"), ActiveLoop("form"), action("utter_chitchat")])
    tracker.update(BotUttered(text="hi"))
    assert tracker.latest_bot_utterance is not None
    assert tracker.active_loop["trigger_message"]["intent"] == {"name": "request"}
    tracker.update(action("form"))
    assert tracker.active_loop["is_interrupted"] is False


def _recorded_tracker_bodies() -> dict[str, dict[str, Any]]:
    text = RECORDED.read_text(encoding="utf-8")
    bodies = {}
    for title, block in re.findall(
        r"### (GET /conversations/u1/tracker[^\n]*)\n.*?```json\n(.*?)```", text, flags=re.S
    ):
        body = "\n".join(line for line in block.splitlines() if not line.startswith("//"))
        bodies[title.strip()] = json.loads(body)
    return bodies


def test_current_state_matches_rasa_recorded_tracker_json() -> None:
    bodies = _recorded_tracker_bodies()
    recorded = bodies["GET /conversations/u1/tracker"]
    tracker = Tracker.from_dicts("u1", recorded["events"], {"session_started_metadata": None})
    state = tracker.current_state()
    assert json.dumps(state) == json.dumps(recorded)


def test_applied_events_match_rasa_recorded_tracker_json() -> None:
    bodies = _recorded_tracker_bodies()
    recorded = bodies["GET /conversations/u1/tracker?include_events=APPLIED"]
    # the APPLIED view starts after the session start: rebuild the full history first
    full_events = [
        {
            "event": "action",
            "timestamp": 1795311849.289757,
            "metadata": recorded["events"][0]["metadata"],
            "name": "action_session_start",
            "policy": None,
            "confidence": 1.0,
            "action_text": None,
            "hide_rule_turn": False,
        },
        {
            "event": "session_started",
            "timestamp": 1795311849.289828,
            "metadata": recorded["events"][0]["metadata"],
        },
        *recorded["events"],
    ]
    tracker = Tracker.from_dicts("u1", full_events, {"session_started_metadata": None})
    state = tracker.current_state(EventVerbosity.APPLIED)
    assert json.dumps(state) == json.dumps(recorded)


def test_a_slots_initial_value_is_never_shared_between_trackers_or_sessions() -> None:
    defaults: dict[str, Any] = {"cart": ["apple"], "prefs": {"size": "M"}, "name": None}
    first, second = Tracker("a", defaults), Tracker("b", defaults)
    first.slots["cart"].append("pear")
    first.slots["prefs"]["size"] = "L"
    assert second.slots == {"cart": ["apple"], "prefs": {"size": "M"}, "name": None}
    first.update(SessionStarted())
    assert first.slots == {"cart": ["apple"], "prefs": {"size": "M"}, "name": None}
    assert defaults == {"cart": ["apple"], "prefs": {"size": "M"}, "name": None}


def test_slots_the_domain_lacks_are_not_set_and_logged_a_few_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As Rasa, an undeclared slot is not set (its event is kept). A body of 20,000 slot
    events of as many names is at most 10 lines in the log, not 20,000."""
    events = [SlotSet(f"ghost{i}", i) for i in range(20_000)] + [SlotSet("x", 1)]
    with caplog.at_level(logging.ERROR, logger="server.trackers.tracker"):
        tracker = Tracker("many", {"x": None}, events)
    assert tracker.slots == {"x": 1}
    assert len(tracker.events) == 20_001
    assert 1 <= len(caplog.records) <= 10


def test_the_rejected_action_is_the_last_action_event_when_it_is_a_rejection() -> None:
    # As the policies read it: over the events as logged, rewinds, restarts and new sessions
    # included (none of them is an action event), whatever tracker holds them.
    def last_rejected(events: list[Event]) -> str | None:
        for event in reversed(events):
            if isinstance(event, ActionExecuted):
                return None
            if isinstance(event, ActionExecutionRejected):
                return event.action_name
        return None

    rng = random.Random("rejected")
    kinds = [
        lambda: ActionExecuted(action_name=rng.choice(["action_listen", "utter_a", "a_form"])),
        lambda: ActionExecutionRejected(action_name=rng.choice(["utter_a", "a_form"])),
        lambda: user("greet"),
        lambda: BotUttered(text="hi"),
        lambda: SlotSet(key="s", value=1),
        lambda: ActiveLoop(name=rng.choice(["a_form", None])),
        UserUtteranceReverted,
        ActionReverted,
        Restarted,
        SessionStarted,
        # The events no rejection depends on, each through the fold's own branch.
        lambda: ActionExecuted(action_name=None, action_text="an end-to-end answer"),
        lambda: FollowupAction(action_name="utter_a"),
        lambda: LoopInterrupted(is_interrupted=True),
        AllSlotsReset,
        ConversationPaused,
        ConversationResumed,
        lambda: DefinePrevUserUtteredFeaturization(use_text_for_featurization=True),
        lambda: EntitiesAdded(entities=[{"entity": "e", "value": "v"}]),
        StoryExported,
    ]
    for n in range(300):
        tracker = Tracker(f"r{n}", {"s": None})
        for index in range(rng.randint(1, 20)):
            event = rng.choice(kinds)()
            event.timestamp = float(index)
            tracker.update(event)
            assert tracker.rejected_action == last_rejected(tracker.events)
        cut = rng.randint(0, len(tracker.events))
        dicts = [e.as_dict() for e in tracker.events]
        refolded = Tracker.from_dicts(f"r{n}", dicts[:cut], {"s": None})
        refolded.update_from_dicts(dicts[cut:])
        for other in (
            tracker.copy(),
            Tracker(f"r{n}", {"s": None}, tracker.events[:cut]).extended(tracker.events[cut:]),
            Tracker.from_dicts(f"r{n}", dicts, {"s": None}),
            refolded,
        ):
            assert other.rejected_action == last_rejected(tracker.events)
        earlier = tracker.until(float(cut))
        assert earlier.rejected_action == last_rejected(earlier.events)
