"""The turn loop itself, with a scripted policy: what gets logged when an action rejects, the
prediction limit, followup actions, and NLU kept off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import httpx
import pytest
from rasa_sdk import Action, ActionExecutionRejection, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from server.dialogue.actions import Action as ServerAction
from server.dialogue.actions import ActionContext
from server.dialogue.agent import Agent
from server.dialogue.domain import Domain
from server.dialogue.messages import CollectingOutputChannel, UserMessage
from server.dialogue.policies.prediction import PolicyPrediction
from server.dialogue.processor import INLINE_PARSE_CHARS, DialogueModel
from server.trackers.events import (
    ActionExecuted,
    ActionExecutionRejected,
    BotUttered,
    Event,
    LoopInterrupted,
    UserUttered,
)
from server.trackers.memory_lock import InMemoryLockStore
from server.trackers.tracker import Tracker as BotTracker
from tests.dialogue.conversation_fixtures import Conversation, make_agent
from tests.dialogue.sdk_transport import SdkTransport
from tests.loop_lag import loop_hold

DOMAIN = Domain.from_dict(
    {
        "intents": ["greet", "go"],
        "actions": [
            "action_reject",
            "action_then_greet",
            "action_sets_old_slot",
            "action_greets_with_buttons",
        ],
        "responses": {
            "utter_greet": [{"text": "Hello!"}],
            "utter_default": [{"text": "Sorry?"}],
        },
    }
)


class Scripted:
    """Predicts the given actions in turn (with events), then listens."""

    def __init__(self, *steps: str | tuple[str, list[Event]]) -> None:
        self.steps = list(steps)

    def predict(self, tracker: BotTracker, domain: Domain) -> PolicyPrediction:
        step = self.steps.pop(0) if self.steps else "action_listen"
        name, events = (step, []) if isinstance(step, str) else step
        return PolicyPrediction(name, 1.0, "Scripted", [], events=list(events))


class Forever:
    def predict(self, tracker: BotTracker, domain: Domain) -> PolicyPrediction:
        return PolicyPrediction("utter_greet", 1.0, "Forever", [])


class Reject(Action):
    def name(self) -> str:
        return "action_reject"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        raise ActionExecutionRejection(self.name(), "not now")


class ThenGreet(Action):
    def name(self) -> str:
        return "action_then_greet"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [FollowupAction("utter_greet")]


class SetsAnOldSlot(Action):
    """Says something and returns an event stamped long ago, as an action server may."""

    def name(self) -> str:
        return "action_sets_old_slot"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="done")
        return [SlotSet("x", 1, timestamp=1_000_000_000.0)]


class GreetsWithButtons(Action):
    """Names a domain response and adds parts of its own, as rasa-sdk allows."""

    def name(self) -> str:
        return "action_greets_with_buttons"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(
            response="utter_greet", buttons=[{"title": "Go", "payload": "/go"}], image="i.png"
        )
        return []


def agent_for(policies: Any, nlu: Any = None) -> Agent:
    model = DialogueModel(DOMAIN, policies, nlu=nlu)
    return make_agent(
        model, transport=SdkTransport(Reject, ThenGreet, SetsAnOldSlot, GreetsWithButtons)
    )


async def test_a_rejected_action_is_logged_as_rejected_without_its_prediction_events() -> None:
    interrupted: list[Event] = [LoopInterrupted(is_interrupted=True)]
    agent = agent_for(Scripted(("action_reject", interrupted), ("utter_greet", interrupted)))
    conversation = Conversation(agent, "rejected")
    turn = await conversation.say("/go")
    assert turn.actions == ["utter_greet"]
    assert turn.texts == ["Hello!"]
    kinds = [type(e).__name__ for e in turn.events]
    rejected = kinds.index("ActionExecutionRejected")
    # Rejected: neither its LoopInterrupted nor an ActionExecuted is logged; the next
    # prediction's events come right before its action, then how it read the user message,
    # as Rasa orders them (before: the user_featurization first).
    assert "LoopInterrupted" not in kinds[:rejected]
    assert kinds[rejected:] == [
        "ActionExecutionRejected",
        "LoopInterrupted",
        "DefinePrevUserUtteredFeaturization",
        "ActionExecuted",
        "BotUttered",
        "ActionExecuted",
    ]


async def test_event_timestamps_follow_the_order_of_the_events() -> None:
    # Rasa stamps an action's events when it logs them, after the action's own event: a
    # consumer ordering a conversation by timestamp (a dashboard, `?until=`) sees it as it
    # happened. Before, session_started and every bot message were older than the action that
    # produced them, and an action server's stamp was kept as sent.
    interrupted: list[Event] = [LoopInterrupted(is_interrupted=True)]
    agent = agent_for(Scripted("utter_greet", ("action_sets_old_slot", interrupted)))
    conversation = Conversation(agent, "in-order")
    turn = await conversation.say("/go")
    assert turn.actions == ["utter_greet", "action_sets_old_slot"]
    events = (await conversation.tracker()).events
    assert [type(e).__name__ for e in events[:2]] == ["ActionExecuted", "SessionStarted"]
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps), [(type(e).__name__, e.timestamp) for e in events]


async def test_a_text_from_an_action_server_is_a_bot_event_without_empty_parts() -> None:
    # rasa-sdk sends `buttons: [], elements: [], custom: {}` with every text; Rasa keeps only
    # the parts with a value, so its bot event reads `custom: null` (a consumer that shows a
    # custom payload whenever there is one). Before, ours kept the empty list and object.
    agent = agent_for(Scripted("action_sets_old_slot"))
    turn = await Conversation(agent, "parts").say("/go")
    bot = next(e for e in turn.events if isinstance(e, BotUttered))
    assert bot.as_dict()["data"] == dict.fromkeys(
        ("elements", "quick_replies", "buttons", "attachment", "image", "custom")
    )
    assert bot.as_dict()["metadata"] == {}


async def test_parts_an_action_adds_to_a_named_response_reach_the_user() -> None:
    # Rasa renders the response, then adds the action's buttons to its own and lets the
    # action's other parts (an image) override it. Before, they were dropped.
    agent = agent_for(Scripted("action_greets_with_buttons"))
    turn = await Conversation(agent, "named").say("/go")
    assert [{k: v for k, v in m.items() if k != "recipient_id"} for m in turn.messages] == [
        {"text": "Hello!", "buttons": [{"title": "Go", "payload": "/go"}]},
        {"image": "i.png"},
    ]
    bot = next(e for e in turn.events if isinstance(e, BotUttered))
    assert bot.data["buttons"] == [{"title": "Go", "payload": "/go"}]
    assert bot.data["image"] == bot.data["attachment"] == "i.png"
    assert bot.metadata["utter_action"] == "utter_greet"


async def test_a_turn_stops_after_the_prediction_limit() -> None:
    agent = agent_for(Forever())
    conversation = Conversation(agent, "chatty")
    turn = await conversation.say("/greet")
    assert turn.actions == ["utter_greet"] * agent.processor.max_predictions
    tracker = await conversation.tracker()
    assert tracker.latest_action_name == "action_listen"
    # The next message is handled normally.
    assert len((await conversation.say("/greet")).actions) == agent.processor.max_predictions


class RejectsForever:
    def predict(self, tracker: BotTracker, domain: Domain) -> PolicyPrediction:
        return PolicyPrediction("action_reject", 1.0, "RejectsForever", [])


async def test_a_turn_of_actions_that_keep_rejecting_ends() -> None:
    # Rejected actions are not counted towards the limit (as in Rasa, whose turn would then
    # never end): a bound on the predictions ends it, listening.
    agent = agent_for(RejectsForever())
    conversation = Conversation(agent, "rejecting")
    turn = await conversation.say("/go")
    rejected = [e for e in turn.events if isinstance(e, ActionExecutionRejected)]
    assert 0 < len(rejected) <= 3 * agent.processor.max_predictions
    assert (await conversation.tracker()).latest_action_name == "action_listen"


async def test_a_followup_action_runs_next_whatever_the_policies_say() -> None:
    agent = agent_for(Scripted("action_then_greet"))
    conversation = Conversation(agent, "followup")
    turn = await conversation.say("/go")
    assert turn.actions == ["action_then_greet", "utter_greet"]
    executed = [e for e in turn.events if isinstance(e, ActionExecuted)]
    # Logged as Rasa logs it: chosen by `followup_action` (before: no policy).
    assert executed[-2].action_name == "utter_greet"
    assert (executed[-2].policy, executed[-2].confidence) == ("followup_action", 1.0)


class SlowNLU:
    """An NLU that blocks its thread, as a CPU-heavy pipeline or a Duckling call does: until
    the event loop has run other work (`loop_ran`), which it never does if the parse holds
    the loop's own thread (10 s at most, then `saw_the_loop_run` is False)."""

    def __init__(self) -> None:
        self.loop_ran = threading.Event()
        self.saw_the_loop_run = False

    def parse(
        self, text: str, message_id: str | None = None, metadata: dict | None = None
    ) -> dict[str, Any]:
        self.saw_the_loop_run = self.loop_ran.wait(10)
        return {"text": text, "intent": {"name": "greet", "confidence": 1.0}, "entities": []}


