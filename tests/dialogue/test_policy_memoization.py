"""MemoizationPolicy and AugmentedMemoizationPolicy replay stories' exact histories."""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from server.dialogue.domain import Domain
from server.dialogue.policies import featurization, histories, memoization
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.policies.featurization import (
    NO_RULE_ONLY,
    ConversationStates,
    RuleOnly,
    cut_story_states,
    state_key,
    states_and_labels,
    story_states,
)
from server.dialogue.policies.histories import MAX_LOOKUP_STATES, MAX_NODES
from server.dialogue.policies.memoization import AugmentedMemoizationPolicy, MemoizationPolicy
from server.dialogue.policies.policy import Policy
from server.dialogue.story_steps import TrainingStory
from server.errors import ModelError, TrainingError
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    ActionExecutionRejected,
    ActiveLoop,
    AllSlotsReset,
    BotUttered,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    Event,
    FollowupAction,
    SlotSet,
    UserUttered,
)
from server.trackers.tracker import Tracker
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
from tests.traced_peak import traced_peak

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


LOOKUPS = Path(__file__).parent / "memoization_lookups"


def lookup_as_before(
    stories: list[TrainingStory], domain: Domain, max_history: int | None
) -> dict[str, str]:
    """The lookup archives held before: the JSON text of each history's states (its last
    `max_history`) -> the action after it, histories leading to two actions left out."""
    lookup: dict[str, str] = {}
    ambiguous: set[str] = set()
    for story_ in (s for s in stories if not s.is_rule):
        states, labels = states_and_labels(story_.events, domain)
        for i, label in enumerate(labels):
            key = state_key(states[max(0, i + 1 - max_history) if max_history else 0 : i + 1])
            if key in ambiguous:
                continue
            if lookup.setdefault(key, label) != label:
                ambiguous.add(key)
                del lookup[key]
    return lookup


def every_prediction(policy: Policy, domain: Domain, stories: list[TrainingStory]) -> list:
    """(action, confidence, by text) at every action of every story, and of every story
    without its first turn."""
    out = []
    for story_ in (s for s in stories if not s.is_rule):
        for events in (story_.events, story_.events[3:]):
            for i in range(1, len(events)):
                if isinstance(events[i], ActionExecuted):
                    t = Tracker("t", domain.slot_defaults(), events[:i])
                    p = policy.predict(ConversationStates(t, domain), domain)
                    out.append((p.action_name, p.confidence, p.is_end_to_end_prediction))
    return out


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
    restored.restore({"lookup": lookup_as_before([longer], DOMAIN, None)}, Path("."), DOMAIN)
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


@pytest.mark.parametrize("bot_name", ["moodbot", "formbot", "concertbot", "e2ebot"])
@pytest.mark.parametrize(
    "policy_class, max_history",
    [(MemoizationPolicy, None), (MemoizationPolicy, 3), (AugmentedMemoizationPolicy, 5)],
)
def test_learned_histories_predict_as_the_lookup_of_before(
    bot_name: str, policy_class: type, max_history: int | None
) -> None:
    # The same actions, with the same confidence, as from the lookup archives held before
    # (read here as such an archive is), with the same window for the ensemble's memory.
    domain, stories, _ = bot(bot_name)
    trained = policy_class(policy_class.__name__, max_history=max_history)
    trained.train(stories, domain)
    before = policy_class(policy_class.__name__, max_history=max_history)
    lookup = lookup_as_before(stories, domain, max_history)
    before.restore({"lookup": lookup}, Path("."), domain)
    assert every_prediction(trained, domain, stories) == every_prediction(before, domain, stories)
    assert trained.prediction_window() == before.prediction_window()
    assert trained.reads_message_text() == before.reads_message_text() == (bot_name == "e2ebot")


