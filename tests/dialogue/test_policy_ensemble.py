"""The policy ensemble: config mapping, Rasa's tie-breaking, persistence as data only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.dialogue.domain import Domain
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.errors import InvalidConfig, TrainingError
from server.trackers.events import ActionExecutionRejected, ActiveLoop, LoopInterrupted
from tests.dialogue.policy_fixtures import action, bot, listen, replay, story, tracker, user

DOMAIN = Domain.from_dict(
    {
        "intents": ["greet", "affirm", "deny"],
        "responses": {
            name: [{"text": name}] for name in ("utter_greet", "utter_other", "utter_ok")
        },
    }
)


@pytest.mark.parametrize(
    "bot_name",
    ["moodbot", "formbot", "rules", "concertbot", "reminderbot", "initial-project-3.6.21"],
)
def test_real_bots_follow_their_stories_and_rules(bot_name: str) -> None:
    domain, stories, policies = bot(bot_name)
    ensemble = PolicyEnsemble.train(policies, stories, domain)
    for training in stories:
        pairs = replay(lambda t: ensemble.predict(t, domain).action_name, training, domain)
        assert all(gold == got for gold, got in pairs), (training.name, pairs)


def test_form_interruption_goes_back_to_the_form_without_validation() -> None:
    domain, stories, policies = bot("formbot")
    ensemble = PolicyEnsemble.train(policies, stories, domain)
    events = [
        listen(),
        user("request_restaurant"),
        action("restaurant_form"),
        ActiveLoop(name="restaurant_form"),
        listen(),
        user("stop"),
    ]
    form = ensemble.predict(tracker(domain, *events), domain)
    assert (form.action_name, form.policy_name) == ("restaurant_form", "RulePolicy")
    events += [ActionExecutionRejected(action_name="restaurant_form")]
    assert ensemble.predict(tracker(domain, *events), domain).action_name == "utter_ask_continue"
    events += [action("utter_ask_continue"), listen(), user("affirm")]
    back = ensemble.predict(tracker(domain, *events), domain)
    assert back.action_name == "restaurant_form"
    assert LoopInterrupted(is_interrupted=True) in back.events


def test_rules_beat_memoization_on_a_tie() -> None:
    stories = [
        story("rule", user("greet"), action("utter_greet"), is_rule=True),
        story("story", user("greet"), action("utter_other")),
    ]
    ensemble = PolicyEnsemble.train(
        [{"name": "MemoizationPolicy"}, {"name": "RulePolicy", "check_for_contradictions": False}],
        stories,
        DOMAIN,
    )
    prediction = ensemble.predict(tracker(DOMAIN, listen(), user("greet")), DOMAIN)
    assert (prediction.action_name, prediction.policy_name) == ("utter_greet", "RulePolicy")
    assert prediction.confidence == 1.0


def test_priorities_are_rasas_so_a_policy_given_five_beats_the_rules() -> None:
    # Rasa 3.6: RulePolicy 4, MemoizationPolicy 3, TEDPolicy 1. A policy given priority 5
    # wins a tie with the rules.
    stories = [
        story("rule", user("greet"), action("utter_greet"), is_rule=True),
        story("story", user("greet"), action("utter_other")),
    ]
    ensemble = PolicyEnsemble.train(
        [
            {"name": "MemoizationPolicy", "priority": 5},
            {"name": "RulePolicy", "check_for_contradictions": False},
        ],
        stories,
        DOMAIN,
    )
    assert [p.priority for p in ensemble.policies] == [5, 4]
    prediction = ensemble.predict(tracker(DOMAIN, listen(), user("greet")), DOMAIN)
    assert (prediction.action_name, prediction.policy_name) == ("utter_other", "MemoizationPolicy")
    defaults = PolicyEnsemble.from_config([{"name": "RulePolicy"}, {"name": "MemoizationPolicy"}])
    assert [p.priority for p in defaults.policies] == [4, 3]


def test_core_fallback_when_no_policy_is_confident() -> None:
    stories = [story("greet", user("greet"), action("utter_greet"))]
    ensemble = PolicyEnsemble.train(
        [{"name": "MemoizationPolicy"}, {"name": "RulePolicy"}], stories, DOMAIN
    )
    prediction = ensemble.predict(tracker(DOMAIN, listen(), user("deny")), DOMAIN)
    assert prediction.action_name == "action_default_fallback"
    assert prediction.confidence == pytest.approx(0.3)
    assert prediction.policy_name == "RulePolicy"


def test_a_confident_ml_policy_beats_the_fallback() -> None:
    stories = [
        story("a", user("greet"), action("utter_greet"), user("affirm"), action("utter_ok")),
        story("b", user("deny"), action("utter_other")),
    ]
    ensemble = PolicyEnsemble.train(
        [{"name": "TEDPolicy"}, {"name": "MemoizationPolicy"}, {"name": "RulePolicy"}],
        stories,
        DOMAIN,
    )
    events = [listen(), user("deny"), action("utter_other"), listen(), user("greet")]
    prediction = ensemble.predict(tracker(DOMAIN, *events), DOMAIN)
    assert (prediction.action_name, prediction.policy_name) == ("utter_greet", "TEDPolicy")
    assert prediction.confidence > 0.3


def test_a_rejected_action_is_not_predicted_again() -> None:
    stories = [story("greet", user("greet"), action("utter_greet"))]
    ensemble = PolicyEnsemble.train([{"name": "MemoizationPolicy"}], stories, DOMAIN)
    events = [listen(), user("greet"), ActionExecutionRejected(action_name="utter_greet")]
    assert ensemble.predict(tracker(DOMAIN, *events), DOMAIN).action_name != "utter_greet"


def test_a_rules_prediction_keeps_the_fallback_at_its_threshold() -> None:
    # As Rasa: the rule's action at 1.0 and the fallback at core_fallback_threshold in the
    # scores `/predict` shows; so when the rule's action is rejected, the fallback runs
    # (before, the rule policy then predicted nothing and memoization's 0 won: action_listen).
    stories = [story("rule", user("greet"), action("utter_greet"), is_rule=True)]
    ensemble = PolicyEnsemble.train(
        [{"name": "MemoizationPolicy"}, {"name": "RulePolicy"}], stories, DOMAIN
    )
    prediction = ensemble.predict(tracker(DOMAIN, listen(), user("greet")), DOMAIN)
    scores = dict(zip(DOMAIN.action_names_or_texts, prediction.probabilities, strict=True))
    assert scores["utter_greet"] == 1.0
    assert scores["action_default_fallback"] == pytest.approx(0.3)
    rejected = [listen(), user("greet"), ActionExecutionRejected(action_name="utter_greet")]
    prediction = ensemble.predict(tracker(DOMAIN, *rejected), DOMAIN)
    assert (prediction.action_name, prediction.confidence) == (
        "action_default_fallback",
        pytest.approx(0.3),
    )


def test_empty_policies_use_rasas_defaults() -> None:
    ensemble = PolicyEnsemble.train([], [story("g", user("greet"), action("utter_greet"))], DOMAIN)
    assert [p.name for p in ensemble.policies] == ["MemoizationPolicy", "RulePolicy", "TEDPolicy"]
    assert [p.priority for p in ensemble.policies] == [3, 4, 1]
    # TED mapped, UnexpecTEDIntentPolicy left out, a RulePolicy without rules
    assert len(ensemble.warnings) == 3


def test_unknown_policy_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidConfig, match="my_module.MyPolicy"):
        PolicyEnsemble.train([{"name": "my_module.MyPolicy"}], [], DOMAIN)


def test_persistence_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    domain, stories, _ = bot("formbot")
    config: list[dict[str, Any]] = [
        {"name": "TEDPolicy", "max_history": 5},
        {"name": "AugmentedMemoizationPolicy"},
        {"name": "RulePolicy", "core_fallback_threshold": 0.4},
    ]
    ensemble = PolicyEnsemble.train(config, stories, domain)
    ensemble.persist(tmp_path)
    loaded = PolicyEnsemble.load(tmp_path, domain)
    conversations = [
        [listen(), user("greet")],
        [listen(), user("request_restaurant")],
        [
            listen(),
            user("request_restaurant"),
            action("restaurant_form"),
            ActiveLoop(name="restaurant_form"),
            listen(),
            user("stop"),
            ActionExecutionRejected(action_name="restaurant_form"),
        ],
        [listen(), user("inform", cuisine="greek")],
        [listen(), user("chitchat"), action("utter_chitchat"), listen(), user("affirm")],
    ]
    for events in conversations:
        before = ensemble.predict(tracker(domain, *events), domain)
        after = loaded.predict(tracker(domain, *events), domain)
        assert before == after
    assert loaded.warnings == ensemble.warnings


def test_persisted_files_are_json_and_plain_arrays(tmp_path: Path) -> None:
    domain, stories, policies = bot("moodbot")
    PolicyEnsemble.train(policies, stories, domain).persist(tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".npy"}
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        else:
            array = np.load(path, allow_pickle=False)
            assert array.dtype != object
        assert b"pickle" not in path.read_bytes()


def test_prediction_is_fast() -> None:
    import time

    domain, stories, policies = bot("moodbot")
    ensemble = PolicyEnsemble.train(policies, stories, domain)
    conversation = tracker(
        domain, listen(), user("greet"), action("utter_greet"), listen(), user("mood_unhappy")
    )
    ensemble.predict(conversation, domain)
    started = time.thread_time()  # CPU seconds: the host's other work does not count
    for _ in range(100):
        ensemble.predict(conversation, domain)
    assert (time.thread_time() - started) / 100 < 0.005  # well under a millisecond


def test_use_nlu_confidence_as_score_gives_rules_and_memory_the_intents_confidence() -> None:
    # As Rasa's option of the memoization and rule policies (it used to be ignored): the
    # predicted action's confidence is the message's intent confidence, here 0.6 and 0.8.
    stories = [
        story("rule", user("greet"), action("utter_greet"), is_rule=True),
        story("story", user("affirm"), action("utter_ok")),
    ]
    ensemble = PolicyEnsemble.train(
        [
            {"name": "MemoizationPolicy", "use_nlu_confidence_as_score": True},
            {"name": "RulePolicy", "use_nlu_confidence_as_score": True},
        ],
        stories,
        DOMAIN,
    )

    def said(intent: str, confidence: float) -> tuple[str, str | None, float]:
        message = user(intent)
        message.parse_data["intent"]["confidence"] = confidence
        got = ensemble.predict(tracker(DOMAIN, listen(), message), DOMAIN)
        return got.action_name, got.policy_name, got.confidence

    assert said("greet", 0.6) == ("utter_greet", "RulePolicy", 0.6)
    assert said("greet", 0.8) == ("utter_greet", "RulePolicy", 0.8)
    assert said("affirm", 0.6) == ("utter_ok", "MemoizationPolicy", 0.6)


def test_forms_without_a_rule_policy_stop_training_as_in_rasa() -> None:
    # Without the RulePolicy no form ever runs its happy path: Rasa refuses to train.
    domain = Domain.from_dict(
        {
            "intents": ["greet"],
            "slots": {"c": {"type": "text", "mappings": [{"type": "from_text"}]}},
            "forms": {"f_form": {"required_slots": ["c"]}},
            "responses": {"utter_ask_c": [{"text": "c?"}]},
        }
    )
    with pytest.raises(TrainingError, match="have not added the 'RulePolicy'"):
        PolicyEnsemble.train([{"name": "MemoizationPolicy"}, {"name": "TEDPolicy"}], [], domain)


def test_rasas_warnings_on_the_policies_against_the_data() -> None:
    greet = story("g", user("greet"), action("utter_greet"))
    rule = story("r", user("affirm"), action("utter_ok"), is_rule=True)
    no_rules = PolicyEnsemble.train([{"name": "MemoizationPolicy"}], [greet, rule], DOMAIN)
    assert no_rules.warnings == [
        "'RulePolicy' is not included in the model's policy configuration. Default intents "
        "such as 'restart' and 'back' will not trigger actions 'action_restart' and "
        "'action_back'.",
        "Found rule-based training data but no policy supporting rule-based data. Please add "
        "`RulePolicy` or another rule-supporting policy to the `policies` section in "
        "`config.yml`.",
    ]
    same = [{"name": "MemoizationPolicy"}, {"name": "AugmentedMemoizationPolicy"}]
    shared = PolicyEnsemble.train([*same, {"name": "RulePolicy"}], [greet], DOMAIN)
    assert shared.warnings == [
        "Found policies MemoizationPolicy, AugmentedMemoizationPolicy with same priority 3 in "
        "PolicyEnsemble. When personalizing priorities, be sure to give all policies "
        "different priorities.",
        "Found a rule-based policy in your configuration but no rule-based training data. "
        "Please add rule-based stories to your training data or remove the rule-based policy "
        "(`RulePolicy`) from your configuration.",
    ]
    apart: list[dict[str, Any]] = [
        {"name": "MemoizationPolicy", "priority": 5},
        {"name": "RulePolicy"},
    ]
    assert PolicyEnsemble.train(apart, [greet, rule], DOMAIN).warnings == []
