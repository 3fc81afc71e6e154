"""MemoizationPolicy and AugmentedMemoizationPolicy replay stories' exact histories."""

from __future__ import annotations

import pytest

from server.dialogue.domain import Domain
from server.dialogue.policies.featurization import ConversationStates
from server.dialogue.policies.memoization import AugmentedMemoizationPolicy, MemoizationPolicy
from server.trackers.events import Event, SlotSet
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