@pytest.mark.parametrize(
    "file, bot_name", [("e2ebot-memoization.json", "e2ebot"), ("moodbot-augmented.json", "moodbot")]
)
def test_a_policy_written_with_a_lookup_loads_and_predicts_as_trained_today(
    file: str, bot_name: str, tmp_path: Path
) -> None:
    # Written by the botserver before the histories (a key per history): read, and the
    # same predictions as a policy trained today; written again in today's form.
    domain, stories, _ = bot(bot_name)
    (tmp_path / "policy.json").write_bytes((LOOKUPS / file).read_bytes())
    policy_class = AugmentedMemoizationPolicy if "augmented" in file else MemoizationPolicy
    loaded = policy_class.load(tmp_path, policy_class.__name__, 3, domain)
    trained = policy_class(policy_class.__name__)
    trained.train(stories, domain)
    predictions = every_prediction(loaded, domain, stories)
    assert sum(confidence == 1.0 for _, confidence, _ in predictions) > 10
    assert predictions == every_prediction(trained, domain, stories)
    assert loaded.learned_state() == trained.learned_state()


def written(policy: Policy, tmp_path: Path) -> dict:
    policy.persist(tmp_path)
    return json.loads((tmp_path / "policy.json").read_text())


def test_a_written_policy_holds_no_key_per_history_and_loads_the_same(tmp_path: Path) -> None:
    domain, stories, _ = bot("e2ebot")
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train(stories, domain)
    state = written(policy, tmp_path)["learned"]
    # null: a botserver reading only the lookup refuses the archive instead of forgetting
    assert state["lookup"] is None
    loaded = MemoizationPolicy.load(tmp_path, "MemoizationPolicy", 3, domain)
    assert every_prediction(loaded, domain, stories) == every_prediction(policy, domain, stories)


def _chain(length: int) -> dict:
    return {
        "states": ["{}"],
        "parents": list(range(length)),
        "node_states": [0] * length,
        "actions": [[length, "utter_greet"]],
    }


@pytest.mark.parametrize(
    "histories, says",
    [
        ([], "it is not an object"),
        ({**_chain(3), "states": "{}"}, "it has no list 'states'"),
        ({**_chain(3), "parents": [0, True, 2]}, "an entry of 'parents' is not an integer"),
        ({**_chain(3), "parents": [0, 1]}, "there are not as many 'parents' as 'node_states'"),
        ({**_chain(3), "parents": [0, 2, 1]}, "node 2 has parent 2, not an earlier node"),
        ({**_chain(3), "parents": [0, -1, 1]}, "node 2 has parent -1, not an earlier node"),
        ({**_chain(3), "node_states": [0, 1, 0]}, "node 2 has state 1, not one of the states"),
        ({**_chain(3), "parents": [0, 0, 0]}, "node 2 repeats node 1"),
        (
            {**_chain(3), "actions": [[4, "utter_greet"]]},
            "an action for node 4: no such node, or out of order",
        ),
        (
            {**_chain(3), "actions": [[2, "a"], [1, "b"]]},
            "an action for node 1: no such node, or out of order",
        ),
        ({**_chain(3), "actions": [[2, 3]]}, "an action is not [node, name]"),
        ({**_chain(3), "actions": [[2]]}, "an action is not [node, name]"),
    ],
)
def test_malformed_histories_fail_loading_saying_what_is_wrong(
    histories: object, says: str
) -> None:
    policy = MemoizationPolicy("MemoizationPolicy")
    # One sentence: what is malformed, then what is wrong with it.
    with pytest.raises(ModelError) as caught:
        policy.restore({"histories": histories}, Path("."), DOMAIN)
    assert str(caught.value) == f"the memoized histories of policy.json are malformed: {says}"


@pytest.mark.parametrize(
    "lookup",
    [[], {"[{}]": 3}, {"[" * 100_000: "utter_greet"}, {"{}": "utter_greet"}],
    ids=["not-an-object", "action-not-text", "nested-too-deeply", "not-a-list"],
)
def test_a_malformed_lookup_of_before_fails_loading(lookup: object) -> None:
    with pytest.raises(ModelError, match="memoization lookup"):
        MemoizationPolicy("MemoizationPolicy").restore({"lookup": lookup}, Path("."), DOMAIN)


def test_a_history_of_100000_states_loads_without_recursion() -> None:
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.restore({"histories": _chain(100_000)}, Path("."), DOMAIN)
    assert policy.prediction_window() == 100_001
    assert policy.histories_.action_of(("{}",) * 100_000) == "utter_greet"
    assert policy.histories_.action_of(("{}",) * 99_999) is None