async def test_nlu_runs_off_the_event_loop() -> None:
    """The loop ticks ten times while the parse is under way (before, a fixed 0.3 s parse had
    to see ten ticks of 10 ms: a loaded host ticks slower)."""
    nlu = SlowNLU()
    agent = agent_for(Scripted("utter_greet"), nlu=nlu)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
            if ticks == 10:
                nlu.loop_ran.set()

    ticker = asyncio.create_task(tick())
    try:
        turn = await Conversation(agent, "slow-nlu").say("hello")
    finally:
        ticker.cancel()
    assert turn.texts == ["Hello!"]
    assert nlu.saw_the_loop_run  # the loop kept running while the NLU worked


class QuickNLU:
    """A pipeline that says it never blocks (no Duckling, no sentence encoder)."""

    blocking = False

    def __init__(self) -> None:
        self.threads: list[str] = []

    def parse(
        self, text: str, message_id: str | None = None, metadata: dict | None = None
    ) -> dict[str, Any]:
        self.threads.append(threading.current_thread().name)
        return {"text": text, "intent": {"name": "greet", "confidence": 1.0}, "entities": []}


async def test_a_pipeline_that_never_blocks_parses_on_the_loop_without_a_thread_hop() -> None:
    nlu = QuickNLU()
    agent = agent_for(Scripted("utter_greet"), nlu=nlu)
    turn = await Conversation(agent, "quick-nlu").say("hello")
    assert turn.texts == ["Hello!"]
    assert nlu.threads == [threading.current_thread().name]


