"""A prediction's conversation states, extended turn by turn on a hot tracker, equal the
states computed from scratch (restarts and rewinds included)."""

from __future__ import annotations

import gc
import time

import pytest

from server.dialogue.domain import Domain
from server.dialogue.policies.featurization import (
    NO_RULE_ONLY,
    ConversationStates,
    RuleOnly,
    State,
    _StoryStates,
    fold_states,
    state_identity,
    state_text,
    states_and_labels,
    story_states,
    window_step,
)
from server.trackers.events import (
    ActionExecuted,
    ActionExecutionRejected,
    ActionReverted,
    ActiveLoop,
    AllSlotsReset,
    BotUttered,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    FollowupAction,
    LoopInterrupted,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from server.trackers.tracker import Tracker

DOMAIN = Domain.from_dict(
    {
        "intents": ["greet", "mood_great"],
        "slots": {"mood": {"type": "text", "mappings": [{"type": "custom"}]}},
        "responses": {"utter_greet": [{"text": "hi"}]},
        "forms": {"restaurant_form": {"required_slots": []}, "other_form": {"required_slots": []}},
    }
)


def turn(n: int) -> list:
    return [
        UserUttered(text=f"m{n}", parse_data={"intent": {"name": "greet", "confidence": 1.0}}),
        SlotSet(key="mood", value=f"v{n % 3}"),
        ActionExecuted(action_name="utter_greet"),
        BotUttered(text="hi"),
        ActionExecuted(action_name="action_listen"),
    ]


def test_incremental_states_equal_a_full_recompute() -> None:
    tracker = Tracker("t", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")])
    for n in range(30):
        events = turn(n)
        if n == 10:
            events = [UserUtteranceReverted(), *events]
        if n == 20:
            events = [Restarted(), ActionExecuted(action_name="action_listen"), *events]
        tracker.update_many(events)
        conversation = ConversationStates(tracker, DOMAIN)
        expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
        assert conversation.states == expected
        assert conversation.events == tracker.applied_events()


def test_state_texts_asked_after_every_event_equal_those_of_a_full_recompute() -> None:
    # A prediction between any two events: the current state's text is kept for the state
    # before the next action only while no event in between changed it (a slot here).
    tracker = Tracker("t", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")])
    for n in range(12):
        events = turn(n)
        if n % 3 == 1:
            events.insert(3, SlotSet(key="mood", value=f"late{n}"))  # after the action
        if n % 3 == 2:
            events.insert(2, LoopInterrupted(is_interrupted=False))
        for event in events:
            tracker.update(event)
            conversation = ConversationStates(tracker, DOMAIN)
            expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
            assert list(conversation.texts(None)) == [state_text(s) for s in expected]
            # Windows (the ensemble's memory key), some asked before all the identities are.
            windows = (1, 2, 5, 6, 40) if n % 2 else (None, 1, 2, 5, 6, 40)
            for last in windows:
                wanted = expected[-last:] if last else expected
                assert conversation.identities(last) == tuple(map(state_identity, wanted))


def test_states_asked_around_user_featurization_events_equal_a_full_recompute() -> None:
    # The user_featurization logged after a message: by intent (most turns: the state before
    # the next action is the one kept), or by text (the state changes).
    tracker = Tracker("t", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")])
    for n in range(9):
        events = turn(n)
        by_text = DefinePrevUserUtteredFeaturization(use_text_for_featurization=n % 3 == 2)
        events.insert(2, by_text)
        for event in events:
            tracker.update(event)
            conversation = ConversationStates(tracker, DOMAIN)
            expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
            assert conversation.states == expected
            assert list(conversation.texts(None)) == [state_text(s) for s in expected]
            for last in (1, 2, 5):
                entry = window_step(tracker, DOMAIN, last)
                identities = None if entry is None else entry[1]
                assert identities is not None
                assert identities[0] == tuple(map(state_identity, expected[-last:]))


def test_windows_asked_after_every_event_equal_those_of_a_full_recompute() -> None:
    # The ensemble's memory key without ConversationStates, between any two events, after a
    # rewind and a restart (None then: ConversationStates recomputes), with or without the
    # current state's identity asked first.
    tracker = Tracker("t", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")])
    answered = 0
    for n in range(12):
        events = turn(n)
        if n == 4:
            events = [UserUtteranceReverted(), *events]
        if n == 8:
            events = [Restarted(), ActionExecuted(action_name="action_listen"), *events]
        for event in events:
            tracker.update(event)
            expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
            for last in (1, 2, 5, 40) if n % 2 else (0, 40, 5, 2, 1):
                entry = window_step(tracker, DOMAIN, last)
                both = None if entry is None else entry[1]
                if both is None:
                    identities = ConversationStates(tracker, DOMAIN).identities(last)
                else:
                    identities = both[0]
                    answered += 1
                wanted = expected[-last:] if last else expected
                assert identities == tuple(map(state_identity, wanted))
    assert answered > 200  # nearly every time without ConversationStates


def test_restarts_and_session_starts_fold_on_without_a_recompute() -> None:
    # A new conversation's first turn (session start, then the user) and later restarts or
    # new sessions: the fold starts afresh after them, equal to a full recompute, and the
    # ensemble's memory key comes without ConversationStates.
    session_start = [
        ActionExecuted(action_name="action_session_start"),
        SessionStarted(),
        SlotSet(key="mood", value="carried"),
        ActionExecuted(action_name="action_listen"),
    ]
    tracker = Tracker("t", DOMAIN.slot_defaults())
    for n in range(9):
        events = turn(n)
        if n == 0 or n == 5:
            events = [*session_start, *events]
        if n == 3:
            events = [Restarted(), ActionExecuted(action_name="action_listen"), *events]
        if n == 7:  # a rewind after the restart: only a recompute knows what it undid
            events = [Restarted(), *events[:3], UserUtteranceReverted(), *events[3:]]
        middle = len(events) // 2
        for added in (events[:middle], events[middle:]):  # a prediction in between
            tracker.update_many(added)
            expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
            entry = window_step(tracker, DOMAIN, 5)
            both = None if entry is None else entry[1]
            rewound = any(isinstance(e, UserUtteranceReverted) for e in added)
            assert (both is None) == rewound
            if both is None:
                identities = ConversationStates(tracker, DOMAIN).identities(5)
            else:
                identities = both[0]
            assert identities == tuple(map(state_identity, expected[-5:]))
            conversation = ConversationStates(tracker, DOMAIN)
            assert conversation.states == expected
            assert conversation.events == tracker.applied_events()
            assert list(conversation.texts(None)) == [state_text(s) for s in expected]


def test_current_state_texts_equal_json_dumps_for_text_orjson_writes_differently() -> None:
    # Non-ASCII, "null", an exponent, DEL (json.dumps's path) beside plain parts (orjson's),
    # after every event that changes a part: entities added to the user message, slots
    # reset, an end-to-end bot text.
    domain = Domain.from_dict(
        {
            "intents": ["greet"],
            "entities": ["name"],
            "slots": {
                "city": {
                    "type": "categorical",
                    "values": ["Köln", "null", "1e5", "plain"],
                    "mappings": [{"type": "custom"}],
                },
                "seen": {"type": "bool", "mappings": [{"type": "custom"}]},
            },
            "responses": {"utter_greet": [{"text": "hi"}]},
        }
    )
    greet = {"intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    events = [
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="Grüß dich \x7f", parse_data={"entities": []}),
        SlotSet(key="city", value="Köln"),
        ActionExecuted(action_name="utter_greet"),
        UserUttered(text="hello", parse_data=greet),
        EntitiesAdded(entities=[{"entity": "name", "value": "Ann"}]),
        SlotSet(key="city", value="1e5"),
        SlotSet(key="seen", value=True),
        ActionExecuted(action_text="e2e: Grüß"),
        SlotSet(key="city", value="null"),
        AllSlotsReset(),
        SlotSet(key="city", value="plain"),
        ActionExecuted(action_name="action_listen"),
    ]
    tracker = Tracker("t", domain.slot_defaults())
    for event in events:
        tracker.update(event)
        conversation = ConversationStates(tracker, domain)
        expected, _ = states_and_labels(tracker.applied_events(), domain)
        assert conversation.texts(None)[-1] == state_text(expected[-1]), event


def _first_prediction_cpu(asks: int) -> tuple[float, ConversationStates, Tracker]:
    """This thread's CPU for the first states of a conversation of a form asking `asks`
    times (other threads of the test run, stores or freeing, do not count, nor does a
    collection of the garbage earlier tests left)."""
    tracker = Tracker("form", DOMAIN.slot_defaults())
    said = {"intent": {"name": "greet", "confidence": 1.0}}
    tracker.update_many(
        [
            UserUttered(text="m", parse_data=said),
            ActionExecuted(action_name="restaurant_form"),
            ActiveLoop(name="restaurant_form"),
            BotUttered(text="what cuisine?"),
            ActionExecuted(action_name="action_listen"),
        ]
        * asks
    )
    gc.collect()
    gc.disable()
    try:
        started = time.thread_time()
        conversation = ConversationStates(tracker, DOMAIN)
        took = time.thread_time() - started
    finally:
        gc.enable()
    return took, conversation, tracker


def test_a_long_form_conversation_predicts_in_time_linear_in_its_length() -> None:
    """Before, every run of a form copied the whole history to undo its happy path: the
    first prediction on 100,000 events of a form asking again and again took 0.76 s of CPU
    and on 25,000 events 0.08-0.11 s. Judged by the CPU for 8x the events, not by seconds,
    which depend on the host (0.07-0.13 s on one, 0.86 s on a slow one): linear code takes
    8.3-8.4x alone (about 12x beside other tests' load), a history copy per form run 24x."""
    small = min(_first_prediction_cpu(2_500)[0] for _ in range(5))
    took, conversation, tracker = _first_prediction_cpu(20_000)
    took = min(took, _first_prediction_cpu(20_000)[0])
    assert took < 15 * small, (took, small)
    expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
    assert conversation.states == expected
    # As Rasa's applied events: the happy path's 20,000 runs collapse to the first (its
    # state before, after, and the last `action_listen`'s), each later run walking only the
    # events since the one before.
    assert len(expected) == 3


def form_turns(n: int) -> list:
    """A form asking (its happy path), chitchat inside it, rejections, its end, a rewind and
    a restart: what the collapse of its happy paths must follow event by event."""
    said = {"intent": {"name": "greet", "confidence": 1.0}}
    events: list = [UserUttered(text=f"m{n}", parse_data=said)]
    kind = n % 7
    if kind == 3:  # chitchat inside the form, then the form again
        events += [ActionExecuted(action_name="utter_greet"), BotUttered(text="hi")]
    if kind == 4:
        events += [
            ActionExecuted(action_name="restaurant_form"),
            ActionExecutionRejected(action_name="restaurant_form"),
            ActionExecuted(action_name="utter_greet"),
        ]
    events += [ActionExecuted(action_name="restaurant_form")]
    if n % 10 == 0 or n % 7 == 6 or n == 41:  # activated (again, after its end or a restart)
        events += [ActiveLoop(name="restaurant_form")]
    events += [SlotSet(key="mood", value=f"v{n % 4}"), BotUttered(text="what cuisine?")]
    if kind == 5:
        events += [ActiveLoop(name=None), ActionExecuted(action_name="utter_greet")]
    if n == 23:
        events += [UserUtteranceReverted()]
    if n == 41:
        events = [Restarted(), ActionExecuted(action_name="action_listen"), *events]
    return [*events, ActionExecuted(action_name="action_listen")]


def test_states_with_a_form_equal_a_full_recompute_and_fold_on_incrementally() -> None:
    """Before, a session in which a form ran recomputed all its states at every prediction
    (a cost growing with the conversation, on the event loop); now the form's happy paths
    collapse as they run, with the same states after every event."""
    tracker = Tracker("form", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")])
    for n in range(60):
        for event in form_turns(n):
            tracker.update(event)
            conversation = ConversationStates(tracker, DOMAIN)
            expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
            assert conversation.states == expected, (n, event)
            assert conversation.events == tracker.applied_events()
            assert list(conversation.texts(None)) == [state_text(s) for s in expected]
    cache = tracker._featurization_cache  # type: ignore[attr-defined]
    assert not cache.batch and cache.loop == "restaurant_form"


def test_a_turn_of_a_long_form_conversation_costs_what_a_short_ones_does() -> None:
    """Before, each prediction of a session holding a form recomputed all its states: 25 ms
    of CPU on the event loop at 25,000 events (114 ms at 100,000); now about 0.02 ms."""
    said = {"intent": {"name": "greet", "confidence": 1.0}}
    start = [
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="m", parse_data=said),
        ActionExecuted(action_name="restaurant_form"),
        ActiveLoop(name="restaurant_form"),
        ActionExecuted(action_name="action_listen"),
    ]

    def asks() -> list:
        return [
            UserUttered(text="m", parse_data=said),
            ActionExecuted(action_name="restaurant_form"),
            SlotSet(key="mood", value="x"),
            BotUttered(text="what cuisine?"),
            ActionExecuted(action_name="action_listen"),
        ]

    tracker = Tracker("form", DOMAIN.slot_defaults(), start)
    for _ in range(5_000):
        tracker.update_many(asks())
    ConversationStates(tracker, DOMAIN)
    started = time.thread_time()
    for _ in range(10):
        tracker.update_many(asks())
        conversation = ConversationStates(tracker, DOMAIN)
    assert (time.thread_time() - started) / 10 < 0.005  # 25 ms before
    expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
    assert conversation.states == expected
    # A second loop in the session: recomputed at every prediction, as before.
    tracker.update_many(
        [
            UserUttered(text="m", parse_data=said),
            ActionExecuted(action_name="other_form"),
            ActiveLoop(name="other_form"),
            ActionExecuted(action_name="action_listen"),
        ]
    )
    expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
    assert ConversationStates(tracker, DOMAIN).states == expected


def hidden_turns(n: int) -> list:
    """`form_turns` with some of the rules' turns hidden (`hide_rule_turn`), a followup
    action, and a message after an action other than action_listen (`trigger_intent`)."""
    events = form_turns(n)
    if n % 3 == 1:
        said = {"intent": {"name": "mood_great", "confidence": 1.0}}
        events = [
            UserUttered(text="rule", parse_data=said),
            ActionExecuted(action_name="utter_greet", hide_rule_turn=True),
            ActionExecuted(action_name="action_listen", hide_rule_turn=True),
            *events,
        ]
    if n % 5 == 2:
        events = [
            ActionExecuted(action_name="utter_greet"),
            FollowupAction(action_name="utter_greet"),
            ActionExecuted(action_name="utter_greet", hide_rule_turn=True),
            *events,
        ]
    return events


def test_story_states_with_hidden_turns_equal_a_full_recompute_after_every_event() -> None:
    # The states memoization and the ML policy read, kept incrementally (with the form's
    # happy paths collapsing, rewinds and restarts), and the ensemble's memory key of them.
    tracker = Tracker("form", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")])
    for rule_only in (NO_RULE_ONLY, RuleOnly(frozenset({"mood"}), frozenset({"restaurant_form"}))):
        for n in range(45):
            for event in hidden_turns(n):
                tracker.update(event)
                expected = story_states(tracker.applied_events(), DOMAIN, rule_only)
                entry = window_step(tracker, DOMAIN, 5, rule_only)
                both = None if entry is None else entry[1]
                stories = ConversationStates(tracker, DOMAIN, rule_only).stories()
                assert stories.states == expected, (n, event)
                assert list(stories.texts(None)) == [state_text(s) for s in expected]
                if both is not None:
                    assert both[1] == tuple(map(state_identity, expected[-5:]))


def test_story_states_equal_a_full_recompute_in_conversations_without_hidden_turns() -> None:
    # Where the story states may be the states themselves (no hidden turn), and where a
    # message after an action other than action_listen (`/execute`, then `trigger_intent`)
    # or entities added by an action make them differ.
    said = {"intent": {"name": "greet", "confidence": 1.0}}
    events = [
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="a", parse_data=said),
        ActionExecuted(action_name="utter_greet"),
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="b", parse_data=said),
        DefinePrevUserUtteredFeaturization(use_text_for_featurization=True),
        ActionExecuted(action_name="utter_greet"),
        ActionExecuted(action_text="free text"),
        EntitiesAdded(entities=[{"entity": "name", "value": "x"}]),
        ActionExecuted(action_name="utter_greet"),
        UserUttered(text="c", parse_data=said),
        ActionExecuted(action_name="utter_greet"),
        ActionExecuted(action_name="action_listen"),
    ]
    tracker = Tracker("t", DOMAIN.slot_defaults())
    for event in events:
        tracker.update(event)
        expected = story_states(tracker.applied_events(), DOMAIN, NO_RULE_ONLY)
        entry = window_step(tracker, DOMAIN, 3)
        both = None if entry is None else entry[1]
        assert both is not None
        assert both[1] == tuple(map(state_identity, expected[-3:])), event
        assert ConversationStates(tracker, DOMAIN).stories().states == expected, event


def states_read(monkeypatch: pytest.MonkeyPatch) -> list[State]:
    """The states the story states read from now on (each full state before an action)."""
    read: list[State] = []
    next_state = _StoryStates.next_state

    def counted(self: _StoryStates, state: State, flags: int, commit: bool) -> State | None:
        read.append(state)
        return next_state(self, state, flags, commit)

    monkeypatch.setattr(_StoryStates, "next_state", counted)
    return read


def test_the_first_hidden_turn_of_a_long_conversation_reads_no_earlier_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The story states equal the states up to the first hidden turn: taken as they are
    (before, all 20,000 states were read again on the event loop, 87 ms at 50,000 events)."""
    tracker = Tracker("t", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")])
    for n in range(10_000):
        tracker.update_many(turn(n))
    ConversationStates(tracker, DOMAIN).stories()
    said = {"intent": {"name": "mood_great", "confidence": 1.0}}
    tracker.update_many(
        [
            UserUttered(text="rule", parse_data=said),
            ActionExecuted(action_name="utter_greet", hide_rule_turn=True),
            ActionExecuted(action_name="action_listen", hide_rule_turn=True),
        ]
    )
    read = states_read(monkeypatch)
    stories = ConversationStates(tracker, DOMAIN).stories()
    assert len(read) <= 3
    assert stories.states == story_states(tracker.applied_events(), DOMAIN, NO_RULE_ONLY)


def test_story_states_with_rule_only_slots_are_folded_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A model with slots only rules mention reads every state into its story states once:
    # `fold_states` (in a thread, for a long conversation) does it, not the prediction.
    rule_only = RuleOnly(frozenset({"mood"}), frozenset())
    tracker = Tracker("t", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")])
    for n in range(2_000):
        tracker.update_many(turn(n))
    fold_states(tracker, DOMAIN, rule_only)
    read = states_read(monkeypatch)
    stories = ConversationStates(tracker, DOMAIN, rule_only).stories()
    assert len(read) <= 1
    assert stories.states == story_states(tracker.applied_events(), DOMAIN, rule_only)
    assert all("slots" not in state for state in stories.states)


def test_a_loop_the_domain_lacks_is_no_loop_in_a_conversations_states() -> None:
    # A form dropped from the domain, or a name posted through the API: the policies read
    # the conversation as without a loop (before, every state named it, and neither
    # memoization nor the rules matched again); training data keeps the name.
    tracker = Tracker("ghost", DOMAIN.slot_defaults())
    tracker.update_many([*turn(0), ActiveLoop(name="dropped_form"), *turn(1)])
    plain = Tracker("plain", DOMAIN.slot_defaults())
    plain.update_many([*turn(0), *turn(1)])

    live = ConversationStates(tracker, DOMAIN).states
    assert live == ConversationStates(plain, DOMAIN).states
    assert live == states_and_labels(tracker.applied_events(), DOMAIN, live=True)[0]
    trained, _ = states_and_labels(tracker.applied_events(), DOMAIN)
    assert trained[-1]["active_loop"] == {"name": "dropped_form"}


def test_a_text_featurized_message_after_a_forms_later_run_folds_as_a_full_recompute() -> None:
    """Before, the fold a form's later run went back to had lost the last message's text: a
    `user_featurization` (text) event after it raised AttributeError instead of giving the
    states."""
    tracker = Tracker("text-after-form", DOMAIN.slot_defaults(), [])
    form = "restaurant_form"
    for event in [
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="book", parse_data={"intent": {"name": "greet", "confidence": 1.0}}),
        ActionExecuted(action_name=form),
        ActiveLoop(name=form),
        ActionExecuted(action_name="action_listen"),
        UserUttered(text="two", parse_data={"intent": {"name": "greet", "confidence": 1.0}}),
        ActionExecuted(action_name=form),
        DefinePrevUserUtteredFeaturization(use_text_for_featurization=True),
    ]:
        tracker.update(event)
        conversation = ConversationStates(tracker, DOMAIN)
        expected, _ = states_and_labels(tracker.applied_events(), DOMAIN)
        assert conversation.states == expected, event
    assert conversation.states[-1]["user"] == {"text": "book"}


def _said(text: str) -> UserUttered:
    return UserUttered(text=text, parse_data={"intent": {"name": "greet", "confidence": 1.0}})


@pytest.mark.parametrize(
    "events",
    [
        # The form's activation undone, then the form runs twice: Rasa's applied events
        # still collapse its second run (its loops are those any event activates).
        [
            ActionExecuted(action_name="restaurant_form"),
            ActiveLoop(name="restaurant_form"),
            ActionReverted(),
            ActionReverted(),
            ActionExecuted(action_name="restaurant_form"),
            SlotSet(key="mood", value="a"),
            ActionExecuted(action_name="action_listen"),
            _said("m1"),
            ActionExecuted(action_name="restaurant_form"),
            SlotSet(key="mood", value="b"),
        ],
        # The form activated only after two rewinds: its earlier runs collapse, so those
        # rewinds took back more than they did when they came.
        [
            ActionExecuted(action_name="action_listen"),
            _said("m0"),
            ActionExecuted(action_name="restaurant_form"),
            ActionExecuted(action_name="action_listen"),
            _said("m1"),
            ActionExecuted(action_name="restaurant_form"),
            ActiveLoop(name=None),
            UserUtteranceReverted(),
            UserUtteranceReverted(),
            ActionExecuted(action_name="action_listen"),
            _said("m2"),
            ActionExecuted(action_name="restaurant_form"),
            ActiveLoop(name="restaurant_form"),
            ActionExecuted(action_name="utter_greet"),
        ],
    ],
)
def test_states_equal_a_full_recompute_when_a_loop_is_known_from_other_events(
    events: list,
) -> None:
    tracker = Tracker(
        "known-loop", DOMAIN.slot_defaults(), [ActionExecuted(action_name="action_listen")]
    )
    for event in events:
        tracker.update(event)
        conversation = ConversationStates(tracker, DOMAIN)
        expected, _ = states_and_labels(tracker.applied_events(), DOMAIN, live=True)
        assert conversation.states == expected
        assert conversation.events == tracker.applied_events()
