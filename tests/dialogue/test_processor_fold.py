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
from server.trackers.events import Event
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
    said = await agent.handle_message(UserMessage("/go", "long"))
    assert [m["text"] for m in said] == ["Bye!"]
    tracker = await agent.processor.trackers.load("long", DOMAIN.kept_slot_defaults)
    assert tracker is not None
    fresh = Tracker("long", DOMAIN.slot_defaults(), tracker.events)
    expected, _ = states_and_labels(fresh.applied_events(), DOMAIN, live=True)
    assert ConversationStates(tracker, DOMAIN).states == expected


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