async def test_a_long_message_is_parsed_off_the_loop_even_by_a_pipeline_that_never_blocks() -> None:
    """Before, a 900 KB message held the loop for about 0.34 s (a health check waited that
    long) while the sparse pipeline parsed it on the loop's thread."""
    nlu = QuickNLU()
    agent = agent_for(Scripted("utter_greet"), nlu=nlu)
    conversation = Conversation(agent, "long-message")
    await conversation.say("x" * INLINE_PARSE_CHARS)
    await conversation.say("x" * (INLINE_PARSE_CHARS + 1))
    loop_thread = threading.current_thread().name
    assert nlu.threads[0] == loop_thread
    assert nlu.threads[1] != loop_thread


class BlockingRecorder(QuickNLU):
    """A pipeline that may block (Duckling, an NLU server): parsed in a thread."""

    blocking = True


async def test_a_posted_message_is_parsed_where_a_turn_would_parse_it() -> None:
    """Before, POST .../messages parsed on the event loop whatever the pipeline: with
    Duckling or an NLU server every other conversation and /health waited for the HTTP
    call (up to its timeout), and a long text held the loop as a turn's did before."""
    loop_thread = threading.current_thread().name
    quick, blocking = QuickNLU(), BlockingRecorder()
    for nlu in (quick, blocking):
        agent = agent_for(Scripted(), nlu=nlu)
        await agent.add_message("posted", "hello")
        await agent.add_message("posted", "x" * (INLINE_PARSE_CHARS + 1))
    assert quick.threads[0] == loop_thread  # a sparse parse: no thread hop, as in a turn
    assert loop_thread not in quick.threads[1:] + blocking.threads
    assert len(blocking.threads) == 2


class ReleasedWithARoundTrip:
    """The in-memory lock store, its release awaiting a round trip as Redis's does: a request
    given to `meanwhile` runs (and may take the lock) before the releasing one goes on."""

    def __init__(self) -> None:
        self.locks = InMemoryLockStore()
        self.meanwhile: asyncio.Future[Any] | None = None

    def lock(self, conversation_id: str, *args: Any) -> Any:
        return _RoundTripHeld(self, self.locks.lock(conversation_id, *args))


class _RoundTripHeld:
    def __init__(self, store: ReleasedWithARoundTrip, held: Any) -> None:
        self.store, self.held = store, held

    async def __aenter__(self) -> None:
        await self.held.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.held.__aexit__(*exc_info)
        other, self.store.meanwhile = self.store.meanwhile, None
        if other is not None:
            await other