def test_loading_histories_takes_a_few_numbers_a_node_at_its_peak() -> None:
    # A policy.json lists each node in a few bytes; loading it once held each node's edge,
    # then its parent's list of children, about 400 bytes a node (37 times the file).
    nodes = 200_000
    policy = MemoizationPolicy("MemoizationPolicy")
    peak = traced_peak(lambda: policy.restore({"histories": _chain(nodes)}, Path("."), DOMAIN))
    assert peak < 150 * nodes
    assert policy.histories_.action_of(("{}",) * nodes) == "utter_greet"


TOO_MANY = (
    f"the memoized histories hold more than {MAX_NODES:,} distinct histories, the most a "
    "memoization policy may hold"
)


def refusal(state: dict) -> tuple[str, int]:
    """The error loading this learned state fails with, and Python's peak while it did."""
    errors: list[ModelError] = []

    def load() -> None:
        with pytest.raises(ModelError) as caught:
            MemoizationPolicy("MemoizationPolicy").restore(state, Path("."), DOMAIN)
        errors.append(caught.value)

    peak = traced_peak(load)
    return str(errors[0]), peak


def test_an_old_lookup_key_of_a_million_states_is_refused_before_it_is_parsed() -> None:
    # 3 bytes a state (gzip packs them about 1000:1) took some 100 bytes of memory each.
    lookup = {"[" + ",".join(["{}"] * 1_000_000) + "]": "utter_greet"}
    refused, peak = refusal({"lookup": lookup})
    assert refused == (
        f"a history of the memoization lookup holds more than {MAX_LOOKUP_STATES:,} states, "
        "more than training writes"
    )
    assert peak < 50_000_000


def test_an_old_lookup_key_of_as_many_states_as_the_bound_loads() -> None:
    lookup = {"[" + ",".join(["{}"] * MAX_LOOKUP_STATES) + "]": "utter_greet"}
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.restore({"lookup": lookup}, Path("."), DOMAIN)
    assert policy.histories_.action_of(("{}",) * MAX_LOOKUP_STATES) == "utter_greet"


def test_histories_of_more_nodes_than_the_bound_are_refused_before_they_are_built() -> None:
    # A root with a child per node: 21 bytes of policy.json a node took 370 bytes to load.
    nodes = MAX_NODES + 1
    wide = {"states": ["{}"], "parents": [0] * nodes, "node_states": [0] * nodes, "actions": []}
    refused, peak = refusal({"histories": wide})
    assert refused == TOO_MANY
    assert peak < 50_000_000


def test_histories_of_as_many_nodes_as_the_bound_load() -> None:
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.restore({"histories": _chain(MAX_NODES)}, Path("."), DOMAIN)
    assert policy.histories_.action_of(("{}",) * MAX_NODES) == "utter_greet"


def test_stories_of_more_histories_than_a_model_may_load_fail_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bound, lowered so that these stories pass it (at its value, millions of steps).
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train(STORIES, DOMAIN)
    written_nodes = len(policy.histories_.as_data()["parents"])
    monkeypatch.setattr(histories, "MAX_NODES", written_nodes - 1)
    with pytest.raises(TrainingError) as caught:
        MemoizationPolicy("MemoizationPolicy").train(STORIES, DOMAIN)
    assert str(caught.value) == (
        f"MemoizationPolicy cannot learn these stories: the memoized histories hold more than "
        f"{written_nodes - 1:,} distinct histories, the most a memoization policy may hold (a "
        "model holding them would not load); set a lower `max_history`, or train on fewer "
        "stories"
    )
    monkeypatch.setattr(histories, "MAX_NODES", written_nodes)
    MemoizationPolicy("MemoizationPolicy").train(STORIES, DOMAIN)


def test_converting_an_old_lookup_takes_about_what_its_runs_keep() -> None:
    # Each key's states made an edge a node, then numbers and lists a node: about 175 bytes
    # a node at the peak of converting (511 MB for 2,900,000 nodes).
    keys, states = 10, 5_000
    tail = ",{}" * (states - 1)
    lookup = {f'[{{"a":{i}}}{tail}]': "utter_greet" for i in range(keys)}
    policy = MemoizationPolicy("MemoizationPolicy")
    peak = traced_peak(lambda: policy.restore({"lookup": lookup}, Path("."), DOMAIN))
    assert peak < 60 * keys * states
    history = ('{"a":7}', *("{}",) * (states - 1))
    assert policy.histories_.action_of(history) == "utter_greet"
    assert policy.histories_.action_of(history[:-1]) is None


