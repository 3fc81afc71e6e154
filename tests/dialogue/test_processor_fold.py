"""A long conversation's states, folded in a thread before its first prediction: a request
cut off meanwhile leaves the next one on the same conversation right."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from server.dialogue.agent import Agent
from server.dialogue.domain import Domain
from server.dialogue.messages import UserMessage
from server.dialogue.policies import featurization
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.policies.featurization import ConversationStates, states_and_labels
from server.dialogue.processor import DialogueModel
from server.trackers.events import Event, Restarted, SlotSet
from server.trackers.tracker import Tracker
from tests.dialogue.conversation_fixtures import make_agent
from tests.dialogue.policy_fixtures import action, listen, story, user

DOMAIN = Domain.from_dict(
    {
        "intents": ["greet", "go"],
        "responses": {"utter_greet": [{"text": "Hello!"}], "utter_bye": [{"text": "Bye!"}]},
    }
)
RULES = [
    story("greet", user("greet"), action("utter_greet"), is_rule=True),
    story("go", user("go"), action("utter_bye"), is_rule=True),
]


class HeldFold:
    """Holds the first fold of a thread other than the loop's in the middle (its new events
    taken, none folded yet) until `go` is set; `ended` is set once that fold ended."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.held, self.go, self.ended = threading.Event(), threading.Event(), threading.Event()
        self._thread: int | None = None
        states = featurization._IncrementalStates
        fold_events, advance = states._fold_events, states.advance

        def held_fold(cache: Any, new: Any) -> bool:
            if threading.current_thread() is not threading.main_thread() and not self.held.is_set():
                self._thread = threading.get_ident()
                self.held.set()
                self.go.wait(10)
            return fold_events(cache, new)

        def ended_advance(cache: Any, tracker: Any) -> bool:
            try:
                return advance(cache, tracker)
            finally:
                if threading.get_ident() == self._thread:
                    self.ended.set()

        monkeypatch.setattr(states, "_fold_events", held_fold)
        monkeypatch.setattr(states, "advance", ended_advance)

    async def wait(self, event: Callable[[float], bool]) -> None:
        assert await asyncio.to_thread(event, 10)


def greetings(turns: int) -> list[Event]:
    """A conversation of `turns` greetings answered."""
    return [e for _ in range(turns) for e in (user("greet"), action("utter_greet"), listen())]