async def test_predict_answers_for_the_conversation_as_its_lock_held_it() -> None:
    """Before, POST .../predict let the conversation's lock go, then predicted and wrote the
    tracker: a turn that took the lock during the release (a Redis lock's round trip) was
    in the scores and the tracker of a prediction asked before it."""
    agent = agent_for(Scripted("utter_greet", "action_listen", "utter_greet"))
    locks = agent.processor.lock_store = ReleasedWithARoundTrip()
    await Conversation(agent, "asked").say("hello")
    before = len((await agent.tracker("asked")).events)
    turn = asyncio.ensure_future(agent.handle_message(UserMessage("/go", "asked")))
    locks.meanwhile = turn
    predicted = await agent.predict("asked")
    assert turn.done()
    assert predicted["tracker"]["latest_message"]["text"] == "hello"
    assert predicted["tracker"]["latest_action_name"] == "action_listen"
    assert len(predicted["tracker"]["events"]) == before


class Recording:
    """An output channel of another kind: it gets each bot message whole."""

    name = "recording"

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        self.messages.append({"recipient_id": recipient_id, **message})


async def test_a_collecting_channel_gets_the_parts_the_turn_returns() -> None:
    buttons = [{"title": "yes", "payload": "/greet"}]
    domain = Domain.from_dict(
        {
            "intents": ["greet"],
            "responses": {
                "utter_split": [{"text": "one\n\ntwo", "image": "https://x.test/i.png"}],
                "utter_buttons": [{"text": "pick\n\none", "buttons": buttons}],
            },
        }
    )
    agent = make_agent(DialogueModel(domain, Scripted("utter_split", "utter_buttons")))
    collector = CollectingOutputChannel()
    sent = await agent.handle_message(UserMessage("/greet", "parts", output_channel=collector))
    assert sent == [
        {"recipient_id": "parts", "text": "one"},
        {"recipient_id": "parts", "text": "two"},
        {"recipient_id": "parts", "image": "https://x.test/i.png"},
        {"recipient_id": "parts", "text": "pick\n\none", "buttons": buttons},
    ]
    # An empty collector is the turn's own output: the list returned is its list.
    assert collector.messages is sent

    recording = Recording()
    again = make_agent(DialogueModel(domain, Scripted("utter_split", "utter_buttons")))
    assert await again.handle_message(UserMessage("/greet", "p", output_channel=recording))
    assert [m["text"] for m in recording.messages] == ["one\n\ntwo", "pick\n\none"]


async def test_a_trackers_slot_defaults_are_its_own() -> None:
    agent = agent_for(Scripted())
    model = DialogueModel(DOMAIN, Scripted())
    first = await agent.processor.tracker_for("first", model)
    first.slot_defaults["session_started_metadata"] = {"changed": "by a turn"}
    second = await agent.processor.tracker_for("second", model)
    assert second.slot_defaults == DOMAIN.slot_defaults() == {"session_started_metadata": None}


async def test_an_action_is_the_kind_the_current_models_domain_names() -> None:
    agent = agent_for(Scripted())
    processor = agent.processor
    with_form = Domain.from_dict(
        {"intents": ["greet"], "forms": {"utter_greet": {"required_slots": []}}}
    )
    kinds = [
        type(processor.action_for(name, domain)).__name__
        for name, domain in [
            ("utter_greet", DOMAIN),
            ("utter_greet", DOMAIN),
            ("utter_greet", with_form),
            ("utter_greet", DOMAIN),
            ("action_unknown", DOMAIN),
            ("action_listen", DOMAIN),
        ]
    ]
    assert kinds == [
        "ResponseAction",
        "ResponseAction",
        "FormAction",
        "ResponseAction",
        "RemoteAction",
        "ActionListen",
    ]
    assert processor.action_for("utter_greet", DOMAIN).name == "utter_greet"


async def test_each_action_of_a_turn_sees_the_tracker_it_runs_on() -> None:
    # A prediction's events run on a copy of the tracker: the action of that prediction
    # sees them, the actions before and after it see the turn's own tracker.
    domain = Domain.from_dict({"intents": ["go"], "actions": ["action_record"]})
    seen: list[tuple[BotTracker, Event]] = []

    class Recording(ServerAction):
        name = "action_record"

        async def run(self, ctx: ActionContext) -> list[Event]:
            seen.append((ctx.tracker, ctx.tracker.events[-1]))
            return []

    interrupted = LoopInterrupted(is_interrupted=True)
    policies = Scripted("action_record", ("action_record", [interrupted]), "action_record")
    agent = make_agent(DialogueModel(domain, policies))
    agent.processor._actions_domain = domain
    agent.processor._actions = {"action_record": Recording()}
    await Conversation(agent, "recorded").say("/go")
    (first, first_last), (second, second_last), (third, third_last) = seen
    assert second is not first and isinstance(second_last, LoopInterrupted)
    assert third is first and isinstance(third_last, ActionExecuted)
    # The event the action saw is the one logged (a copy of the policy's, stamped once).
    assert third_last.action_name == "action_record"
    assert [e for e in third.events if isinstance(e, LoopInterrupted)] == [interrupted]
    assert any(e is second_last for e in third.events)


