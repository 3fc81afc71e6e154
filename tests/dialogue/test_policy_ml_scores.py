"""MLPolicy scores a row in plain numpy exactly as scikit-learn's predict_proba would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from server.dialogue.domain import Domain
from server.dialogue.policies.featurization import ConversationStates
from server.dialogue.policies.ml import MLPolicy, state_features
from tests.dialogue.policy_fixtures import action, bot, replay, story, user


def _assert_same_as_sklearn(policy: MLPolicy, domain: Domain, stories: list[Any]) -> int:
    checked = 0
    classifier = policy.classifier_
    assert isinstance(classifier, LogisticRegression)  # trained here, not restored from disk

    def next_action(t: Any) -> str:
        nonlocal checked
        states = ConversationStates(t, domain).states
        features = state_features(states, policy.max_history)
        ours = policy._probabilities_of(features)
        theirs = classifier.predict_proba(policy._matrix([features]))[0]
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
        checked += 1
        return policy.predict(ConversationStates(t, domain), domain).action_name

    for training in stories:
        replay(next_action, training, domain)
    return checked


@pytest.mark.parametrize("bot_name", ["moodbot", "concertbot", "formbot"])
def test_scores_match_scikit_learn_on_the_shared_bots(bot_name: str) -> None:
    domain, stories, _ = bot(bot_name)
    policy = MLPolicy("TEDPolicy")
    policy.train(stories, domain)
    assert _assert_same_as_sklearn(policy, domain, stories) > 0


def test_scores_match_scikit_learn_with_two_classes() -> None:
    domain = Domain.from_dict(
        {"intents": ["greet", "bye"], "responses": {"utter_hi": [{"text": "hi"}]}}
    )
    stories = [story("hi", user("greet"), action("utter_hi"))]
    policy = MLPolicy("TEDPolicy", augmentation_factor=0)
    policy.train(stories, domain)
    assert policy.classifier_ is not None and len(policy.classifier_.classes_) == 2
    assert _assert_same_as_sklearn(policy, domain, stories) > 0