def unambiguous_stories(count: int, seed: int) -> list[TrainingStory]:
    """Random stories whose every history leads to one action: the answer to an intent is
    always the same."""
    answers = {"greet": "utter_greet", "mood_great": "utter_happy", "affirm": "utter_ok"}
    answers["mood_unhappy"] = "utter_cheer_up"
    chosen = random.Random(seed)
    stories = []
    for number in range(count):
        steps: list[Event] = []
        for intent in chosen.choices(sorted(answers), k=chosen.randint(1, 10)):
            steps += [user(intent), action(answers[intent])]
        stories.append(story(str(number), *steps))
    return stories


@pytest.mark.parametrize("max_history", [None, 1, 2, 3])
def test_an_old_lookup_loads_as_the_tree_training_makes(max_history: int | None) -> None:
    # Histories that share their first states, part inside a run, end inside one or go
    # on past its end: the same runs as trained, written again node for node alike.
    stories = unambiguous_stories(60, seed=max_history or 0)
    trained = MemoizationPolicy("MemoizationPolicy", max_history=max_history)
    trained.train(stories, DOMAIN)
    loaded = MemoizationPolicy("MemoizationPolicy", max_history=max_history)
    loaded.restore({"lookup": lookup_as_before(stories, DOMAIN, max_history)}, Path("."), DOMAIN)
    assert loaded.learned_state() == trained.learned_state()
    assert every_prediction(loaded, DOMAIN, stories) == every_prediction(trained, DOMAIN, stories)
    assert loaded.histories_.depth == trained.histories_.depth


def form_conversation(seed: int, turns: int) -> list[Event]:
    """formbot's stories one after another, with rule-only turns, followups, rejected and
    deactivated loops, slots and form runs in between, at random."""
    domain, stories, _ = bot("formbot")
    chosen = random.Random(seed)
    plain = [s for s in stories if not s.is_rule]
    extras: list[list[Event]] = [
        [listen(), user("chitchat"), hidden("utter_chitchat"), hidden("action_listen")],
        [listen(), user("greet"), FollowupAction(action_name="utter_greet"), action("utter_greet")],
        [action("restaurant_form"), ActiveLoop(name="restaurant_form")],
        [ActionExecutionRejected(action_name="restaurant_form"), action("utter_ask_continue")],
        [ActiveLoop(name=None), SlotSet(key="requested_slot", value=None)],
        [listen(), user("affirm"), action("restaurant_form"), hidden("restaurant_form")],
        [SlotSet(key="cuisine", value="greek"), ActionExecuted(action_text="hi")],
    ]
    events: list[Event] = []
    for _ in range(turns):
        if chosen.random() < 0.4:
            events += chosen.choice(extras)
        else:
            events += chosen.choice(plain).events
    return events


@pytest.mark.parametrize("seed", range(6))
def test_a_cut_folds_into_as_many_states_as_counted_at_least(seed: int) -> None:
    domain, _, _ = bot("formbot")
    events = form_conversation(seed, 30)
    cuts = [i for i, e in enumerate(events) if isinstance(e, ActionExecuted)]
    fewest = memoization.fewest_story_states(events, cuts)
    walked = [len(story_states(events[cut:], domain, NO_RULE_ONLY)) for cut in cuts]
    assert all(f <= w for f, w in zip(fewest, walked, strict=True))
    assert sum(fewest) > sum(walked) // 3  # not a bound of nothing


def any_events(chosen: random.Random, count: int) -> list[Event]:
    """Events of any kind at random, a few names among them: two loops run, deactivated,
    rejected and run again; hidden and followed turns; actions named by text alone."""
    loops = ["restaurant_form", "other_form"]
    names = [ACTION_LISTEN, "utter_greet", *loops, "action_unlikely_intent", None]
    kinds: list = [
        lambda: ActionExecuted(
            action_name=(name := chosen.choice(names)),
            action_text=None if name else "hi",
            hide_rule_turn=chosen.random() < 0.3,
        ),
        lambda: user(chosen.choice(["greet", "affirm", "inform"])),
        lambda: ActiveLoop(name=chosen.choice([*loops, None])),
        lambda: FollowupAction(action_name="utter_greet"),
        lambda: ActionExecutionRejected(action_name=chosen.choice(loops)),
        lambda: SlotSet(key="cuisine", value=chosen.choice([None, "greek"])),
    ]
    weights = [9, 3, 2, 2, 1, 1]
    return [chosen.choices(kinds, weights)[0]() for _ in range(count)]


