"""What a turn remembers between turns: parses by text, policy scores by feature row. A
remembered answer is the answer the model computes, and no caller can change it for the next.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.dialogue.domain import Domain
from server.dialogue.memo import Memo
from server.dialogue.messages import new_message_id
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.policies.featurization import ConversationStates, key_of, state_key
from server.dialogue.policies.ml import MLPolicy
from server.dialogue.policies.prediction import PolicyPrediction
from server.dialogue.policies.rule import RulePolicy
from server.dialogue.processor import Processor, predict_next_action
from server.dialogue.story_steps import TrainingStory
from server.trackers.events import (
    ActionExecuted,
    ActionExecutionRejected,
    ActionReverted,
    ActiveLoop,
    AllSlotsReset,
    Event,
    Restarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from server.trackers.tracker import Tracker
from tests.dialogue.conversation_fixtures import BotModels, Conversation, make_agent
from tests.dialogue.policy_fixtures import bot, listen, replay, user
from tests.shared_data import BOTS


def test_a_repeated_text_parses_as_the_pipeline_does_and_each_caller_owns_its_copy(
    bot_models: BotModels,
) -> None:
    model = bot_models["moodbot"]
    assert model.nlu is not None
    fresh = model.nlu.parse("I am feeling very sad")
    first = Processor.parse(model, "I am feeling very sad")
    second = Processor.parse(model, "I am feeling very sad")  # remembered from here on
    third = Processor.parse(model, "I am feeling very sad")
    assert first == second == third == fresh
    for parsed in (second, third):
        parsed["intent"]["name"] = "changed by a caller"
        parsed.setdefault("metadata", {})["channel"] = "rest"
    assert Processor.parse(model, "I am feeling very sad") == fresh


def test_a_parse_is_remembered_only_when_its_text_comes_back(bot_models: BotModels) -> None:
    model = bot_models["moodbot"]
    before = len(model.parses)
    for n in range(200):
        Processor.parse(model, f"hello number {n}")
    assert len(model.parses) == before  # texts that never repeat add no entries
    Processor.parse(model, "hello number 7")
    assert len(model.parses) == before + 1
    assert model.nlu is not None
    assert Processor.parse(model, "hello number 7") == model.nlu.parse("hello number 7")


def test_a_pipeline_with_duckling_is_parsed_every_time(bot_models: BotModels) -> None:
    # Duckling reads "tomorrow" relative to the clock: a remembered parse would go stale.
    model = bot_models["formbot"]
    Processor.parse(model, "a table for 3 people")
    Processor.parse(model, "a table for 3 people")
    assert len(model.parses) == 0


def test_remembered_policy_scores_are_the_computed_ones_and_retraining_forgets_them() -> None:
    domain, stories, _ = bot("moodbot")
    policy = MLPolicy("TEDPolicy")
    policy.train(stories, domain)
    rows = 0

    def next_action(tracker: Tracker) -> str:
        nonlocal rows
        states = ConversationStates(tracker, domain).states
        computed = policy.probabilities(states, domain)
        assert policy.probabilities(states, domain) == computed  # the second from memory
        rows += 1
        return policy.predict(ConversationStates(tracker, domain), domain).action_name

    for training in stories:
        replay(next_action, training, domain)
    assert rows > 0 and len(policy._scores) > 0
    policy.train(stories[:1], domain)
    assert len(policy._scores) == 0


def test_a_turns_prediction_from_memory_is_its_own(bot_models: BotModels) -> None:
    model = bot_models["moodbot"]
    tracker = Tracker("u", model.domain.slot_defaults())
    tracker.update(listen())
    tracker.update(user("greet"))
    fresh = predict_next_action(tracker, model)
    for _ in range(2):  # the second comes from the ensemble's memory
        prediction = predict_next_action(tracker, model)
        assert prediction == fresh
        prediction.probabilities[0] = 2.0
        prediction.events.append(ActionExecuted(action_name="changed by the turn"))
    assert predict_next_action(tracker, model) == fresh
    assert model.policies.predict(tracker, model.domain).probabilities == fresh.probabilities


async def test_turns_share_remembered_parses_and_predictions_and_change_none_of_them(
    bot_models: BotModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = bot_models["moodbot"]
    ensemble = model.policies
    assert isinstance(ensemble, PolicyEnsemble)
    model.parses.clear()
    ensemble.forget_predictions()
    # What each remembered parse and winner was when it was put in the memory.
    parses_put: dict[str, bytes] = {}
    winners_put: dict[Any, tuple[Any, ...]] = {}

    def spy(memo: Memo[Any, Any], seen: dict[Any, Any], write: Any) -> None:
        put = memo.put

        def recording_put(key: Any, value: Any) -> None:
            seen[key] = write(value)
            put(key, value)

        monkeypatch.setattr(memo, "put", recording_put)

    spy(model.parses, parses_put, orjson.dumps)
    spy(ensemble._winners, winners_put, _summary)
    agent = make_agent(model)
    texts = ["hello", "I am very sad", "yes", "bye", "hi there", "great", "no"]

    async def talk(sender: str, **metadata: Any) -> list[UserUttered]:
        conversation = Conversation(agent, sender)
        for text in texts:
            await conversation.say(text, **metadata)
        await agent.predict(sender)  # the predict API reads a remembered winner too
        tracker = await conversation.tracker()
        return [e for e in tracker.events if isinstance(e, UserUttered)]

    for sender in ("first", "second"):  # each text parsed twice: remembered from here on
        await talk(sender)
    third = await talk("third", channel="a")
    fourth = await talk("fourth")
    # The turns shared the remembered parses below their top level ...
    hello = model.parses.get("hello")
    assert hello is not None and third[0].parse_data["intent"] is hello["intent"]
    # ... and changed none of them, nor a remembered winner, since they were remembered.
    assert len(parses_put) == len(texts) and len(winners_put) > 0
    assert {text: orjson.dumps(model.parses.get(text)) for text in parses_put} == parses_put
    assert {k: _summary(v) for k, v in ensemble._winners._entries.items()} == winners_put
    # A turn's own top level: one turn's metadata is not another's.
    assert [e.parse_data["metadata"] for e in third] == [{"channel": "a"}] * len(texts)
    assert [e.parse_data["metadata"] for e in fourth] == [{}] * len(texts)
    assert [e.intent_name for e in third] == [e.intent_name for e in fourth]


def test_the_least_recently_used_entry_goes_first() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == 1
    memo.put("c", 3)
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (1, None, 3)
    # Use order is now a, c. A value put again keeps its key's place; a miss changes nothing.
    memo.put("a", 4)
    assert memo.get("zzz") is None
    memo.put("d", 5)
    assert (memo.get("a"), memo.get("c"), memo.get("d"), len(memo)) == (None, 3, 5, 2)


def test_a_memo_keeps_its_use_order_from_half_full_on() -> None:
    # Below half its size a hit only looks its key up (nothing is dropped before the memo
    # is full); from half full on a hit moves its key last, as before.
    memo: Memo[str, int] = Memo(4)
    memo.put("a", 1)
    assert memo.get("a") == 1  # one of four: the order stays a
    memo.put("b", 2)
    assert memo.get("a") == 1  # two of four: a moves behind b
    memo.put("c", 3)
    memo.put("d", 4)
    memo.put("e", 5)  # over the size: the least recently used, b, goes
    assert (memo.get("b"), memo.get("a"), memo.get("e"), len(memo)) == (None, 1, 5, 4)


def test_a_full_memo_drops_its_least_recently_used_eighth_keeping_those_used_since() -> None:
    """Over its size, the memo drops its least recently used eighth at once: entries used
    since they were put (hits once half full) stay, however early they were put."""
    memo: Memo[int, int] = Memo(64)
    for key in range(64):
        memo.put(key, key)
    assert memo.get(0) == 0 and memo.get(5) == 5  # used: now the most recent
    memo.put(64, 64)  # over the size: the eight least recently used go, 1-4 and 6-9

    assert sorted(set(range(65)) - set(memo._entries)) == [1, 2, 3, 4, 6, 7, 8, 9]
    assert (memo.get(0), memo.get(5), memo.get(10), memo.get(64), len(memo)) == (0, 5, 10, 64, 57)


def test_a_full_memo_takes_a_new_entry_as_fast_as_one_with_room() -> None:
    """Once full, the memo drops its least recently used entries. A dict finds its first key
    by scanning past every key dropped before it: one at a time, a miss on a full memo of
    65,536 cost 70 times one with room. The CPU time a miss costs stays that of a memo with
    room (same run, thread time), and the memo never holds more than its size."""
    import time

    size = 65_536
    Key = tuple[tuple[str, int], tuple[str, int]]
    memo: Memo[Key, int] = Memo(size)
    keys: list[Key] = [(("state", i), ("action", i)) for i in range(4 * size)]

    def seconds(batch: list[Key]) -> float:
        started = time.thread_time()
        for key in batch:
            if memo.get(key) is None:
                memo.put(key, 1)
        return time.thread_time() - started

    with_room = seconds(keys[:size])
    assert len(memo) == size
    full = seconds(keys[size:]) / 3
    assert size * 7 // 8 <= len(memo) <= size
    assert memo.get(keys[-1]) == 1 and memo.get(keys[0]) is None
    assert full < 3 * with_room, (full, with_room)


def test_message_ids_look_like_uuid4_hex() -> None:
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def _forget(ensemble: PolicyEnsemble) -> None:
    ensemble.forget_predictions()
    for policy in ensemble.policies:
        if isinstance(policy, MLPolicy):
            policy._scores.clear()
        if isinstance(policy, RulePolicy):
            policy.rules_._applicable.clear()
            policy.unhappy_._applicable.clear()


SHARED_BOTS = sorted(d.name for d in BOTS.iterdir() if (d / "config.yml").is_file())


def _summary(prediction: PolicyPrediction) -> tuple[Any, ...]:
    """Everything of a prediction the processor reads or logs (events without their time)."""
    events = [{**e.as_dict(), "timestamp": None} for e in prediction.events]
    return (
        prediction.action_name,
        prediction.confidence,
        prediction.policy_name,
        list(prediction.probabilities),
        events,
        prediction.is_end_to_end_prediction,
        prediction.is_no_user_prediction,
        prediction.action_metadata,
        prediction.policy_priority,
        prediction.hide_rule_turn,
    )


@pytest.mark.parametrize("bot_name", SHARED_BOTS)
def test_predictions_from_memory_are_those_computed_afresh(bot_name: str) -> None:
    domain, stories, policies = bot(bot_name)
    ensemble = PolicyEnsemble.train(policies, stories, domain)

    def predictions(fresh: bool) -> list[tuple[Any, ...]]:
        seen: list[tuple[Any, ...]] = []

        def predict(tracker: Tracker) -> str:
            if fresh:
                _forget(ensemble)
            p = ensemble.predict(tracker, domain)
            seen.append(_summary(p))
            return p.action_name

        for _ in range(2):  # the second pass finds every window in memory
            for training in stories:
                replay(predict, training, domain)
        return seen

    assert predictions(fresh=False) == predictions(fresh=True)


def _texts_of(stories: list[TrainingStory]) -> list[str]:
    texts = {e.text for s in stories for e in s.events if isinstance(e, UserUttered) and e.text}
    return sorted(texts)[:20] + ["hello there", "something else entirely"]


def _random_user(rng: random.Random, domain: Domain, texts: list[str]) -> UserUttered:
    intent = rng.choice([*domain.user_intents, "restart", None])
    entities: list[dict[str, Any]] = [
        {"entity": name, "value": rng.choice(["a", "b"])}
        for name in domain.entities
        if rng.random() < 0.3
    ]
    for entity in entities:
        if rng.random() < 0.2:
            entity["role"] = "r"
    return UserUttered(
        text=rng.choice([*texts, None]) if intent else rng.choice(texts),
        parse_data={"intent": {"name": intent, "confidence": 0.9}, "entities": entities},
    )


def _random_event(rng: random.Random, domain: Domain, texts: list[str], predicted: str) -> Event:
    """What could happen next: mostly the user speaks or the predicted action runs; now and
    then another action, a slot, a loop, a rejection, a rewind or a restart."""
    roll = rng.random()
    if roll < 0.4:
        return _random_user(rng, domain, texts)
    if roll < 0.75:
        return ActionExecuted(action_name=predicted)
    if roll < 0.82:
        return ActionExecuted(action_name=rng.choice(domain.action_names_or_texts))
    if roll < 0.9 and domain.slots:
        slot = rng.choice(domain.slots)
        return SlotSet(key=slot.name, value=rng.choice([None, "a", True, 1.0, [1]]))
    if roll < 0.93:
        return ActiveLoop(name=rng.choice([*domain.forms, None]))
    if roll < 0.96:
        return ActionExecutionRejected(action_name=predicted)
    return rng.choice([Restarted(), UserUtteranceReverted(), ActionReverted(), AllSlotsReset()])


@pytest.mark.parametrize("bot_name", SHARED_BOTS)
def test_remembered_winners_are_those_computed_afresh_in_random_conversations(
    bot_name: str, tmp_path: Path
) -> None:
    domain, stories, policies = bot(bot_name)
    ensemble = PolicyEnsemble.train(policies, stories, domain)
    ensemble.persist(tmp_path)
    # The same trained policies as other objects, with no memory of winners.
    fresh = PolicyEnsemble(PolicyEnsemble.load(tmp_path, domain).policies, memo_size=0)
    asked = 0
    first = ensemble.policies[0]
    computed = first.predict

    def counting(*args: Any) -> PolicyPrediction:
        nonlocal asked
        asked += 1
        return computed(*args)

    first.predict = counting  # type: ignore[method-assign, assignment]
    rng = random.Random(f"winners-{bot_name}")
    texts = _texts_of(stories)
    predictions = 0
    for n in range(150):
        tracker = Tracker(f"random-{n}", domain.slot_defaults(), [listen()])
        for _ in range(rng.randint(1, 14)):
            remembered = ensemble.predict(tracker, domain)
            _forget(fresh)
            assert _summary(remembered) == _summary(fresh.predict(tracker, domain)), (
                bot_name,
                [e.as_dict() for e in tracker.events],
            )
            predictions += 1
            remembered.probabilities[0] = 42.0  # a caller's change stays its own
            tracker.update(_random_event(rng, domain, texts, remembered.action_name))
    if all(p.prediction_window() is not None for p in ensemble.policies):
        assert predictions - asked > predictions / 5  # the memory answered many of them
    else:  # AugmentedMemoizationPolicy reads past the window: nothing is remembered
        assert asked == predictions and len(ensemble._winners) == 0


@pytest.mark.parametrize("bot_name", ["moodbot", "formbot"])
def test_state_texts_join_into_the_state_key(bot_name: str) -> None:
    domain, stories, _ = bot(bot_name)
    checked = 0

    def predict(tracker: Tracker) -> str:
        nonlocal checked
        conversation = ConversationStates(tracker, domain)
        text_states = conversation.text_states()
        for last in (None, 1, 3, 5):
            window = conversation.states[-last:] if last else conversation.states
            assert key_of(conversation.texts(last)) == state_key(window)
            if text_states is not None:
                window = text_states[-last:] if last else text_states
                assert key_of(conversation.texts(last, by_text=True)) == state_key(window)
            checked += 1
        return "action_listen"

    for training in stories:
        replay(predict, training, domain)
    assert checked > 0


def test_new_message_texts_do_not_grow_the_rule_memory() -> None:
    # moodbot's rules name intents, not texts: a window ending in a message's text is
    # looked up afresh instead of adding an entry per distinct message.
    domain, stories, policies = bot("moodbot")
    ensemble = PolicyEnsemble.train(policies, stories, domain)
    rule = next(p for p in ensemble.policies if isinstance(p, RulePolicy))
    sizes = []
    for n in range(50):
        tracker = Tracker(f"u{n}", domain.slot_defaults())
        tracker.update(listen())
        tracker.update(user("greet", text=f"hello number {n}"))
        ensemble.predict(tracker, domain)
        sizes.append(len(rule.rules_._applicable))
    assert sizes[-1] == sizes[0]
