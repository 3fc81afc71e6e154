"""MemoizationPolicy and AugmentedMemoizationPolicy replay stories' exact histories."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.dialogue.domain import Domain
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.policies.featurization import ConversationStates
from server.dialogue.policies.memoization import AugmentedMemoizationPolicy, MemoizationPolicy
from server.trackers.events import ActionExecuted, Event, SlotSet
from tests.dialogue.policy_fixtures import (
    action,
    bot,
    listen,
    next_action_of,
    replay,
    story,
    tracker,
    user,
)

DOMAIN = Domain.from_dict(
    {
        "intents": ["greet", "mood_great", "mood_unhappy", "affirm"],
        "slots": {"name": {"type": "text", "mappings": [{"type": "custom"}]}},
        "responses": {
            name: [{"text": name}]
            for name in ("utter_greet", "utter_happy", "utter_cheer_up", "utter_ok", "utter_hm")
        },
    }
)
STORIES = [
    story("happy", user("greet"), action("utter_greet"), user("mood_great"), action("utter_happy")),
    story("sad", user("mood_unhappy"), action("utter_cheer_up")),
]


def predicted(policy: MemoizationPolicy, *events: Event) -> tuple[str, float]:
    prediction = policy.predict(ConversationStates(tracker(DOMAIN, *events), DOMAIN), DOMAIN)
    return prediction.action_name, prediction.confidence


@pytest.mark.parametrize("bot_name", ["moodbot", "concertbot", "formbot"])
def test_every_story_step_is_memorized(bot_name: str) -> None:
    domain, stories, _ = bot(bot_name)
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train(stories, domain)

    for training in (s for s in stories if not s.is_rule):
        pairs = replay(next_action_of(policy, domain), training, domain)
        assert all(gold == got for gold, got in pairs), (training.name, pairs)


def test_exact_history_predicts_with_full_confidence() -> None:
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train(STORIES, DOMAIN)
    assert predicted(policy, listen(), user("greet")) == ("utter_greet", 1.0)
    assert predicted(policy, listen(), user("greet"), action("utter_greet")) == (
        "action_listen",
        1.0,
    )
    assert predicted(policy, listen(), user("affirm"))[1] == 0.0


def test_rules_are_not_memorized() -> None:
    rule = story("rule", user("affirm"), action("utter_ok"), is_rule=True)
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train([*STORIES, rule], DOMAIN)
    assert predicted(policy, listen(), user("affirm"))[1] == 0.0


def test_ambiguous_histories_are_forgotten() -> None:
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train(
        [
            story("a", user("affirm"), action("utter_ok")),
            story("b", user("affirm"), action("utter_hm")),
            *STORIES,
        ],
        DOMAIN,
    )
    assert predicted(policy, listen(), user("affirm"))[1] == 0.0
    assert predicted(policy, listen(), user("greet"))[0] == "utter_greet"


def test_max_history_limits_what_must_match() -> None:
    long_ago = [listen(), user("mood_unhappy"), action("utter_cheer_up")]
    now = [listen(), user("greet"), action("utter_greet"), listen(), user("mood_great")]
    short = MemoizationPolicy("MemoizationPolicy", max_history=2)
    short.train(STORIES, DOMAIN)
    assert predicted(short, *long_ago, *now)[0] == "utter_happy"
    full = MemoizationPolicy("MemoizationPolicy", max_history=None)
    full.train(STORIES, DOMAIN)
    assert predicted(full, *long_ago, *now)[1] == 0.0


def test_by_default_the_whole_conversation_must_be_a_story_as_in_rasa() -> None:
    # Rasa 3.6's MemoizationPolicy reads the whole history unless max_history is given: a
    # story's last five states after another opening are not that story.
    longer = story(
        "longer",
        user("greet"),
        action("utter_greet"),
        user("mood_great"),
        action("utter_happy"),
        user("affirm"),
        action("utter_ok"),
    )
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train([longer], DOMAIN)
    assert policy.max_history is None
    opening = [listen(), user("mood_unhappy"), action("utter_cheer_up")]
    rest = [listen(), user("greet"), action("utter_greet"), listen(), user("mood_great")]
    rest += [action("utter_happy"), listen(), user("affirm")]
    assert predicted(policy, *rest) == ("utter_ok", 1.0)
    assert predicted(policy, *opening, *rest)[1] == 0.0
    # The ensemble may remember winners by the last states: one more than the story has.
    window = policy.prediction_window()
    assert window is not None and window > 5
    # an archive from before the longest history was stored: counted from its keys
    restored = MemoizationPolicy("MemoizationPolicy")
    restored.restore({"lookup": policy.lookup_}, Path("."), DOMAIN)
    assert restored.prediction_window() == window
    assert predicted(restored, *rest) == ("utter_ok", 1.0)
    assert predicted(restored, *opening, *rest)[1] == 0.0
    # with max_history: 5, those five states are enough
    windowed = MemoizationPolicy("MemoizationPolicy", max_history=5)
    windowed.train([longer], DOMAIN)
    assert predicted(windowed, *opening, *rest) == ("utter_ok", 1.0)


def test_a_whole_story_after_another_opening_is_not_that_story() -> None:
    # The longest learned history is the happy story up to its final listen; the same
    # states after "I'm sad" / cheer-up are not it, by the policy or by a winner the
    # ensemble remembered from a conversation that was exactly the story.
    happy = [listen(), user("greet"), action("utter_greet"), listen(), user("mood_great")]
    happy.append(action("utter_happy"))
    opening = [listen(), user("mood_unhappy"), action("utter_cheer_up")]
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train(STORIES, DOMAIN)
    assert predicted(policy, *happy) == ("action_listen", 1.0)
    assert predicted(policy, *opening, *happy)[1] == 0.0
    ensemble = PolicyEnsemble.train([{"name": "MemoizationPolicy"}], STORIES, DOMAIN)
    first = ensemble.predict(tracker(DOMAIN, *happy), DOMAIN)
    assert (first.action_name, first.confidence) == ("action_listen", 1.0)
    assert ensemble.predict(tracker(DOMAIN, *opening, *happy), DOMAIN).confidence == 0.0


def test_augmented_memoization_forgets_older_turns_to_find_a_story() -> None:
    earlier = [listen(), user("mood_unhappy"), action("utter_cheer_up")]
    events = [*earlier, listen(), user("greet")]
    plain = MemoizationPolicy("MemoizationPolicy")
    plain.train(STORIES, DOMAIN)
    assert predicted(plain, *events)[1] == 0.0
    augmented = AugmentedMemoizationPolicy("AugmentedMemoizationPolicy")
    augmented.train(STORIES, DOMAIN)
    assert predicted(augmented, *events) == ("utter_greet", 1.0)


def test_augmented_memoization_forgets_slots_set_before_the_cut() -> None:
    stories = [story("ok", user("affirm"), action("utter_ok"))]
    augmented = AugmentedMemoizationPolicy("AugmentedMemoizationPolicy")
    augmented.train(stories, DOMAIN)
    events = [SlotSet(key="name", value="x"), listen(), user("greet"), action("utter_greet")]
    assert predicted(augmented, *events, listen(), user("affirm"))[0] == "utter_ok"


def hidden(name: str) -> ActionExecuted:
    """An action RulePolicy chose from a rule no story has."""
    return ActionExecuted(action_name=name, hide_rule_turn=True)


@pytest.mark.parametrize("policy_class", [MemoizationPolicy, AugmentedMemoizationPolicy])
def test_a_rule_only_turn_in_between_does_not_break_the_story(policy_class: type) -> None:
    # As Rasa: a bot challenge answered by a rule between the story's turns is left out of
    # the states memoization reads, so the story goes on with full confidence.
    policy = policy_class(policy_class.__name__)
    policy.train(STORIES, DOMAIN)
    greeted = [listen(), user("greet"), action("utter_greet"), listen()]
    challenge = [user("affirm"), hidden("utter_ok"), hidden("action_listen")]
    assert predicted(policy, *greeted, *challenge, user("mood_great")) == ("utter_happy", 1.0)
    assert predicted(policy, *greeted, *challenge * 3, user("mood_great")) == ("utter_happy", 1.0)


def test_the_state_after_a_rule_only_action_reads_as_in_rasa() -> None:
    # A rule that does not wait for the user: the state after its action has the previous
    # action and the user input of the last kept state (here the listen of the story's
    # turn before, and its greet).
    events = [listen(), user("greet"), action("utter_greet"), listen(), user("affirm")]
    states = ConversationStates(tracker(DOMAIN, *events, hidden("utter_ok")), DOMAIN).stories()
    assert list(states.states)[-2:] == [
        {"user": {"intent": "greet"}, "prev_action": {"action_name": "utter_greet"}},
        {"user": {"intent": "greet"}, "prev_action": {"action_name": "action_listen"}},
    ]


def test_the_same_turn_not_hidden_counts_as_in_rasa() -> None:
    policy = MemoizationPolicy("MemoizationPolicy", max_history=None)
    policy.train(STORIES, DOMAIN)
    greeted = [listen(), user("greet"), action("utter_greet")]
    challenge = [listen(), user("affirm"), action("utter_ok"), listen()]
    assert predicted(policy, *greeted, *challenge, user("mood_great"))[1] == 0.0


def test_a_message_after_an_action_other_than_listen_reads_as_the_kept_user_input() -> None:
    # An intent triggered (trigger_intent) right after an action other than action_listen:
    # Rasa's memoization reads the state as carrying the user input of the state before.
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train(STORIES, DOMAIN)
    events = [listen(), user("mood_unhappy"), action("utter_cheer_up"), user("greet")]
    states = ConversationStates(tracker(DOMAIN, *events), DOMAIN).stories().states
    assert states[-1]["user"] == {"intent": "mood_unhappy"}


def test_a_slot_only_rules_mention_does_not_hide_the_story_from_memoization() -> None:
    # As Rasa: `name` appears in a rule and in no story, so the policies that learn from
    # stories do not read it; before, setting it made every story unknown.
    rule = story(
        "named",
        SlotSet(key="name", value="bob"),
        user("affirm"),
        action("utter_ok"),
        is_rule=True,
    )
    ensemble = PolicyEnsemble.train(
        [{"name": "RulePolicy"}, {"name": "MemoizationPolicy"}], [*STORIES, rule], DOMAIN
    )
    events = [SlotSet(key="name", value="ann"), listen(), user("greet")]
    prediction = ensemble.predict(tracker(DOMAIN, *events), DOMAIN)
    assert (prediction.action_name, prediction.policy_name) == ("utter_greet", "MemoizationPolicy")


def test_augmented_memoization_keeps_the_message_that_led_into_its_window() -> None:
    # As Rasa (2.8.22 on): the shorter histories start at the listen before the last
    # max_history actions, so the greet behind "great" is still read while the slot set
    # before it is forgotten; they used to start inside the window and lost the greet.
    augmented = AugmentedMemoizationPolicy("AugmentedMemoizationPolicy", max_history=2)
    augmented.train(STORIES, DOMAIN)
    events = [SlotSet(key="name", value="x"), listen(), user("greet"), action("utter_greet")]
    assert predicted(augmented, *events, listen(), user("mood_great")) == ("utter_happy", 1.0)
