"""Windows derived from a step another conversation took (no fold of the new events) are
the windows a fold from scratch gives: slots of any value, hidden rule turns, forms,
restarts, new sessions, rewinds and other conversations never lend a stale one."""

from __future__ import annotations

import random
from typing import Any

import pytest

from server.dialogue.domain import Domain
from server.dialogue.memo import Memo
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.policies.featurization import (
    ConversationStates,
    RuleOnly,
    Steps,
    states_behind,
    window_step,
)
from server.trackers import events as ev
from server.trackers.events import (
    ActionExecuted,
    BotUttered,
    DefinePrevUserUtteredFeaturization,
    Event,
    SlotSet,
    UserUttered,
)
from server.trackers.tracker import Tracker
from tests.dialogue.conversation_fixtures import BotModels, Conversation, make_agent
from tests.dialogue.policy_fixtures import bot, listen
from tests.shared_data import BOTS

SHARED_BOTS = sorted(d.name for d in BOTS.iterdir() if (d / "config.yml").is_file())
# Values a slot takes: equal ones of other types (1, 1.0, True) must not share a step.
SLOT_VALUES: list[Any] = [None, "a", "b", 1, 1.0, True, False, 0, [1], {"k": 1}, "1"]


def _user(rng: random.Random, domain: Domain) -> UserUttered:
    intent = rng.choice([*domain.user_intents[:4], None, ""])
    entities: list[dict[str, Any]] = [
        {"entity": name, "value": "v"} for name in domain.entities[:3] if rng.random() < 0.3
    ]
    for entity in entities:
        if rng.random() < 0.3:
            entity["role"] = rng.choice(["r", "s"])
    return UserUttered(
        text=rng.choice(["hi", "a text", None]),
        parse_data={"intent": {"name": intent}, "entities": entities},
    )


def _turn(rng: random.Random, domain: Domain) -> list[Event]:
    """A few events, most of them what turns log (a message, actions, some hidden as rule
    turns, bot messages, slots); now and then a loop, a followup, a rewind, a rejection, a
    restart or a new session."""
    actions = domain.action_names_or_texts[:6]
    roll = rng.random()
    if roll < 0.03:
        return [ev.Restarted(), listen()]
    if roll < 0.08:
        return [ActionExecuted(action_name="action_session_start"), ev.SessionStarted(), listen()]
    if roll < 0.1 and domain.forms:
        return [ev.ActiveLoop(name=rng.choice([*domain.forms, None]))]
    if roll < 0.12:
        return [rng.choice([ev.UserUtteranceReverted(), ev.ActionReverted(), ev.AllSlotsReset()])]
    if roll < 0.14:
        return [ev.FollowupAction(action_name=rng.choice(actions))]
    if roll < 0.16:
        return [ev.ActionExecutionRejected(action_name=rng.choice(actions))]
    events: list[Event] = []
    if rng.random() < 0.5:
        events += [listen(), _user(rng, domain)]
        if rng.random() < 0.5:
            use_text = rng.random() < 0.2
            events.append(DefinePrevUserUtteredFeaturization(use_text_for_featurization=use_text))
    if domain.slots and rng.random() < 0.3:
        slot = rng.choice(domain.slots[:3])
        events.append(SlotSet(key=slot.name, value=rng.choice(SLOT_VALUES)))
    for _ in range(rng.randint(0, 2)):
        events.append(
            ActionExecuted(action_name=rng.choice(actions), hide_rule_turn=rng.random() < 0.3)
        )
        if rng.random() < 0.5:
            events.append(BotUttered(text="hi"))
    return events