def turns_lost_to_the_turn_before(how: str, turns: int = 6) -> list[Event]:
    """Turns whose state stays hidden because the hidden turn before goes on in them: a
    followup action pending, the active loop's run before, or a bot's text (no action's
    name, no loop) before."""
    form = "restaurant_form"
    turns_of: dict[str, list[Event]] = {
        "followed": [hidden("utter_ok"), FollowupAction(action_name="utter_greet")],
        "by the loop": [ActiveLoop(name=form), hidden(form)],
        "by a text": [ActionExecuted(action_text="hi", hide_rule_turn=True)],
    }
    after: list[Event] = [ActiveLoop(name=None)] if how == "by the loop" else []
    return [listen(), *((turns_of[how] + [action("utter_greet")] + after) * turns)]


def no_cut_folds_into_fewer_states_than_counted(events: list[Event], domain: Domain) -> bool:
    cuts = [i for i, e in enumerate(events) if isinstance(e, ActionExecuted)]
    fewest = memoization.fewest_story_states(events, cuts)
    walked = [len(story_states(events[cut:], domain, NO_RULE_ONLY)) for cut in cuts]
    return all(f <= w for f, w in zip(fewest, walked, strict=True))


def test_no_cut_folds_into_fewer_states_than_counted() -> None:
    # A cut counted at more states than it folds into is passed by, where it could have
    # matched a story: a prediction lost. Loops collapsing, hidden turns, followups and
    # loops carrying a hidden turn on each take states; every one must be counted out.
    domain, _, _ = bot("formbot")
    chosen = random.Random(7)
    for _ in range(300):
        events = any_events(chosen, chosen.randint(1, 40))
        assert no_cut_folds_into_fewer_states_than_counted(events, domain), events
    for how in ("followed", "by the loop", "by a text"):
        events = turns_lost_to_the_turn_before(how)
        assert no_cut_folds_into_fewer_states_than_counted(events, domain), events