async def test_a_prediction_cut_off_while_its_states_fold_leaves_the_next_ones_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, the fold ran on the state cache kept on the tracker: cut off (the response
    timeout, the server's stop), the request let go of the conversation's lock while the
    thread went on writing that cache, and the next request on the same hot tracker folded
    into it too. The policies then read each state of the session twice, at every later
    prediction. Now the thread folds a cache of its own, put onto the tracker only when the
    fold ends under the lock; one cut off is dropped."""
    ensemble = PolicyEnsemble.train([{"name": "RulePolicy"}], RULES, DOMAIN)
    agent = make_agent(DialogueModel(DOMAIN, ensemble))
    await agent.replace_events("long", [listen(), *greetings(1_000)])
    fold = HeldFold(monkeypatch)

    cut_off = asyncio.ensure_future(agent.predict("long"))
    await fold.wait(fold.held.wait)  # its fold is in the middle, in a thread
    cut_off.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cut_off
    predicted = await agent.predict("long")  # while the first fold still runs
    fold.go.set()
    await fold.wait(fold.ended.wait)

    assert predicted == await agent.predict("long")
    await next_turn_folds(agent)


async def test_a_long_conversations_first_prediction_after_a_model_swap_folds_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The states kept for the replaced model (another domain) stayed on the tracker: the
    fold in the thread could not put its own back, and the prediction folded every event of
    the session again on the loop (all 3,001 here; 100,000 events held it 0.4 s)."""
    models = [DialogueModel(DOMAIN, PolicyEnsemble.train([{"name": "RulePolicy"}], RULES, DOMAIN))]
    agent = make_agent(models[0])
    agent = Agent(agent.processor, lambda: models[0])
    await agent.replace_events("long", [listen(), *greetings(1_000)])
    before = await agent.predict("long")
    domain = Domain.from_dict(DOMAIN.as_dict())  # the same bot, newly loaded
    models[0] = DialogueModel(domain, PolicyEnsemble.train([{"name": "RulePolicy"}], RULES, domain))
    on_loop: list[int] = []
    fold_events = featurization._IncrementalStates._fold_events

    def counted(cache: Any, new: Any) -> bool:
        if threading.current_thread() is threading.main_thread():
            on_loop.append(len(new))
        return fold_events(cache, new)

    monkeypatch.setattr(featurization._IncrementalStates, "_fold_events", counted)
    assert await agent.predict("long") == before
    assert sum(on_loop) < 100, on_loop


class FoldedEvents:
    """Counts the events the state caches fold (on the loop and in threads) once `start`ed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch | None) -> None:
        self.count: int | None = None
        self.on_loop = 0  # of them, those folded on the loop
        if monkeypatch is None:  # counts nothing
            return
        fold_events = featurization._IncrementalStates._fold_events

        def counted(cache: Any, new: Any) -> bool:
            if self.count is not None:
                self.count += len(new)
                if threading.current_thread() is threading.main_thread():
                    self.on_loop += len(new)
            return fold_events(cache, new)

        monkeypatch.setattr(featurization._IncrementalStates, "_fold_events", counted)

    def start(self) -> None:
        self.count = self.on_loop = 0


async def cut_off(agent: Agent, fold: HeldFold, request: Callable[[], Any]) -> None:
    """`request` cut off while its fold is in the middle; returns once that fold ended."""
    task = asyncio.ensure_future(request())
    await fold.wait(fold.held.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fold.go.set()
    await fold.wait(fold.ended.wait)


async def next_turn_folds(
    agent: Agent, folded: FoldedEvents | None = None, domain: Domain = DOMAIN
) -> int:
    """How many events the next turn folds (counted by `folded`); it answers right, and the
    states it keeps for the stored conversation are those of a fold from scratch."""
    if folded is None:
        folded = FoldedEvents(None)
    folded.start()
    said = await agent.handle_message(UserMessage("/go", "long"))
    assert [m["text"] for m in said] == ["Bye!"]
    tracker = await agent.processor.trackers.load("long", domain.kept_slot_defaults)
    assert tracker is not None
    fresh = Tracker("long", domain.slot_defaults(), tracker.events)
    expected, _ = states_and_labels(fresh.applied_events(), domain, live=True)
    assert ConversationStates(tracker, domain).states == expected
    assert folded.count is not None
    return folded.count


def long_agent() -> Agent:
    return make_agent(
        DialogueModel(DOMAIN, PolicyEnsemble.train([{"name": "RulePolicy"}], RULES, DOMAIN))
    )


@pytest.mark.parametrize("cut", ["message", "predict"])
async def test_the_turn_after_one_cut_off_while_its_states_fold_goes_on_from_that_fold(
    monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    """Before, the fold of a turn cut off was dropped once it ended, and the next turn
    folded all 3,001 events of the session again (100,000: 0.4 s of CPU). Now it goes on
    from the events that fold read: those stored before the cut-off turn, which the next
    turn's tracker (read again from the store after a cut-off message) starts with."""
    agent = long_agent()
    await agent.replace_events("long", [listen(), *greetings(1_000)])
    fold, folded = HeldFold(monkeypatch), FoldedEvents(monkeypatch)
    if cut == "message":
        await cut_off(agent, fold, lambda: agent.handle_message(UserMessage("/greet", "long")))
    else:
        await cut_off(agent, fold, lambda: agent.predict("long"))
    assert await next_turn_folds(agent, folded) < 10


async def test_a_cut_off_fold_is_not_gone_on_from_once_another_process_rewrote_the_conversation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process replaced the stored events by as many of the same kinds and
    timestamps, one message and answer changed: the fold kept is dropped, the session folded
    afresh (going on from it, the states read a greeting there)."""
    agent = long_agent()
    events = [listen(), *greetings(1_000)]
    await agent.replace_events("long", events)
    fold, folded = HeldFold(monkeypatch), FoldedEvents(monkeypatch)
    await cut_off(agent, fold, lambda: agent.handle_message(UserMessage("/greet", "long")))
    dicts = [e.as_dict() for e in events]
    dicts[1501]["parse_data"]["intent"]["name"] = "go"  # a user event in the middle
    dicts[1501]["text"] = "/go"
    dicts[1502]["name"] = "utter_bye"
    dicts.append({"event": "action", "name": "action_listen", "timestamp": 1.0})
    await agent.processor.trackers.store.replace("long", dicts)
    assert await next_turn_folds(agent, folded) > 3_000  # all of the session, afresh


@pytest.mark.parametrize("appended", ["turns", "restart"])
async def test_a_cut_off_fold_goes_on_over_what_another_process_appended(
    monkeypatch: pytest.MonkeyPatch, appended: str
) -> None:
    """Turns another process appended after the cut-off one (or a restart) fold on from the
    fold kept: the states are those of a fold from scratch."""
    agent = long_agent()
    await agent.replace_events("long", [listen(), *greetings(1_000)])
    fold, folded = HeldFold(monkeypatch), FoldedEvents(monkeypatch)
    await cut_off(agent, fold, lambda: agent.handle_message(UserMessage("/greet", "long")))
    more = greetings(3) if appended == "turns" else [Restarted(), listen(), *greetings(1)]
    await agent.processor.trackers.store.append("long", [e.as_dict() for e in more])
    assert await next_turn_folds(agent, folded) < 30


async def test_a_cut_off_fold_is_let_go_of_when_the_model_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fold kept for the replaced model's domain is not gone on from by the new one's: the
    new one's fold runs in a thread too (gone on from, its cache was the other domain's,
    and the prediction folded the whole session again on the loop)."""
    models = [DialogueModel(DOMAIN, PolicyEnsemble.train([{"name": "RulePolicy"}], RULES, DOMAIN))]
    agent = Agent(make_agent(models[0]).processor, lambda: models[0])
    await agent.replace_events("long", [listen(), *greetings(1_000)])
    fold, folded = HeldFold(monkeypatch), FoldedEvents(monkeypatch)
    await cut_off(agent, fold, lambda: agent.handle_message(UserMessage("/greet", "long")))
    domain = Domain.from_dict(DOMAIN.as_dict())
    models[0] = DialogueModel(domain, PolicyEnsemble.train([{"name": "RulePolicy"}], RULES, domain))
    assert await next_turn_folds(agent, folded, domain) > 3_000  # all of the session, afresh
    assert folded.on_loop < 100, folded.on_loop


# A categorical slot of the values true and 1.0: as event content, True == 1 == 1.0.
FLAGGED = Domain.from_dict(
    {
        **DOMAIN.as_dict(),
        "slots": {
            "flag": {"type": "categorical", "values": [True, 1.0], "mappings": []},
        },
    }
)


@pytest.mark.parametrize("stored", [1, 1.0])
async def test_a_cut_off_fold_is_not_gone_on_from_over_a_slot_value_of_another_type(
    monkeypatch: pytest.MonkeyPatch, stored: object
) -> None:
    """Another process rewrote a slot's value true as 1 (or 1.0), same timestamps: equal as
    Python values, another category to the slot. Gone on from, the states kept reading
    "true"; the session is folded afresh."""
    agent = make_agent(
        DialogueModel(FLAGGED, PolicyEnsemble.train([{"name": "RulePolicy"}], RULES, FLAGGED))
    )
    events = [listen(), SlotSet(key="flag", value=True), *greetings(1_000)]
    await agent.replace_events("long", events)
    fold, folded = HeldFold(monkeypatch), FoldedEvents(monkeypatch)
    await cut_off(agent, fold, lambda: agent.handle_message(UserMessage("/greet", "long")))
    dicts = [e.as_dict() for e in events]
    dicts[1]["value"] = stored
    await agent.processor.trackers.store.replace("long", dicts)
    assert await next_turn_folds(agent, folded, FLAGGED) > 3_000  # all of the session, afresh
