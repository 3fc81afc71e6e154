"""RulePolicy: rules with conditions, conversation starts, forms, fallback, contradictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.dialogue.domain import Domain
from server.dialogue.policies.featurization import ConversationStates
from server.dialogue.policies.prediction import PolicyPrediction
from server.dialogue.policies.rule import RulePolicy
from server.dialogue.story_steps import TrainingStory
from server.errors import TrainingError
from server.trackers.events import (
    ActionExecutionRejected,
    ActiveLoop,
    Event,
    LoopInterrupted,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from tests.dialogue.policy_fixtures import (
    action,
    bot,
    listen,
    replay,
    story,
    tracker,
    user,
)


def conditioned_rule(name: str, intent: str, response: str, *condition: Event) -> TrainingStory:
    """A rule answering `intent` with `response` under `condition`."""
    return story(name, user(intent), action(response), is_rule=True, condition=list(condition))


def trained(bot_name: str, **options: Any) -> tuple[RulePolicy, Domain]:
    domain, stories, _ = bot(bot_name)
    policy = RulePolicy("RulePolicy", **options)
    policy.train(stories, domain)
    return policy, domain


def predict(policy: RulePolicy, domain: Domain, *events: Event) -> PolicyPrediction:
    return policy.predict(ConversationStates(tracker(domain, *events), domain), domain)


SIMPLE = Domain.from_dict(
    {
        "intents": ["greet", "goodbye", "ask", "inform"],
        "slots": {"vip": {"type": "bool", "mappings": [{"type": "custom"}]}},
        "responses": {
            "utter_greet": [{"text": "hi"}],
            "utter_bye": [{"text": "bye"}],
            "utter_vip": [{"text": "vip"}],
            "utter_other": [{"text": "other"}],
            "utter_welcome": [{"text": "welcome"}],
        },
    }
)


@pytest.mark.parametrize("bot_name", ["rules", "formbot", "moodbot", "concertbot", "reminderbot"])
def test_every_rule_step_is_predicted(bot_name: str) -> None:
    policy, domain = trained(bot_name)
    _, stories, _ = bot(bot_name)
    for rule in (s for s in stories if s.is_rule):
        pairs = replay(lambda t: predict(policy, domain, *t.events).action_name, rule, domain)
        assert pairs and all(gold == got for gold, got in pairs), (rule.name, pairs)


def test_conversation_start_rule_only_applies_at_the_start() -> None:
    policy, domain = trained("rules")
    start = predict(policy, domain, listen(), user("greet"))
    assert (start.action_name, start.confidence) == ("utter_greet", 1.0)
    later = predict(
        policy,
        domain,
        listen(),
        user("ask_possibilities"),
        action("utter_list_possibilities"),
        listen(),
        user("greet"),
    )
    assert later.action_name == "action_default_fallback"


def test_conditions_on_slots_choose_the_rule() -> None:
    policy, domain = trained("rules")
    simple = [SlotSet(key="detailed_faq", value=False), listen(), user("faq")]
    assert predict(policy, domain, *simple).action_name == "utter_faq"
    assert predict(policy, domain, *simple, action("utter_faq")).action_name == "action_listen"
    detailed = [SlotSet(key="detailed_faq", value=True), listen(), user("faq")]
    # wait_for_user_input: false lets the next rule continue without listening
    after_faq = predict(policy, domain, *detailed, action("utter_faq"))
    assert after_faq.action_name == "utter_ask_did_help"


def test_form_activation_happy_path_and_submission() -> None:
    policy, domain = trained("formbot")
    start = [listen(), user("request_restaurant")]
    assert predict(policy, domain, *start).action_name == "restaurant_form"
    active = [*start, action("restaurant_form"), ActiveLoop(name="restaurant_form")]
    after_form = predict(policy, domain, *active)
    assert after_form.action_name == "action_listen"
    assert after_form.is_no_user_prediction
    answered = [*active, listen(), user("inform", cuisine="greek")]
    back_to_form = predict(policy, domain, *answered)
    assert back_to_form.action_name == "restaurant_form"
    assert back_to_form.is_no_user_prediction
    done = [*answered, action("restaurant_form"), ActiveLoop(name=None)]
    assert predict(policy, domain, *done).action_name == "utter_submit"
    submitted = [*done, action("utter_submit")]
    assert predict(policy, domain, *submitted).action_name == "utter_slots_values"


def test_rejected_loop_leaves_the_unhappy_path_to_rules() -> None:
    policy, domain = trained("rules")
    active = [
        listen(),
        user("activate_q_form"),
        action("loop_q_form"),
        ActiveLoop(name="loop_q_form"),
        SlotSet(key="requested_slot", value="some_slot"),
    ]
    explain = [*active, listen(), user("explain")]
    assert predict(policy, domain, *explain).action_name == "loop_q_form"
    rejected = [*explain, ActionExecutionRejected(action_name="loop_q_form")]
    assert predict(policy, domain, *rejected).action_name == "utter_explain_some_slot"
    explained = [*rejected, action("utter_explain_some_slot")]
    assert predict(policy, domain, *explained).action_name == "loop_q_form"


def test_general_rule_inside_a_loop_returns_to_the_loop() -> None:
    policy, domain = trained("rules")
    asked = [
        listen(),
        user("activate_q_form"),
        action("loop_q_form"),
        ActiveLoop(name="loop_q_form"),
        listen(),
        user("ask_possibilities"),
        ActionExecutionRejected(action_name="loop_q_form"),
    ]
    assert predict(policy, domain, *asked).action_name == "utter_list_possibilities"
    listed = [*asked, action("utter_list_possibilities")]
    # the FAQ rule would listen; inside the loop the loop comes back instead
    assert predict(policy, domain, *listed).action_name == "loop_q_form"


def test_returning_from_an_unhappy_path_skips_validation() -> None:
    policy, domain = trained("formbot")
    events = [
        listen(),
        user("request_restaurant"),
        action("restaurant_form"),
        ActiveLoop(name="restaurant_form"),
        listen(),
        user("stop"),
        ActionExecutionRejected(action_name="restaurant_form"),
        action("utter_ask_continue"),
        listen(),
        user("affirm"),
    ]
    # the loop is still rejected: the stories decide (see the ensemble tests), but the rule
    # policy tells the form, whoever predicts it, not to validate this answer
    prediction = predict(policy, domain, *events)
    assert prediction.events == [LoopInterrupted(is_interrupted=True)]


def test_core_fallback_when_no_rule_applies() -> None:
    policy, domain = trained("rules")
    prediction = predict(policy, domain, listen(), user("inform"))
    assert prediction.action_name == "action_default_fallback"
    assert prediction.confidence == pytest.approx(0.3)


def test_fallback_options() -> None:
    rules = [story("greet", user("greet"), action("utter_greet"), is_rule=True)]
    custom = RulePolicy(
        "RulePolicy", core_fallback_threshold=0.6, core_fallback_action_name="utter_other"
    )
    custom.train(rules, SIMPLE)
    got = predict(custom, SIMPLE, listen(), user("ask"))
    assert (got.action_name, got.confidence) == ("utter_other", pytest.approx(0.6))
    off = RulePolicy("RulePolicy", enable_fallback_prediction=False)
    off.train(rules, SIMPLE)
    got = predict(off, SIMPLE, listen(), user("ask"))
    assert got.confidence == 0.0 and max(got.probabilities) == 0.0


def test_default_rules_on_default_intents() -> None:
    policy, domain = trained("moodbot")
    assert predict(policy, domain, listen(), user("restart")).action_name == "action_restart"
    assert predict(policy, domain, listen(), user("back")).action_name == "action_back"
    assert (
        predict(policy, domain, listen(), user("session_start")).action_name
        == "action_session_start"
    )


def test_nlu_fallback_triggers_the_users_rule() -> None:
    policy, domain = trained("rules")
    got = predict(policy, domain, listen(), user("nlu_fallback"))
    assert got.action_name == "action_two_stage_fallback"


def test_contradicting_rules_fail_training_and_name_them() -> None:
    rules = [
        story("greet back", user("greet"), action("utter_greet"), is_rule=True),
        story("greet bye", user("greet"), action("utter_bye"), is_rule=True),
    ]
    with pytest.raises(TrainingError) as info:
        RulePolicy("RulePolicy").train(rules, SIMPLE)
    assert "greet back" in str(info.value) and "greet bye" in str(info.value)


def test_story_contradicting_a_rule_fails_training() -> None:
    stories = [
        story("greet rule", user("greet"), action("utter_greet"), is_rule=True),
        story("greet story", user("greet"), action("utter_other")),
    ]
    with pytest.raises(TrainingError, match="story 'greet story'.*'greet rule'"):
        RulePolicy("RulePolicy").train(stories, SIMPLE)
    RulePolicy("RulePolicy", check_for_contradictions=False).train(stories, SIMPLE)


def test_rule_that_listens_contradicts_a_story_going_on_unless_it_does_not_wait() -> None:
    going_on = story(
        "greet then welcome", user("greet"), action("utter_greet"), action("utter_welcome")
    )
    listening = story("greet rule", user("greet"), action("utter_greet"), is_rule=True)
    with pytest.raises(TrainingError, match="predicted action 'action_listen'"):
        RulePolicy("RulePolicy").train([listening, going_on], SIMPLE)
    not_waiting = story(
        "greet rule",
        user("greet"),
        action("utter_greet"),
        is_rule=True,
        wait_for_user_input=False,
    )
    policy = RulePolicy("RulePolicy")
    policy.train([not_waiting, going_on], SIMPLE)
    got = predict(policy, SIMPLE, listen(), user("greet"), action("utter_greet"))
    assert got.action_name == "action_default_fallback"


def test_rules_with_two_user_messages_are_restricted() -> None:
    long_rule = story(
        "two turns",
        user("greet"),
        action("utter_greet"),
        user("goodbye"),
        action("utter_bye"),
        is_rule=True,
    )
    with pytest.raises(TrainingError, match="two turns"):
        RulePolicy("RulePolicy").train([long_rule], SIMPLE)
    RulePolicy("RulePolicy", restrict_rules=False).train([long_rule], SIMPLE)


def test_condition_with_null_slot_requires_it_unset() -> None:
    rules = [
        conditioned_rule("vip", "greet", "utter_vip", SlotSet(key="vip", value=True)),
        conditioned_rule("not vip", "greet", "utter_greet", SlotSet(key="vip", value=None)),
    ]
    policy = RulePolicy("RulePolicy")
    policy.train(rules, SIMPLE)
    assert predict(policy, SIMPLE, listen(), user("greet")).action_name == "utter_greet"
    vip = [SlotSet(key="vip", value=True), listen(), user("greet")]
    assert predict(policy, SIMPLE, *vip).action_name == "utter_vip"


def check_then_other(*events: Event) -> Any:
    """A rule going on after `action_check_vip` with `events` in between."""
    return story(
        "check then other",
        user("inform"),
        action("action_check_vip"),
        *events,
        action("utter_other"),
        is_rule=True,
    )


def vip_check_rule() -> tuple[TrainingStory, Domain]:
    """A rule in which `action_check_vip` sets `vip`, and its domain."""
    sets_vip = story(
        "check sets vip",
        user("ask"),
        action("action_check_vip"),
        SlotSet(key="vip", value=True),
        action("utter_vip"),
        is_rule=True,
    )
    return sets_vip, Domain.from_dict({**SIMPLE.as_dict(), "actions": ["action_check_vip"]})


def test_a_rule_leaving_out_the_slots_its_action_sets_elsewhere_fails_training() -> None:
    # `action_check_vip` sets `vip` in one rule; another rule goes on after it without
    # saying what `vip` is: Rasa refuses to train such incomplete rules, naming them.
    sets_vip, domain = vip_check_rule()
    with pytest.raises(TrainingError) as info:
        RulePolicy("RulePolicy").train([sets_vip, check_then_other()], domain)
    assert (
        "- the action 'action_check_vip' in rule 'check then other' does not set some of the "
        "slots that it sets in other rules. Slots not set in rule 'check then other': 'vip'."
    ) in str(info.value)
    # Naming the slot, `null` included, completes the rule.
    complete = check_then_other(SlotSet(key="vip", value=None))
    RulePolicy("RulePolicy").train([sets_vip, complete], domain)


def test_a_rules_turn_no_story_has_is_marked_hide_rule_turn() -> None:
    # As Rasa's RULES_NOT_IN_STORIES: before, every RulePolicy prediction had
    # hide_rule_turn false, so a tracker's readers could not tell a rule's own turns.
    rules = [
        story("greet", user("greet"), action("utter_greet"), is_rule=True),
        story("goodbye", user("goodbye"), action("utter_bye"), is_rule=True),
    ]
    stories = [story("hello", user("greet"), action("utter_greet"))]
    policy = RulePolicy("RulePolicy")
    policy.train([*rules, *stories], SIMPLE)
    loaded = RulePolicy("RulePolicy")
    loaded.restore(policy.learned_state(), Path("."), SIMPLE)
    for trained_policy in (policy, loaded):
        greet = predict(trained_policy, SIMPLE, listen(), user("greet"))
        bye = predict(trained_policy, SIMPLE, listen(), user("goodbye"))
        assert (greet.action_name, greet.hide_rule_turn) == ("utter_greet", False)
        assert (bye.action_name, bye.hide_rule_turn) == ("utter_bye", True)
        restart = predict(trained_policy, SIMPLE, listen(), user("restart"))
        assert (restart.action_name, restart.hide_rule_turn) == ("action_restart", True)
        nothing = predict(trained_policy, SIMPLE, listen(), user("inform"))
        assert not nothing.hide_rule_turn  # the fallback is no rule's turn


def test_without_check_for_contradictions_incomplete_rules_train_as_in_rasa() -> None:
    # Rasa checks rules for completeness only with `check_for_contradictions` (the
    # default): turned off, the rules train (they used to fail training here).
    sets_vip, domain = vip_check_rule()
    policy = RulePolicy("RulePolicy", check_for_contradictions=False)
    policy.train([sets_vip, check_then_other()], domain)
    assert predict(policy, domain, listen(), user("ask")).action_name == "action_check_vip"


def test_a_fallback_action_the_domain_lacks_fails_training_even_when_disabled() -> None:
    # As Rasa: the name is checked against the domain whatever enable_fallback_prediction.
    policy = RulePolicy(
        "RulePolicy", core_fallback_action_name="action_nope", enable_fallback_prediction=False
    )
    with pytest.raises(TrainingError, match="action_nope"):
        policy.train([], SIMPLE)


def test_slots_only_rules_mention_are_found_with_check_for_contradictions_only() -> None:
    rules = [
        story("vip", SlotSet(key="vip", value=True), user("ask"), action("utter_vip"), is_rule=True)
    ]
    checked = RulePolicy("RulePolicy")
    checked.train(rules, SIMPLE)
    assert checked.rule_only_.slots == {"vip"}
    unchecked = RulePolicy("RulePolicy", check_for_contradictions=False)
    unchecked.train(rules, SIMPLE)
    assert not unchecked.rule_only_.slots


def test_a_rule_naming_the_messages_text_overrules_a_default_intent() -> None:
    # As Rasa: "start over" classified as `restart` follows the rule written for that
    # text (before, action_restart overruled it, as it does the intent-only rules).
    domain = Domain.from_dict({**SIMPLE.as_dict(), "intents": [*SIMPLE.intents, "restart"]})
    said = UserUttered(text="start over", parse_data={})
    rule = story("text", said, action("utter_other"), is_rule=True)
    policy = RulePolicy("RulePolicy")
    policy.train([rule], domain)
    message = user("restart", text="start over")
    assert predict(policy, domain, listen(), message).action_name == "utter_other"
    other = user("restart", text="please restart")
    assert predict(policy, domain, listen(), other).action_name == "action_restart"


def test_a_story_going_on_after_a_rules_own_listen_contradicts_it_as_in_rasa() -> None:
    # A rule that only says "listen after utter_greet", and a story going on after
    # utter_greet: Rasa refuses to train (before, the rule was quietly dropped).
    after_greet = story("after greet", action("utter_greet"), is_rule=True)
    going_on = story(
        "greet then welcome", user("greet"), action("utter_greet"), action("utter_welcome")
    )
    with pytest.raises(TrainingError, match="'greet then welcome' is contradicting"):
        RulePolicy("RulePolicy").train([after_greet, going_on], SIMPLE)


def test_a_condition_on_a_slot_that_does_not_influence_the_conversation_is_named() -> None:
    # As in Rasa, such a slot is in no state, so the condition holds whatever its value:
    # the rule below greets every user by name. Training says so (Rasa says nothing).
    domain = Domain.from_dict(
        {
            **SIMPLE.as_dict(),
            "slots": {
                "name": {
                    "type": "text",
                    "influence_conversation": False,
                    "mappings": [{"type": "custom"}],
                },
                "notes": {"type": "any", "mappings": [{"type": "custom"}]},
                "vip": {"type": "bool", "mappings": [{"type": "custom"}]},
            },
        }
    )
    named = conditioned_rule(
        "greet by name",
        "greet",
        "utter_greet",
        SlotSet(key="name", value="bob"),
        SlotSet(key="vip", value=True),
    )
    noted = conditioned_rule("noted", "ask", "utter_other", SlotSet(key="notes", value=None))
    policy = RulePolicy("RulePolicy")
    policy.train([named, noted], domain)
    vip = SlotSet(key="vip", value=True)
    assert predict(policy, domain, vip, listen(), user("greet")).action_name == "utter_greet"
    warnings = [w for w in policy.warnings if "influence" in w]
    assert warnings == [
        "RulePolicy: these rules' conditions name slots that do not influence the "
        "conversation (influence_conversation: false, or type any; requested_slot unless "
        "the domain declares it with influence_conversation: true), so the rules apply "
        "whatever the slots hold: 'greet by name' (slot 'name'), 'noted' (slot 'notes')"
    ]


def test_contradicting_rules_say_when_a_condition_names_a_slot_policies_never_see() -> None:
    domain = Domain.from_dict(
        {
            **SIMPLE.as_dict(),
            "slots": {"name": {"type": "text", "influence_conversation": False, "mappings": []}},
        }
    )
    rules = [
        story("greet", user("greet"), action("utter_greet"), is_rule=True),
        conditioned_rule("greet bob", "greet", "utter_vip", SlotSet(key="name", value="bob")),
    ]
    with pytest.raises(TrainingError) as raised:
        RulePolicy("RulePolicy").train(rules, domain)
    message = str(raised.value)
    assert "contradicting with rule(s) 'greet'" in message
    assert message.endswith("whatever the slots hold: 'greet bob' (slot 'name').")


# A categorical slot of five values, and a menu to ask after.
TIERED = Domain.from_dict(
    {
        **SIMPLE.as_dict(),
        "intents": ["ask", "menu"],
        "slots": {
            "tier": {
                "type": "categorical",
                "values": ["gold", "silver", "bronze", "iron", "wood"],
                "mappings": [{"type": "custom"}],
            }
        },
        "responses": {
            **SIMPLE.as_dict()["responses"],
            "utter_menu": [{"text": "menu"}],
            "utter_gold": [{"text": "gold"}],
            "utter_after_menu": [{"text": "after menu"}],
        },
    }
)


def test_of_two_rules_that_apply_the_one_rasa_reads_as_longer_wins() -> None:
    # Rasa takes the rule whose key, in its own text (slots as feature lists, a categorical
    # slot one number per value and `__other__`), is the longest. A condition on a
    # categorical slot of five values outweighs an action before the message there.
    domain = TIERED
    gold = SlotSet(key="tier", value="gold")
    assert asked_after(domain, "menu", "utter_menu", gold, "utter_gold", "utter_after_menu") == (
        "utter_after_menu",
        "utter_gold",
    )


def asked_after(
    domain: Domain, opener: str, before: str, condition: SlotSet, conditioned: str, after: str
) -> tuple[str, str]:
    """The actions predicted for `ask` after `before` (the answer to `opener`), without and
    with `condition`, under three rules: `opener` -> `before`; `ask` -> `conditioned` under
    `condition`; `before`, `ask` -> `after`."""
    rules = [
        story("opener", user(opener), action(before), is_rule=True),
        conditioned_rule("conditioned", "ask", conditioned, condition),
        story("asked after", action(before), user("ask"), action(after), is_rule=True),
    ]
    policy = RulePolicy("RulePolicy")
    policy.train(rules, domain)
    events = [listen(), user(opener), action(before), listen(), user("ask")]
    without = predict(policy, domain, *events).action_name
    return without, predict(policy, domain, condition, *events).action_name


def test_a_float_condition_counts_as_rasa_writes_it_two_numbers() -> None:
    # Rasa's key holds a float slot as [1.0, <value>] (set, then where in its range): five
    # characters more than the value alone, so here the condition outweighs the action
    # before the message (127 against 126 characters in Rasa's key).
    domain = Domain.from_dict(
        {
            **SIMPLE.as_dict(),
            "slots": {
                "room_temperature_level": {"type": "float", "mappings": [{"type": "custom"}]}
            },
            "responses": {
                **SIMPLE.as_dict()["responses"],
                "utter_back": [{"text": "back"}],
                "utter_warm": [{"text": "warm"}],
                "utter_after_back": [{"text": "after back"}],
            },
        }
    )
    level = SlotSet(key="room_temperature_level", value=0.5)
    assert asked_after(domain, "greet", "utter_back", level, "utter_warm", "utter_after_back") == (
        "utter_after_back",
        "utter_warm",
    )


def test_contradicting_rules_on_an_undeclared_requested_slot_say_it_is_not_read() -> None:
    # Rasa's docs answer "why do you need that?" by what the form asks, with rules
    # conditioned on requested_slot, which policies read only when the domain declares it
    # (influence_conversation: true). Left out, both rules apply to every question: the
    # contradiction says why, and one such rule alone is a warning.
    def domain(requested_slot: dict[str, Any] | None) -> Domain:
        return Domain.from_dict(
            {
                **SIMPLE.as_dict(),
                "intents": ["explain", "inform"],
                "slots": {
                    "email": {"type": "text", "mappings": [{"type": "custom"}]},
                    "frequency": {"type": "text", "mappings": [{"type": "custom"}]},
                    **({"requested_slot": requested_slot} if requested_slot else {}),
                },
                "forms": {"newsletter_form": {"required_slots": ["email", "frequency"]}},
                "responses": {
                    **SIMPLE.as_dict()["responses"],
                    "utter_explain_email": [{"text": "to send it"}],
                    "utter_explain_frequency": [{"text": "to send it that often"}],
                },
            }
        )

    def explain(slot: str) -> TrainingStory:
        return story(
            f"explain {slot}",
            user("explain"),
            action(f"utter_explain_{slot}"),
            action("newsletter_form"),
            ActiveLoop(name="newsletter_form"),
            is_rule=True,
            condition=[
                ActiveLoop(name="newsletter_form"),
                SlotSet(key="requested_slot", value=slot),
            ],
        )

    with pytest.raises(TrainingError) as raised:
        RulePolicy("RulePolicy").train([explain("email"), explain("frequency")], domain(None))
    assert str(raised.value).endswith(
        "whatever the slots hold: 'explain email' (slot 'requested_slot'), "
        "'explain frequency' (slot 'requested_slot')."
    )
    alone = RulePolicy("RulePolicy")
    alone.train([explain("email")], domain(None))
    assert any("'explain email' (slot 'requested_slot')" in w for w in alone.warnings)
    declared = domain(
        {
            "type": "categorical",
            "values": ["email", "frequency"],
            "influence_conversation": True,
            "mappings": [{"type": "custom"}],
        }
    )
    policy = RulePolicy("RulePolicy")
    policy.train([explain("email"), explain("frequency")], declared)
    assert not [w for w in policy.warnings if "influence" in w]


def test_a_conversation_start_rule_applies_in_a_new_session_with_slots_carried_over() -> None:
    # As Rasa 3.6: a session start drops the events before it, so the new session's first
    # state holds only the carried-over slots and no previous action, and a state without a
    # previous action is a conversation start whatever slots it holds (Rasa's
    # `_is_rule_applicable`: "any slots with initial_value set will necessarily be in both").
    policy, domain = trained("rules")
    old_session = [listen(), user("faq"), action("utter_faq"), listen()]
    carried = SlotSet(key="detailed_faq", value=True)
    new_session = [
        *old_session,
        action("action_session_start"),
        SessionStarted(),
        carried,
        listen(),
        user("greet"),
    ]
    assert predict(policy, domain, *new_session).action_name == "utter_greet"
    same_session = [*old_session, carried, user("greet")]
    assert predict(policy, domain, *same_session).action_name == "action_default_fallback"


def test_a_rules_listen_a_story_goes_on_from_is_dropped_and_the_other_rules_still_rank() -> None:
    # "listen after the menu" while a story goes on after it and another rule goes on from
    # the same state (gold members hear the gold offer): the listen is dropped, as in Rasa,
    # and of the rules left, the one Rasa reads as longest is still followed.
    domain = TIERED
    gold = SlotSet(key="tier", value="gold")
    rules = [
        story("menu", user("menu"), action("utter_menu"), is_rule=True, wait_for_user_input=False),
        story("listen after the menu", action("utter_menu"), is_rule=True),
        story(
            "gold offer after the menu",
            action("utter_menu"),
            action("utter_gold"),
            is_rule=True,
            condition=[gold],
            wait_for_user_input=False,
        ),
        conditioned_rule("gold asks", "ask", "utter_gold", gold),
        story(
            "asked after the menu",
            action("utter_menu"),
            user("ask"),
            action("utter_after_menu"),
            is_rule=True,
        ),
    ]
    going_on = story(
        "menu then welcome", user("menu"), action("utter_menu"), action("utter_welcome")
    )
    policy = RulePolicy("RulePolicy")
    policy.train([*rules, going_on], domain)
    menu = [listen(), user("menu"), action("utter_menu")]
    assert predict(policy, domain, *menu).action_name == "action_default_fallback"
    assert predict(policy, domain, gold, *menu).action_name == "utter_gold"
    asked = [*menu, listen(), user("ask")]
    assert predict(policy, domain, *asked).action_name == "utter_after_menu"
    assert predict(policy, domain, gold, *asked).action_name == "utter_gold"


FORM = Domain.from_dict(
    {
        "intents": ["request", "inform", "bye", "restart"],
        "slots": {"cuisine": {"type": "text", "mappings": [{"type": "from_text"}]}},
        "forms": {"f_form": {"required_slots": ["cuisine"]}},
        "responses": {
            "utter_ask_cuisine": [{"text": "which?"}],
            "utter_done": [{"text": "done"}],
            "utter_other": [{"text": "other"}],
        },
    }
)
ACTIVATE = story(
    "activate", user("request"), action("f_form"), ActiveLoop(name="f_form"), is_rule=True
)


def test_a_story_going_on_while_a_form_asks_contradicts_the_forms_happy_path() -> None:
    # The form asked and listens: a story saying otherwise is never followed. Rasa names
    # the form's own rule; we used to train it without a word.
    going_on = story(
        "no listen",
        user("request"),
        action("f_form"),
        ActiveLoop(name="f_form"),
        action("utter_other"),
    )
    with pytest.raises(TrainingError) as info:
        RulePolicy("RulePolicy").train([ACTIVATE, going_on], FORM)
    assert (
        "- the prediction of the action 'utter_other' in story 'no listen' is contradicting "
        "with rule(s) 'handling active loops and forms - f_form - action_listen' which "
        "predicted action 'action_listen'."
    ) in str(info.value)


def test_a_story_answering_restart_otherwise_contradicts_a_rule_that_restarts() -> None:
    restarts = story("restart", user("restart"), action("action_restart"), is_rule=True)
    otherwise = story("no restart", user("restart"), action("utter_other"))
    with pytest.raises(TrainingError) as info:
        RulePolicy("RulePolicy").train([restarts, otherwise], FORM)
    assert (
        "- the prediction of the action 'utter_other' in story 'no restart' is contradicting "
        "with rule(s) 'predicting default action with intent restart' which predicted action "
        "'action_restart'."
    ) in str(info.value)
    # As Rasa, without a rule taking the default action the story is not checked.
    RulePolicy("RulePolicy").train([otherwise], FORM)


def test_a_story_whose_form_takes_an_answer_a_rule_handles_in_the_form_trains() -> None:
    # The form runs first and takes "bye" as its answer: no contradiction with the rule
    # for when it does not (training used to fail, naming the rule).
    bye_in_form = story(
        "bye in form",
        user("bye"),
        action("utter_other"),
        action("f_form"),
        ActiveLoop(name="f_form"),
        is_rule=True,
        condition=[ActiveLoop(name="f_form")],
    )
    policy = RulePolicy("RulePolicy")
    policy.train([ACTIVATE, bye_in_form, _form_taking("bye")], FORM)
    asked = [listen(), user("request"), action("f_form"), ActiveLoop(name="f_form"), listen()]
    assert predict(policy, FORM, *asked, user("bye")).action_name == "f_form"
    rejected = [*asked, user("bye"), ActionExecutionRejected(action_name="f_form")]
    assert predict(policy, FORM, *rejected).action_name == "utter_other"


def test_a_story_whose_form_takes_a_default_intent_as_its_answer_trains() -> None:
    # As Rasa, a form's happy path reads as one run: the answer it takes is no turn of its
    # own, so a rule restarting on `restart` does not contradict the form taking `restart`
    # as an answer (training failed, naming Rasa's default action behaviour).
    restarts = story("restart", user("restart"), action("action_restart"), is_rule=True)
    RulePolicy("RulePolicy").train([ACTIVATE, restarts, _form_taking("restart")], FORM)


def _form_taking(answer: str) -> TrainingStory:
    """A story whose form takes `answer` as its only slot's value, then is done."""
    return story(
        f"form takes {answer}",
        user("request"),
        action("f_form"),
        ActiveLoop(name="f_form"),
        user(answer),
        action("f_form"),
        ActiveLoop(name=None),
        action("utter_done"),
    )