def augmented_predictions(events: list[Event], every: int = 1) -> list:
    domain, stories, _ = bot("formbot")
    policy = AugmentedMemoizationPolicy("AugmentedMemoizationPolicy", max_history=None)
    policy.train(stories, domain)
    out = []
    for i in range(1, len(events), every):
        if isinstance(events[i], ActionExecuted):
            t = Tracker("t", domain.slot_defaults(), events[:i])
            p = policy.predict(ConversationStates(t, domain), domain)
            out.append((p.action_name, p.confidence, p.is_end_to_end_prediction))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_augmented_memoization_without_max_history_predicts_as_when_it_walked_every_cut(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = form_conversation(seed, 16)
    predictions = augmented_predictions(events)
    assert sum(confidence == 1.0 for _, confidence, _ in predictions) > 10
    monkeypatch.setattr(memoization, "fewest_story_states", lambda _, cuts: [0] * len(cuts))
    assert augmented_predictions(events) == predictions


def events_folded(
    monkeypatch: pytest.MonkeyPatch, turn: list[Event], ending: list[Event]
) -> list[tuple[tuple[str, float], int]]:
    """AugmentedMemoizationPolicy's prediction (without `max_history`) after 50, then 200
    turns, and the events it folded for each (the tracker's own states folded before)."""
    folded = [0]
    apply = featurization._Fold.apply

    def counted(fold: Any, event: Event) -> bool:
        folded[0] += 1
        return apply(fold, event)

    policy = AugmentedMemoizationPolicy("AugmentedMemoizationPolicy", max_history=None)
    policy.train(STORIES, DOMAIN)
    work = []
    for turns in (50, 200):
        conversation = ConversationStates(tracker(DOMAIN, *turn * turns, *ending), DOMAIN)
        folded[0] = 0
        with monkeypatch.context() as patched:
            patched.setattr(featurization._Fold, "apply", counted)
            prediction = policy.predict(conversation, DOMAIN)
        work.append(((prediction.action_name, max(prediction.probabilities)), folded[0]))
    return work


def test_augmented_memoization_without_max_history_walks_a_turn_the_same_at_any_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each shorter history was folded from its events, one per action: a turn cost the
    # conversation's length squared. Only those that can match a story are folded now.
    chat = [listen(), user("affirm"), action("utter_ok"), action("utter_hm")]
    (first, short), (second, long) = events_folded(monkeypatch, chat, [listen(), user("greet")])
    assert first == second == ("utter_greet", 1.0)
    assert short == long < 10 * len(chat)


# Hidden turns after a slot set or a message: a walk from before them reaches the next
# action in the same state as one from after them, but for that slot or message.
CARRIED: list[list[Event]] = [
    [
        hidden("utter_ok"),
        SlotSet(key="name", value="x"),
        *[hidden("utter_ok"), hidden(ACTION_LISTEN)] * 2,
        user("greet"),
        action("utter_greet"),
    ],
    [
        hidden("utter_ok"),
        user("greet"),
        *[hidden("utter_ok"), hidden(ACTION_LISTEN)] * 2,
        action("utter_greet"),
    ],
]


def test_every_cuts_states_in_one_pass_are_those_of_a_walk_from_each_cut() -> None:
    # The walks from each cut meet where they reach an action in the same state, and go on
    # as one: any state they carry on left out of that comparison (a slot set before, a
    # hidden turn, a pending followup, the last message a state after an action keeps)
    # gives a cut the states of another.
    chosen = random.Random(11)
    for rule_only in (NO_RULE_ONLY, RuleOnly(slots=frozenset({"name"}))):
        for _ in range(300):
            events = [
                SlotSet(key="name", value=e.value) if isinstance(e, SlotSet) else e
                for e in any_events(chosen, chosen.randint(1, 60))
                if type(e) is not ActiveLoop
            ]
            events += chosen.choice([[], turns_lost_to_the_turn_before("followed"), *CARRIED])
            assert_one_pass_walks_each_cut(chosen, events, DOMAIN, rule_only)


def assert_one_pass_walks_each_cut(
    chosen: random.Random, events: list[Event], domain: Domain, rule_only: RuleOnly
) -> None:
    """`cut_story_states` of most cuts (chosen at random) are those of a walk from each."""
    cuts = [i for i, e in enumerate(events) if isinstance(e, ActionExecuted)]
    walked = [chosen.random() < 0.8 for _ in cuts]
    expected = [
        story_states(events[cut:], domain, rule_only) if walk else None
        for cut, walk in zip(cuts, walked, strict=True)
    ]
    assert cut_story_states(events, cuts, walked, domain, rule_only) == expected, events


def test_augmented_memoization_without_max_history_walks_turns_only_rules_know_linearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Turns only rules know fold into no state: every shorter history was folded from its
    # events at every turn, the conversation's length squared (16 times the events at 4
    # times the turns: 7,752 and 121,002 here). The walks from each cut now meet within a
    # turn.
    ruled = [user("affirm"), hidden("utter_ok"), hidden("action_listen")]
    (first, short), (second, long) = events_folded(monkeypatch, ruled, [user("affirm")])
    assert first[1] == second[1] == 0  # no story after any cut: each is walked
    assert long < 5 * short, (short, long)


def random_stories(count: int, turns: int = 10) -> tuple[Domain, list[TrainingStory]]:
    """A domain of 20 intents and 20 responses, and `count` random stories of `turns` turns."""
    intents, actions = [f"intent_{i}" for i in range(20)], [f"utter_{i}" for i in range(20)]
    domain = Domain.from_dict(
        {"intents": intents, "responses": {a: [{"text": a}] for a in actions}}
    )
    chosen = random.Random(1)
    stories = [
        story(
            str(n),
            *(
                e
                for _ in range(turns)
                for e in (user(chosen.choice(intents)), action(chosen.choice(actions)))
            ),
        )
        for n in range(count)
    ]
    return domain, stories


def test_a_windowed_policy_keeps_each_history_once() -> None:
    # Every window was kept twice: in the runs and by its texts' tuple (about 480 bytes a
    # history loaded, against 130 by its tuple alone).
    domain, stories = random_stories(300)
    trained = MemoizationPolicy("MemoizationPolicy", max_history=3)
    trained.train(stories, domain)
    state = trained.learned_state()
    loaded = MemoizationPolicy("MemoizationPolicy", max_history=3)
    tracemalloc.start()
    try:
        loaded.restore(state, Path("."), domain)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept < 250 * len(state["histories"]["actions"])
    assert loaded.learned_state() == state
    sample = stories[:20]
    assert every_prediction(loaded, domain, sample) == every_prediction(trained, domain, sample)


def test_memoization_and_augmented_memoization_of_one_max_history_load_their_histories_once(
    tmp_path: Path,
) -> None:
    """Before, a model with both policies of the same `max_history` (they learn the same
    histories) kept two copies of them, each read and built: 12.5 MiB against 6.4 MiB for
    2,000 stories (`bench/memoization_twins.py`). Now the second shares the first's, and
    each predicts as trained, the augmented one by its shorter histories too."""
    domain, stories = random_stories(500)
    one = [{"name": "MemoizationPolicy", "max_history": 5}]
    both = [*one, {"name": "AugmentedMemoizationPolicy", "max_history": 5}]
    kept = {}
    for name, config in (("one", one), ("both", both)):
        PolicyEnsemble.train(config, stories, domain).persist(tmp_path / name)
        gc.collect()
        tracemalloc.start()
        loaded = PolicyEnsemble.load(tmp_path / name, domain)
        kept[name] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    assert kept["both"] < 1.3 * kept["one"], kept  # twice before
    memoization_, augmented = loaded.policies
    assert isinstance(memoization_, MemoizationPolicy)
    assert isinstance(augmented, AugmentedMemoizationPolicy)
    assert augmented.histories_ is memoization_.histories_

    trained = PolicyEnsemble.train(both, stories, domain)
    for policy, as_trained in zip(loaded.policies, trained.policies, strict=True):
        assert type(policy) is type(as_trained) and policy.options == as_trained.options
        assert every_prediction(policy, domain, stories[:30]) == every_prediction(
            as_trained, domain, stories[:30]
        )


def test_twin_memoization_policies_of_a_hostile_archive_load_the_options_their_files_hold(
    tmp_path: Path,
) -> None:
    """Two same `policy.json` files holding "options" twice: loading reads the last. The
    second policy, sharing the first's histories, read its options from the file's first
    bytes, the first "options": two policies of the same bytes predicted with different
    `max_history` and confidences."""
    domain, stories = random_stories(50)
    config = [{"name": "AugmentedMemoizationPolicy", "max_history": 3}] * 2
    PolicyEnsemble.train(config, stories, domain).persist(tmp_path)
    last = ', "options": {"max_history": 1, "use_nlu_confidence_as_score": true}}'
    for state in tmp_path.glob("*/policy.json"):
        state.write_text(state.read_text()[:-1] + last)
    first, second = PolicyEnsemble.load(tmp_path, domain).policies
    assert first.options == {"max_history": 1, "use_nlu_confidence_as_score": True}
    assert second.options == first.options


def test_twin_memoization_policies_whose_defaults_differ_load_each_their_own(
    tmp_path: Path,
) -> None:
    """An older lookup whose options name no `max_history`: AugmentedMemoizationPolicy reads
    it with 5, MemoizationPolicy with none, and the latter's reach is the longest history,
    counted from the lookup. Sharing the first's (counted as 0), the second read a window of
    one state where it reads six."""
    state = {"options": {}, "learned": {"lookup": lookup_as_before(STORIES, DOMAIN, None)}}
    entries = []
    for name in ("AugmentedMemoizationPolicy", "MemoizationPolicy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "policy.json").write_text(json.dumps(state))
        entries.append({"class": name, "name": name, "priority": 3, "directory": name})
    (tmp_path / "ensemble.json").write_text(json.dumps({"policies": entries, "warnings": []}))
    memoization_ = PolicyEnsemble.load(tmp_path, DOMAIN).policies[1]
    alone = MemoizationPolicy.load(tmp_path / "MemoizationPolicy", "alone", 3, DOMAIN)
    assert memoization_.prediction_window() == alone.prediction_window() == 6
    assert every_prediction(memoization_, DOMAIN, STORIES) == every_prediction(
        alone, DOMAIN, STORIES
    )


# Slots of every type that influences the conversation, and entities a message and an
# `entities` event carry.
TYPED = Domain.from_dict(
    {
        "intents": ["greet", "affirm", "inform"],
        "entities": ["city", "person"],
        "slots": {
            "done": {"type": "bool", "mappings": []},
            "score": {"type": "float", "min_value": 0, "max_value": 10, "mappings": []},
            "tier": {"type": "categorical", "values": ["gold", True, 1], "mappings": []},
            "name": {"type": "text", "mappings": []},
            "cities": {"type": "list", "mappings": []},
            "ruled": {"type": "text", "mappings": []},
        },
        "responses": {"utter_greet": [{"text": "hi"}], "utter_ok": [{"text": "ok"}]},
    }
)
SLOT_VALUES: dict[str, list[Any]] = {
    "done": [True, False, None, 1, "yes"],
    "score": [0, 2.5, 10, 1e9, None, "x"],
    "tier": ["gold", "Gold", True, 1, 1.0, "silver", None],
    "name": ["x", None, ""],
    "cities": [[], ["a"], None],
    "ruled": ["x", None],
}


def typed_events(chosen: random.Random, count: int) -> list[Event]:
    """Events of every kind but loops' at random, over `TYPED`."""
    names = [ACTION_LISTEN, "utter_greet", "utter_ok", None]
    kinds: list = [
        lambda: ActionExecuted(
            action_name=(name := chosen.choice(names)),
            action_text=None if name else chosen.choice(["hi", "ho"]),
            hide_rule_turn=chosen.random() < 0.4,
        ),
        lambda: UserUttered(
            text=chosen.choice([None, "/greet", "hello"]),  # None: a message of no text
            parse_data={
                "intent": {"name": chosen.choice(["greet", "affirm", None])},
                "entities": chosen.choice([[], [{"entity": "city"}], [{"entity": "person"}]]),
            },
        ),
        lambda: EntitiesAdded(entities=[{"entity": chosen.choice(["city", "person"])}]),
        lambda: DefinePrevUserUtteredFeaturization(
            use_text_for_featurization=chosen.random() < 0.5
        ),
        lambda: FollowupAction(action_name="utter_ok"),
        lambda: SlotSet(
            key=(key := chosen.choice(list(SLOT_VALUES))), value=chosen.choice(SLOT_VALUES[key])
        ),
        lambda: AllSlotsReset(),
        lambda: BotUttered(text="hi"),
    ]
    weights = [10, 4, 1, 1, 1, 4, 1, 1]
    return [chosen.choices(kinds, weights)[0]() for _ in range(count)]


def test_every_cuts_states_in_one_pass_are_those_of_a_walk_from_each_cut_over_any_event() -> None:
    # Slots of every type (values equal in Python and featurized apart among them),
    # entities, text featurization, followups, slot resets and hidden turns mixed with
    # story turns.
    chosen = random.Random(5)
    for rule_only in (NO_RULE_ONLY, RuleOnly(slots=frozenset({"ruled"}))):
        for _ in range(400):
            events = typed_events(chosen, chosen.randint(1, 80))
            assert_one_pass_walks_each_cut(chosen, events, TYPED, rule_only)


def test_augmented_memoization_without_max_history_over_rule_turns_holds_no_copy_of_slots() -> None:
    # The walks from each cut met where the fold's slot values read the same (their
    # `repr`): a slot holding a large value (an action's search results, 100 kB) was
    # written out at every action a walk passed, 300 turns only rules know after it held
    # some 70 MB during the prediction (1,000 turns: 236 MB, 8.7 s). The slots are
    # compared as the states read them.
    domain = Domain.from_dict(
        {
            **DOMAIN.as_dict(),
            "slots": {
                "name": {"type": "text", "mappings": []},
                "results": {"type": "any", "mappings": []},
            },
        }
    )
    policy = AugmentedMemoizationPolicy("AugmentedMemoizationPolicy", max_history=None)
    policy.train(STORIES, domain)
    results = [{"title": "x" * 90, "id": i} for i in range(1_000)]
    ruled = [user("affirm"), hidden("utter_ok"), hidden("action_listen")]
    events = [listen(), SlotSet(key="results", value=results), *ruled * 300, user("affirm")]
    conversation = ConversationStates(tracker(domain, *events), domain)
    assert traced_peak(lambda: policy.predict(conversation, domain)) < 10_000_000
