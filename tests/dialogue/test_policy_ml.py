"""MLPolicy (TEDPolicy's stand-in): learns from stories and generalises beyond them."""

from __future__ import annotations

import pytest

from server.dialogue.domain import Domain
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.policies.featurization import ConversationStates
from server.dialogue.policies.memoization import MemoizationPolicy
from server.dialogue.policies.ml import MLPolicy
from server.trackers.events import ActionExecuted, Event
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
        "intents": ["greet", "mood_great", "mood_unhappy", "goodbye"],
        "responses": {
            name: [{"text": name}]
            for name in ("utter_greet", "utter_happy", "utter_cheer_up", "utter_goodbye")
        },
    }
)
STORIES = [
    story("happy", user("greet"), action("utter_greet"), user("mood_great"), action("utter_happy")),
    story(
        "sad",
        user("mood_unhappy"),
        action("utter_cheer_up"),
        user("goodbye"),
        action("utter_goodbye"),
    ),
]


@pytest.mark.parametrize("bot_name", ["moodbot", "concertbot"])
def test_ml_policy_learns_the_stories(bot_name: str) -> None:
    domain, stories, _ = bot(bot_name)
    policy = MLPolicy("TEDPolicy")
    policy.train(stories, domain)

    for training in (s for s in stories if not s.is_rule):
        pairs = replay(next_action_of(policy, domain), training, domain)
        assert all(gold == got for gold, got in pairs), (training.name, pairs)


def test_ml_policy_generalises_where_memoization_cannot() -> None:
    # greeting after the sad story's first turn: a history no story contains
    events = [listen(), user("mood_unhappy"), action("utter_cheer_up"), listen(), user("greet")]
    conversation = ConversationStates(tracker(DOMAIN, *events), DOMAIN)
    memo = MemoizationPolicy("MemoizationPolicy")
    memo.train(STORIES, DOMAIN)
    assert memo.predict(conversation, DOMAIN).confidence == 0.0
    ml = MLPolicy("TEDPolicy", augmentation_factor=0)
    ml.train(STORIES, DOMAIN)
    assert ml.predict(conversation, DOMAIN).action_name == "utter_greet"


def test_probabilities_cover_every_action() -> None:
    ml = MLPolicy("TEDPolicy")
    ml.train(STORIES, DOMAIN)
    prediction = ml.predict(
        ConversationStates(tracker(DOMAIN, listen(), user("greet")), DOMAIN), DOMAIN
    )
    assert len(prediction.probabilities) == len(DOMAIN.action_names_or_texts)
    assert sum(prediction.probabilities) == pytest.approx(1.0)
    assert prediction.policy_name == "TEDPolicy"


def test_ted_maps_to_the_ml_policy_with_one_warning() -> None:
    ensemble = PolicyEnsemble.train(
        [
            {"name": "TEDPolicy", "epochs": 100},
            {"name": "UnexpecTEDIntentPolicy"},
            {"name": "rasa.core.policies.ted_policy.TEDPolicy", "max_history": 3},
        ],
        STORIES,
        DOMAIN,
    )
    assert [type(p).__name__ for p in ensemble.policies] == ["MLPolicy", "MLPolicy"]
    mapped = [w for w in ensemble.warnings if "TEDPolicy -> MLPolicy" in w]
    assert len(mapped) == 1
    assert any("UnexpecTEDIntentPolicy" in w and "ignored" in w for w in ensemble.warnings)


def test_training_a_real_bot_is_fast() -> None:
    import time

    domain, stories, policies = bot("moodbot")
    started = time.process_time()  # CPU seconds: the host's other work does not count
    PolicyEnsemble.train(policies, stories, domain)
    assert time.process_time() - started < 2.0


def test_a_rule_only_turn_in_between_is_left_out_as_by_ted() -> None:
    # As Rasa's TED: the turn of a rule no story has (`hide_rule_turn`) is not read, so the
    # prediction after it is the one without it.
    policy = MLPolicy("TEDPolicy")
    policy.train(STORIES, DOMAIN)
    rule_turn = [
        user("goodbye"),
        ActionExecuted(action_name="utter_goodbye", hide_rule_turn=True),
        ActionExecuted(action_name="action_listen", hide_rule_turn=True),
    ]
    start = [listen(), user("greet"), action("utter_greet"), listen()]

    def probabilities(*events: Event) -> list[float]:
        t = tracker(DOMAIN, *start, *events, user("mood_great"))
        return policy.predict(ConversationStates(t, DOMAIN), DOMAIN).probabilities

    assert probabilities(*rule_turn) == probabilities()