@pytest.mark.timing
async def test_a_long_conversation_is_written_out_for_the_action_server_off_the_loop() -> None:
    """Before, each action call wrote a 100,000-event session out as JSON on the event loop
    (the stdlib's encoder): every other conversation waited about 0.4 s. Now the tracker is
    written in a thread and encoded by orjson."""
    done = httpx.MockTransport(lambda request: httpx.Response(200, json={"events": []}))
    policy = Scripted("action_listen", "action_then_greet")
    agent = make_agent(DialogueModel(DOMAIN, policy), transport=done)
    await agent.replace_events("long", greetings(25_000))
    await agent.handle_message(UserMessage("hello", "long"))  # the tracker is now a hot one
    async with loop_hold() as hold:
        await agent.handle_message(UserMessage("go", "long"))
    assert policy.steps == []  # the action ran
    # 0.28 s of CPU with the stdlib's encoder, then 40-80 ms with orjson on the loop
    # (the bound does not see the tracker written on the loop: 0.08-0.12 s).
    assert hold.busiest < 0.05 * hold.slowness, hold
    # The loop's own work: 26-28 ms with the body encoded on it, 17 ms with its event dicts
    # freed on it after the call, 1-2 ms now.
    assert hold.loop_busiest < 0.006 * hold.slowness, hold


@pytest.mark.timing
async def test_the_first_load_of_a_long_conversation_is_folded_off_the_loop() -> None:
    """Before, the first turn after a PUT of 100,000 events (or a process start) rebuilt the
    conversation on the event loop: every other conversation and /health waited 1-2 s.
    Now the events are folded in a thread; the turn sees the whole conversation all the same."""
    agent = make_agent(DialogueModel(DOMAIN, Scripted("utter_greet", "action_listen")))
    await agent.replace_events("long", greetings(25_000))  # forgets its hot tracker
    async with loop_hold() as hold:
        said_back = await agent.handle_message(UserMessage("hello", "long"))
    assert hold.busiest < 0.1 * hold.slowness  # 0.29 s before, with the collector off
    assert [m["text"] for m in said_back] == ["Hello!"]
    stored = await agent.processor.trackers.store.load("long")
    assert stored is not None and len(stored) == 100_000 + 5  # with its user_featurization


def greetings(turns: int) -> list[Event]:
    """A conversation of `turns` greetings answered, four events each."""
    said = {"text": "/greet", "intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    turn = [
        UserUttered(text="/greet", parse_data=said),
        ActionExecuted(action_name="utter_greet"),
        BotUttered(text="Hello!"),
        ActionExecuted(action_name="action_listen"),
    ]
    return turn * turns


class GatedNLU:
    """A blocking pipeline (parsed in a thread) whose first parse waits for `gate`."""

    blocking = True

    def __init__(self) -> None:
        self.gate, self.started = threading.Event(), threading.Event()
        self.texts: list[str] = []

    def parse(
        self, text: str, message_id: str | None = None, metadata: dict | None = None
    ) -> dict[str, Any]:
        self.texts.append(text)
        if len(self.texts) == 1:
            self.started.set()
            self.gate.wait(5)
        return {"text": text, "intent": {"name": "greet", "confidence": 1.0}, "entities": []}


class Failing:
    def predict(self, tracker: BotTracker, domain: Domain) -> PolicyPrediction:
        raise RuntimeError("the policy broke")


async def test_a_conversations_turns_run_one_at_a_time_and_leave_its_lock_free() -> None:
    nlu = GatedNLU()
    agent = agent_for(Scripted(), nlu=nlu)
    locks = agent.processor.lock_store._queues
    first = asyncio.ensure_future(agent.handle_message(UserMessage("one", "gated")))
    assert await asyncio.to_thread(nlu.started.wait, 5)
    second = asyncio.ensure_future(agent.handle_message(UserMessage("two", "gated")))
    await asyncio.sleep(0.05)
    assert nlu.texts == ["one"] and "gated" in locks  # the second waits for the first
    nlu.gate.set()
    await asyncio.gather(first, second)
    assert nlu.texts == ["one", "two"] and locks == {}

    broken = make_agent(DialogueModel(DOMAIN, Failing()))
    with contextlib.suppress(RuntimeError):
        await broken.handle_message(UserMessage("/greet", "broken"))
    assert broken.processor.lock_store._queues == {}  # free again after a failed turn
    with contextlib.suppress(RuntimeError):
        await asyncio.wait_for(broken.handle_message(UserMessage("/greet", "broken")), 1)