def _afresh(
    tracker: Tracker, domain: Domain, last: int, rule_only: RuleOnly
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    fresh = Tracker(tracker.sender_id, domain.slot_defaults(), list(tracker.events))
    conversation = ConversationStates(fresh, domain, rule_only)
    return conversation.identities(last), conversation.stories().identities(last)


@pytest.mark.parametrize("bot_name", SHARED_BOTS)
def test_windows_from_steps_equal_those_folded_afresh_in_random_conversations(
    bot_name: str,
) -> None:
    domain, stories, policies = bot(bot_name)
    rule_only = PolicyEnsemble.train(policies, stories, domain).rule_only
    rng = random.Random(f"steps-{bot_name}")
    derived = asked = stories_differ = 0
    for last in (1, 3, 5):
        steps: Steps = Memo(4096)  # shared by all conversations, as the ensemble's is
        for n in range(60):
            tracker = Tracker(f"c{n}", domain.slot_defaults(), [listen()])
            for _ in range(rng.randint(1, 12)):
                # Mostly one of a few turns (new events alike), as conversations repeat.
                seed = rng.randrange(16) if rng.random() < 0.85 else rng.random()
                for event in _turn(random.Random(f"{bot_name}-{seed}"), domain):
                    tracker.update(event)
                if tracker.active_loop.get("name") is not None or tracker.followup_action:
                    continue  # the ensemble asks for windows only without either
                behind = states_behind(tracker, domain)
                entry = window_step(tracker, domain, last, rule_only, steps)
                got = None if entry is None else entry[1]
                if got is None:
                    continue
                asked += 1
                if behind and states_behind(tracker, domain) == behind:
                    derived += 1  # no fold: from a step
                    stories_differ += got[0] != got[1]
                assert got == _afresh(tracker, domain, last, rule_only), (
                    bot_name,
                    last,
                    [e.as_dict() for e in tracker.events],
                )
    # The steps answered many of them, some where story states and states differ.
    assert derived > asked / 20 and stories_differ > 0, (derived, stories_differ, asked)


def test_a_step_is_not_taken_past_a_slot_value_of_another_type() -> None:
    # moodbot-like: one text slot and one categorical slot whose values differ by type.
    domain = Domain.from_dict(
        {
            "intents": ["greet"],
            "slots": {
                "kind": {
                    "type": "categorical",
                    "values": ["1", "true"],
                    "mappings": [{"type": "custom"}],
                },
            },
            "responses": {"utter_greet": [{"text": "hi"}]},
        }
    )
    steps: Steps = Memo(64)
    seen: list[Any] = []
    for value in ["1", 1, True, "true", 1.0]:
        tracker = Tracker(f"t{value!r}", domain.slot_defaults(), [listen()])
        for events in (
            [UserUttered(text="hi", parse_data={"intent": {"name": "greet"}})],
            [SlotSet(key="kind", value=value), ActionExecuted(action_name="utter_greet")],
        ):
            for event in events:
                tracker.update(event)
            entry = window_step(tracker, domain, 3, RuleOnly(), steps)
            got = None if entry is None else entry[1]
            assert got == _afresh(tracker, domain, 3, RuleOnly()), value
        seen.append(got)
    assert seen[0] != seen[3]  # "1" and "true" read as different categories


def test_a_message_read_by_its_text_takes_no_step_of_one_read_by_its_intent() -> None:
    domain = Domain.from_dict(
        {"intents": ["greet"], "responses": {"utter_greet": [{"text": "hi"}]}}
    )
    steps: Steps = Memo(64)
    seen: list[Any] = []
    for use_text in (False, True, False, True):
        tracker = Tracker(f"t{use_text}{len(seen)}", domain.slot_defaults(), [listen()])
        for events in (
            [UserUttered(text="hello there", parse_data={"intent": {"name": "greet"}})],
            [
                DefinePrevUserUtteredFeaturization(use_text_for_featurization=use_text),
                ActionExecuted(action_name="utter_greet"),
                BotUttered(text="hi"),
            ],
        ):
            for event in events:
                tracker.update(event)
            entry = window_step(tracker, domain, 3, RuleOnly(), steps)
            got = None if entry is None else entry[1]
            assert got == _afresh(tracker, domain, 3, RuleOnly()), use_text
        seen.append(got)
    assert seen[0] == seen[2] != seen[1] == seen[3]


def test_each_memory_of_steps_derives_only_from_its_own_points() -> None:
    # Two models on one domain (say, before and after a hot swap) with other windows ask
    # for the same conversation in turns: neither takes the other's last point as its own.
    domain, stories, policies = bot("moodbot")
    memories: list[tuple[int, Steps]] = [(5, Memo(256)), (2, Memo(256))]
    rng = random.Random("two-memories")
    for n in range(40):
        tracker = Tracker(f"c{n}", domain.slot_defaults(), [listen()])
        for turn in range(8):
            seed = rng.randrange(6)
            for event in _turn(random.Random(f"moodbot-{seed}"), domain):
                tracker.update(event)
            if tracker.active_loop.get("name") is not None or tracker.followup_action:
                continue
            last, steps = memories[(n + turn) % 2]
            entry = window_step(tracker, domain, last, RuleOnly(), steps)
            got = None if entry is None else entry[1]
            if got is not None:
                assert got == _afresh(tracker, domain, last, RuleOnly()), (n, last)


# moodbot's rules hide their turns from the story states ("bye", "are you a bot?"); a
# restart and a new session start the states over.
MOODBOT_SCRIPTS = [
    ["hello", "I am feeling very sad", "no", "are you a bot?", "great", "bye"],
    ["hi there", "are you a bot?", "I am great", "/restart", "hello", "very unhappy"],
    ["good morning", "very unhappy", "yes", "/session_start", "hi", "bye", "hello"],
]


async def test_turns_answered_through_steps_are_those_answered_without_any_memory(
    bot_models: BotModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every conversation comes twice.
    agent = make_agent(bot_models["moodbot"])
    scripts = MOODBOT_SCRIPTS

    async def talk(sender: str, texts: list[str]) -> list[Any]:
        conversation = Conversation(agent, sender)
        turns = [await conversation.say(text) for text in texts]
        tracker = await conversation.tracker()
        plain = [
            {k: v for k, v in e.as_dict().items() if k not in ("timestamp", "metadata")}
            for e in tracker.events
        ]
        for event in plain:
            event.get("parse_data", {}).pop("message_id", None)
            event.pop("message_id", None)
        return [[(t.actions, t.texts) for t in turns], plain]

    remembered = [await talk(f"r0-{n}", texts) for n, texts in enumerate(scripts)]
    ensemble = bot_models["moodbot"].policies
    assert isinstance(ensemble, PolicyEnsemble)
    steps = ensemble._steps
    assert steps is not None
    taken = 0
    get = steps.get

    def counting_get(key: Any) -> Any:
        nonlocal taken
        found = get(key)
        taken += found is not None
        return found

    monkeypatch.setattr(steps, "get", counting_get)
    remembered += [await talk(f"r1-{n}", texts) for n, texts in enumerate(scripts)]
    assert taken > 30  # the second round's predictions took known steps
    monkeypatch.setattr(ensemble, "_steps", None)
    monkeypatch.setattr(ensemble, "_winners", Memo(0))
    afresh = []
    for round_ in range(2):
        for n, texts in enumerate(scripts):
            afresh.append(await talk(f"f{round_}-{n}", texts))
    assert remembered == afresh


async def test_a_known_step_gives_its_winner_by_its_own_key_alone(
    bot_models: BotModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once the conversations' steps are known, a prediction looks up one key, the step's:
    # no second key made of the windows it gives (for the remembered winners) is hashed.
    agent = make_agent(bot_models["moodbot"])
    ensemble = bot_models["moodbot"].policies
    assert isinstance(ensemble, PolicyEnsemble)
    ensemble.forget_predictions()

    async def talk(round_: int) -> None:
        for n, texts in enumerate(MOODBOT_SCRIPTS):
            conversation = Conversation(agent, f"one-key-{round_}-{n}")
            for text in texts:
                await conversation.say(text)

    await talk(0)
    steps = ensemble._steps
    assert steps is not None
    looked_up: dict[str, int] = {"steps": 0, "winners": 0}

    def counted(memo: Memo[Any, Any], name: str) -> None:
        get = memo.get

        def counting_get(key: Any) -> Any:
            looked_up[name] += 1
            return get(key)

        monkeypatch.setattr(memo, "get", counting_get)

    counted(steps, "steps")
    counted(ensemble._winners, "winners")
    await talk(1)
    assert looked_up["steps"] > 30 and looked_up["winners"] == 0, looked_up


def _remembered_and_afresh(
    bot_models: BotModels, conversations: list[list[Event]], times: int
) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    """Each conversation predicted for `times` in a row by moodbot's ensemble (its memories
    new), and by one that remembers nothing: (action, policy) of each prediction."""
    model = bot_models["moodbot"]
    domain, ensemble = model.domain, model.policies
    assert isinstance(ensemble, PolicyEnsemble)
    ensemble.forget_predictions()
    afresh = PolicyEnsemble(ensemble.policies, memo_size=0)
    got, expected = [], []
    for n, events in enumerate(conversations):
        tracker = Tracker(f"again-{n}", domain.slot_defaults(), events)
        for _ in range(times):
            prediction = ensemble.predict(tracker, domain)
            got.append((prediction.action_name, prediction.policy_name))
        fresh = afresh.predict(Tracker("afresh", domain.slot_defaults(), events), domain)
        expected += [(fresh.action_name, fresh.policy_name)] * times
    return got, expected


def test_a_known_steps_winner_is_not_given_to_a_conversation_that_rejected_another_action(
    bot_models: BotModels,
) -> None:
    # A second /predict with no new event takes the empty step from where the first left
    # the states; a rejection leaves them as they were, so conversations that rejected
    # different actions (or none) take the same step: each must get its own winner (the
    # rejected action taken out), as an ensemble that remembers nothing predicts.
    greet = {"intent": {"name": "greet"}, "entities": []}
    conversations: list[list[Event]] = []
    for rejected in ["utter_greet", None, "action_default_fallback", None]:
        events: list[Event] = [listen(), UserUttered(text="hello", parse_data=greet)]
        if rejected is not None:
            events.append(ev.ActionExecutionRejected(action_name=rejected))
        conversations.append(events)
    got, expected = _remembered_and_afresh(bot_models, conversations, 2)
    assert got == expected
    assert got[0] != ("utter_greet", "MemoizationPolicy")  # (rejected)
    assert got[2] == ("utter_greet", "MemoizationPolicy")


def test_a_conversation_without_events_is_predicted_for_again_and_again(
    bot_models: BotModels,
) -> None:
    # Its second prediction learns the empty step from no events; the next one (or another
    # empty conversation's) takes it: before, an IndexError (the step's last event read from
    # an empty list).
    got, expected = _remembered_and_afresh(bot_models, [[], []], 3)
    assert got == expected


def test_predictions_through_the_memories_are_those_of_none_in_random_conversations(
    bot_models: BotModels,
) -> None:
    # Conversations repeating a few turns share steps and winners; now and then the
    # predicted action is rejected and the bot predicts again, as a turn does. Pending
    # followups are left out (a turn runs them unasked).
    model = bot_models["moodbot"]
    domain, ensemble = model.domain, model.policies
    assert isinstance(ensemble, PolicyEnsemble)
    ensemble.forget_predictions()
    afresh = PolicyEnsemble(ensemble.policies, memo_size=0)
    rng = random.Random("memories")

    def answer(prediction: Any) -> tuple[Any, ...]:
        return (prediction.action_name, prediction.policy_name, prediction.probabilities)

    trackers = [Tracker(f"m{n}", domain.slot_defaults(), [listen()]) for n in range(12)]
    compared = 0
    for turn in range(25):
        for n, tracker in enumerate(trackers):
            for event in _turn(random.Random(f"memories-{n % 3}-{turn}"), domain):
                tracker.update(event)
            for _ in range(rng.randint(1, 3)):
                if tracker.followup_action:
                    break
                got = ensemble.predict(tracker, domain)
                fresh = Tracker("afresh", domain.slot_defaults(), list(tracker.events))
                assert answer(got) == answer(afresh.predict(fresh, domain)), [
                    e.as_dict() for e in tracker.events
                ]
                compared += 1
                if rng.random() < 0.5:
                    tracker.update(ev.ActionExecutionRejected(action_name=got.action_name))
    assert compared > 300, compared


def test_a_step_is_not_taken_where_a_loop_known_from_other_events_runs() -> None:
    """Rasa's applied events collapse the runs of any loop a tracker's events activate (an
    earlier session's too): a step learned where the loop was never activated would keep
    the second run."""
    domain = Domain.from_dict(
        {
            "intents": ["greet"],
            "responses": {"utter_greet": [{"text": "hi"}]},
            "forms": {"a_form": {"required_slots": []}},
        }
    )
    steps: Steps = Memo(64)
    message = UserUttered(text="hi", parse_data={"intent": {"name": "greet"}})
    earlier_session = [
        ActionExecuted(action_name="a_form"),
        ev.ActiveLoop(name="a_form"),
        ev.ActiveLoop(name=None),
        ActionExecuted(action_name="action_session_start"),
        ev.SessionStarted(),
    ]
    for name, start in (("never-activated", []), ("activated-before", earlier_session)):
        tracker = Tracker(name, domain.slot_defaults(), [*start, listen()])
        for events in (
            [message, ActionExecuted(action_name="a_form")],
            [listen(), message, ActionExecuted(action_name="a_form")],
            [listen(), message, ActionExecuted(action_name="a_form")],
        ):
            for event in events:
                tracker.update(event)
            entry = window_step(tracker, domain, 3, RuleOnly(), steps)
            got = None if entry is None else entry[1]
            # None: not kept incrementally (the caller folds afresh), never a stale window.
            assert got is None or got == _afresh(tracker, domain, 3, RuleOnly()), name
