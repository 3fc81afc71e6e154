"""Reminders in reminderbot's conversations: a scheduled reminder fires its EXTERNAL_ intent and
the bot's reaction reaches the callback channel; ReminderCancelled and a user message (for
kill_on_user_msg reminders) stop it first.

The custom actions are reminderbot's rasa-sdk actions, run in-process by rasa-sdk's executor;
only action_set_reminder is a variant that schedules 0.3 s ahead instead of 5 s.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest
from rasa_sdk import Action, Tracker
from rasa_sdk.events import ReminderCancelled as SdkReminderCancelled
from rasa_sdk.events import ReminderScheduled
from rasa_sdk.executor import CollectingDispatcher

from server.dialogue import processor as processor_module
from server.dialogue import reminders as reminders_module
from server.dialogue.agent import Agent
from server.dialogue.messages import CollectingOutputChannel, UserMessage
from server.dialogue.processor import Processor
from server.dialogue.reminders import ReminderScheduler
from server.trackers.events import (
    OFF_LOOP_EVENTS,
    BotUttered,
    Event,
    ReminderCancelled,
    Restarted,
    UserUttered,
    event_from_dict,
)
from server.trackers.events import ReminderScheduled as ServerReminder
from tests.action_servers.reminderbot.actions import ActionReactToReminder, ForgetReminders
from tests.dialogue.conversation_fixtures import BotModels, Conversation, make_agent
from tests.dialogue.sdk_transport import SdkTransport
from tests.line_budget import lines_run_in

DELAY = 0.3


class QuickReminder(Action):
    """reminderbot's action_set_reminder, DELAY seconds ahead."""

    kill_on_user_message = False

    def name(self) -> str:
        return "action_set_reminder"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text=f"I will remind you in {DELAY} seconds.")
        when = datetime.datetime.now() + datetime.timedelta(seconds=DELAY)
        return [
            ReminderScheduled(
                "EXTERNAL_reminder",
                trigger_date_time=when,
                entities=tracker.latest_message.get("entities"),
                name="my_reminder",
                kill_on_user_message=self.kill_on_user_message,
            )
        ]


class KillableQuickReminder(QuickReminder):
    kill_on_user_message = True


class CallbackChannel(CollectingOutputChannel):
    """Collects what the bot sends outside a request, and signals its arrival."""

    name = "callback"

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        await super().send_response(recipient_id, message)
        self.arrived.set()

    async def texts_within(self, seconds: float) -> list[str | None]:
        try:
            await asyncio.wait_for(self.arrived.wait(), seconds)
        except TimeoutError:
            pass
        return [m.get("text") for m in self.messages]


def reminderbot(
    bot_models: BotModels, set_reminder: type[Action], forget: type[Action] = ForgetReminders
) -> tuple[Agent, CallbackChannel]:
    callback = CallbackChannel()
    transport = SdkTransport(set_reminder, ActionReactToReminder, forget)
    agent = make_agent(
        bot_models["reminderbot"],
        transport=transport,
        output_channels={"callback": lambda: callback},
    )
    return agent, callback


async def test_a_reminder_fires_and_the_reaction_reaches_the_callback_channel(
    bot_models: BotModels,
) -> None:
    agent, callback = reminderbot(bot_models, QuickReminder)
    conversation = Conversation(agent, "remind-me")
    turn = await conversation.say('/ask_remind_call{"PERSON": "Ada"}')
    assert turn.actions == ["action_set_reminder"]
    assert turn.texts == [f"I will remind you in {DELAY} seconds."]
    assert agent.processor.reminders.pending("remind-me") == ["my_reminder"]

    # kill_on_user_message is false: talking meanwhile does not stop it.
    assert (await conversation.say("/greet")).actions == ["utter_what_can_do"]

    assert await callback.texts_within(5) == ["Remember to call Ada!"]
    assert callback.messages[0]["recipient_id"] == "remind-me"
    tracker = await conversation.tracker()
    external = [e for e in tracker.events if isinstance(e, UserUttered)][-1]
    assert external.intent_name == "EXTERNAL_reminder"
    assert external.metadata.get("is_external") is True
    assert [e["value"] for e in external.entities] == ["Ada"]
    assert tracker.latest_action_name == "action_listen"
    assert agent.processor.reminders.pending("remind-me") == []


async def test_a_reminder_reads_its_conversation_once(bot_models: BotModels) -> None:
    """Before, a reminder read the conversation outside its lock to find its channel, then
    again under the lock for its turn."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    conversation = Conversation(agent, "read-once")
    await conversation.say('/ask_remind_call{"PERSON": "Ada"}')
    store = agent.processor.trackers.store
    load = store.load
    reads: list[str] = []

    async def counted_load(sender_id: str) -> Any:
        reads.append(sender_id)
        return await load(sender_id)

    store.load = counted_load  # type: ignore[method-assign]
    assert await callback.texts_within(5) == ["Remember to call Ada!"]
    assert reads == ["read-once"]


async def test_reminder_cancelled_stops_the_reminder(bot_models: BotModels) -> None:
    agent, callback = reminderbot(bot_models, QuickReminder)
    conversation = Conversation(agent, "forget-it")
    await conversation.say('/ask_remind_call{"PERSON": "Ada"}')

    turn = await conversation.say("/ask_forget_reminders")
    assert turn.actions == ["action_forget_reminders"]
    assert turn.texts == ["Okay, I'll cancel all your reminders."]
    assert agent.processor.reminders.pending("forget-it") == []

    assert await callback.texts_within(DELAY + 0.5) == []


@pytest.mark.parametrize(
    "cancel",
    [
        # rasa-sdk's ReminderCancelled(intent_name=..., entities=tracker.latest_message
        # ["entities"]) from a message without entities
        {"event": "cancel_reminder", "intent": "EXTERNAL_reminder", "entities": []},
        {"event": "cancel_reminder", "name": "", "intent": "EXTERNAL_reminder"},
        {"event": "cancel_reminder", "entities": {}},
    ],
)
async def test_an_empty_filter_of_reminder_cancelled_filters_nothing_as_in_rasa(
    bot_models: BotModels, cancel: dict[str, Any]
) -> None:
    """Rasa narrows a cancellation by name, intent or entities only when they are given (not
    empty). Before, an empty list of entities (or an empty name) cancelled only reminders
    whose entities (name) were just that: none here, and Ada's reminder still fired."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    conversation = Conversation(agent, "cancel-empty")
    await conversation.say('/ask_remind_call{"PERSON": "Ada"}')

    await agent.append_events("cancel-empty", [event_from_dict(cancel)], execute_side_effects=True)

    assert agent.processor.reminders.pending("cancel-empty") == []
    assert await callback.texts_within(DELAY + 0.5) == []


async def test_a_user_message_kills_a_kill_on_user_msg_reminder(bot_models: BotModels) -> None:
    agent, callback = reminderbot(bot_models, KillableQuickReminder)
    conversation = Conversation(agent, "killed")
    await conversation.say('/ask_remind_call{"PERSON": "Ada"}')
    assert agent.processor.reminders.pending("killed") == ["my_reminder"]

    await conversation.say("/greet")
    assert agent.processor.reminders.pending("killed") == []
    assert await callback.texts_within(DELAY + 0.5) == []


class RocketChatChannel(CallbackChannel):
    name = "rocketchat"


def quick_reminderbot(bot_models: BotModels, outputs: dict[str, Any]) -> Agent:
    """reminderbot with QuickReminder, and these output channels by name."""
    transport = SdkTransport(QuickReminder, ActionReactToReminder, ForgetReminders)
    factories: dict[str, Any] = {name: (lambda o=o: o) for name, o in outputs.items()}
    return make_agent(bot_models["reminderbot"], transport=transport, output_channels=factories)


async def test_a_reminder_reaches_the_channel_its_conversation_is_on(
    bot_models: BotModels,
) -> None:
    callback, rocket = CallbackChannel(), RocketChatChannel()
    agent = quick_reminderbot(bot_models, {"callback": callback, "rocketchat": rocket})
    ask = '/ask_remind_call{"PERSON": "Ada"}'
    await agent.handle_message(
        UserMessage(ask, "GENERAL:AliceId", input_channel="rocketchat", output_channel=rocket)
    )
    rocket.messages.clear()
    rocket.arrived.clear()
    # Before: every reminder went to the first of callback, socketio, rocketchat configured,
    # so a Rocket.Chat user's reminder was POSTed to the callback URL.
    assert await rocket.texts_within(5) == ["Remember to call Ada!"]
    assert callback.messages == []


async def test_a_rest_conversation_cannot_send_its_reminders_into_a_rocketchat_room(
    bot_models: BotModels,
) -> None:
    rocket = RocketChatChannel()
    agent = quick_reminderbot(bot_models, {"rest": None, "rocketchat": rocket})
    ask = '/ask_remind_call{"PERSON": "Ada"}'
    rest = CollectingOutputChannel()
    await agent.handle_message(
        UserMessage(ask, "GENERAL:anyone", input_channel="rest", output_channel=rest)
    )
    # Before: the reminder was posted to the Rocket.Chat room the REST sender id named.
    assert await rocket.texts_within(DELAY + 0.7) == []


async def test_a_restart_since_the_reminder_was_set_drops_it(bot_models: BotModels) -> None:
    """As Rasa: a reminder fires only while its conversation still holds it. Before, a
    conversation restarted by a client (POST .../tracker/events) still got "Remember to call
    Ada!" from its old life."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    conversation = Conversation(agent, "restarted")
    await conversation.say('/ask_remind_call{"PERSON": "Ada"}')

    await agent.append_events("restarted", [Restarted()])

    assert await callback.texts_within(DELAY + 0.5) == []
    tracker = await agent.tracker("restarted", all_sessions=True)
    texts = [e.text for e in tracker.events if isinstance(e, UserUttered)]
    assert texts == ['/ask_remind_call{"PERSON": "Ada"}']


async def test_a_message_to_another_process_kills_a_kill_on_user_msg_reminder(
    bot_models: BotModels,
) -> None:
    """Two processes share the tracker store; the user's next message reaches the other one.
    Before, the timer of the process that scheduled the reminder knew nothing of it and fired;
    now the tracker decides, as in Rasa."""
    agent, callback = reminderbot(bot_models, KillableQuickReminder)
    other = Agent(
        Processor(agent.processor.trackers, agent.processor.lock_store),
        agent.model_provider,
    )
    await Conversation(agent, "two-workers").say('/ask_remind_call{"PERSON": "Ada"}')

    await Conversation(other, "two-workers").say("/greet")

    assert await callback.texts_within(DELAY + 0.5) == []


async def test_a_message_the_other_process_rewound_still_kills_a_kill_on_user_msg_reminder(
    bot_models: BotModels,
) -> None:
    """The other process answers the user's message with the default fallback, which takes the
    message back (`rewind`). It was still said, and Rasa reads every event for it, rewound or
    not; so did this process's own timer. Before, the tracker's check skipped rewound messages
    and the reminder fired."""
    agent, callback = reminderbot(bot_models, KillableQuickReminder)
    other = Agent(
        Processor(agent.processor.trackers, agent.processor.lock_store),
        agent.model_provider,
    )
    await Conversation(agent, "rewound").say('/ask_remind_call{"PERSON": "Ada"}')

    turn = await Conversation(other, "rewound").say("/EXT_reminder")
    assert turn.actions == ["action_default_fallback"]

    assert await callback.texts_within(DELAY + 0.5) == []


@pytest.mark.parametrize("restarted", [False, True])
async def test_a_long_conversations_reminder_is_checked_off_the_loop(
    bot_models: BotModels, restarted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, whether a reminder still held walked its conversation's events on the event
    loop (a session of 100,000 events held it 60 ms); now in a thread past OFF_LOOP_EVENTS,
    deciding as before: it fires, unless the conversation restarted since."""
    threads: list[str] = []

    def holds(*args: Any) -> bool:
        threads.append(threading.current_thread().name)
        return reminder_holds(*args)

    reminder_holds = processor_module._reminder_holds
    monkeypatch.setattr(processor_module, "_reminder_holds", holds)
    agent, callback = reminderbot(bot_models, QuickReminder)
    said: list[Event] = [BotUttered(text="Hello!") for _ in range(OFF_LOOP_EVENTS + 1)]
    await agent.append_events("long-remind", said)
    await Conversation(agent, "long-remind").say('/ask_remind_call{"PERSON": "Ada"}')
    if restarted:
        await agent.append_events("long-remind", [Restarted()])

    expected = [] if restarted else ["Remember to call Ada!"]
    assert await callback.texts_within(DELAY + 2) == expected
    assert len(threads) == 1 and threads[0] != threading.main_thread().name


async def test_a_reminder_of_a_conversation_deleted_meanwhile_writes_nothing(
    bot_models: BotModels,
) -> None:
    """`botserver prune` (or a store's own expiry) deleted the conversation while its reminder
    waited: the reminder is not among its events any more, so it is dropped, as in Rasa, and
    the conversation is not written again (the process's hot copy is forgotten)."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    await Conversation(agent, "deleted").say('/ask_remind_call{"PERSON": "Ada"}')
    store = agent.processor.trackers.store

    await store.delete("deleted")

    assert await callback.texts_within(DELAY + 0.5) == []
    await settled(agent)
    assert await store.load("deleted") is None


def my_reminder_in_ten_minutes(person: str) -> dict[str, Any]:
    """A `reminder` event's JSON: `my_reminder` again, to call `person` in ten minutes."""
    later = datetime.datetime.now() + datetime.timedelta(minutes=10)
    return {
        "event": "reminder",
        "intent": "EXTERNAL_reminder",
        "date_time": later.isoformat(),
        "entities": [{"entity": "PERSON", "value": person}],
        "name": "my_reminder",
        "kill_on_user_msg": False,
    }


async def test_a_reminder_replaced_through_another_process_does_not_fire_at_its_old_time(
    bot_models: BotModels,
) -> None:
    """A reminder scheduled again under the same name (the user moved it) by another process
    sharing the tracker store. Before, the first process's timer still fired the old one:
    the user was reminded at the old time and at the new one."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    other = Agent(
        Processor(agent.processor.trackers, agent.processor.lock_store),
        agent.model_provider,
    )
    await Conversation(agent, "moved").say('/ask_remind_call{"PERSON": "Ada"}')
    moved = my_reminder_in_ten_minutes("Ada")
    try:
        await other.append_events("moved", [event_from_dict(moved)], execute_side_effects=True)
        assert other.processor.reminders.pending("moved") == ["my_reminder"]

        assert await callback.texts_within(DELAY + 0.5) == []
    finally:
        other.processor.reminders.cancel_all()


async def test_a_message_without_text_does_not_kill_a_kill_on_user_msg_reminder(
    bot_models: BotModels,
) -> None:
    """As in Rasa, only a user message with text kills it (a widget's empty message, a
    client's `"message": ""`). Before, any user message did."""
    agent, callback = reminderbot(bot_models, KillableQuickReminder)
    conversation = Conversation(agent, "empty-message")
    await conversation.say('/ask_remind_call{"PERSON": "Ada"}')

    await conversation.say("")

    assert await callback.texts_within(5) == ["Remember to call Ada!"]


def second_process(agent: Agent) -> Agent:
    """Another process of the same deployment: same tracker store, locks and action server,
    timers of its own."""
    processor = agent.processor
    return Agent(
        Processor(processor.trackers, processor.lock_store, action_server=processor.action_server),
        agent.model_provider,
    )


async def test_reminders_cancelled_through_another_process_do_not_fire(
    bot_models: BotModels,
) -> None:
    """The user's "forget my reminders" reaches another worker than the one timing the
    reminder. Before, that worker's timer still fired: "Remember to call Ada!" after the bot
    said it cancelled every reminder."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    await Conversation(agent, "forgotten").say('/ask_remind_call{"PERSON": "Ada"}')

    turn = await Conversation(second_process(agent), "forgotten").say("/ask_forget_reminders")

    assert turn.texts == ["Okay, I'll cancel all your reminders."]
    assert await callback.texts_within(DELAY + 0.5) == []


async def test_a_cancel_for_another_reminder_in_the_same_process_lets_it_fire(
    bot_models: BotModels,
) -> None:
    """The process that applied the cancel knows what it named: the tracker's bare
    `cancel_reminder` does not stop the other reminders of that conversation."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    await Conversation(agent, "kept").say('/ask_remind_call{"PERSON": "Ada"}')

    other_one = {"event": "cancel_reminder", "name": "another_reminder"}
    await agent.append_events("kept", [event_from_dict(other_one)], execute_side_effects=True)

    assert await callback.texts_within(5) == ["Remember to call Ada!"]


async def test_a_cancel_of_a_reminder_named_by_a_number_lets_the_others_fire(
    bot_models: BotModels,
) -> None:
    """A reminder's name may be a number here (`"name": 5`; Rasa's scheduler refuses it); a
    cancel naming it stops that one alone, and in Rasa, too, stops none of the others.
    Before, the firing reminder read the stored cancel's filters as if it had no name, took
    it for a cancel of every reminder, and did not fire."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    await Conversation(agent, "numbered").say('/ask_remind_call{"PERSON": "Ada"}')

    number_five = {"event": "cancel_reminder", "name": 5}
    await agent.append_events("numbered", [event_from_dict(number_five)], execute_side_effects=True)

    assert await callback.texts_within(5) == ["Remember to call Ada!"]


async def test_a_cancel_posted_without_its_side_effects_cancels_nothing_as_in_rasa(
    bot_models: BotModels,
) -> None:
    """`POST .../tracker/events` without `execute_side_effects=true` only records the event.
    Before, a firing reminder took that stored `cancel_reminder` for one another process had
    applied, and did not fire."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    await Conversation(agent, "recorded").say('/ask_remind_call{"PERSON": "Ada"}')

    cancel = event_from_dict({"event": "cancel_reminder"})
    await agent.append_events("recorded", [cancel], execute_side_effects=False)

    assert await callback.texts_within(5) == ["Remember to call Ada!"]


class RemindsAgainLate(Action):
    """action_set_reminder setting, an hour in the past, a reminder of the intent that runs
    it again."""

    def name(self) -> str:
        return "action_set_reminder"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="Again.")
        an_hour_ago = datetime.datetime.now() - datetime.timedelta(hours=1)
        return [ReminderScheduled("ask_remind_call", trigger_date_time=an_hour_ago, name="again")]


async def test_a_reminder_set_in_the_past_by_the_action_it_runs_does_not_loop(
    bot_models: BotModels, caplog: pytest.LogCaptureFixture
) -> None:
    """As Rasa, whose scheduler skips a job more than a second late (a warning in its log):
    the reminder does not fire, and a warning says why. Before, it fired at once, ran the
    action that set it again, and so on without end."""
    agent, callback = reminderbot(bot_models, RemindsAgainLate)
    try:
        turn = await Conversation(agent, "late").say("/ask_remind_call")
        assert turn.texts == ["Again."]

        assert await callback.texts_within(1) == []
        assert agent.processor.reminders.pending("late") == []
        assert "reminder 'again' of conversation late does not fire: its date_time " in caplog.text
    finally:
        await agent.processor.reminders.stop()


async def test_a_reminder_posted_an_hour_late_does_not_fire(bot_models: BotModels) -> None:
    """Posted with its side effects, as set by an action (an action server's clock behind).
    Before, it fired at once."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    await Conversation(agent, "late").say("/greet")
    an_hour_ago = datetime.datetime.now() - datetime.timedelta(hours=1)
    late = {
        "event": "reminder",
        "intent": "EXTERNAL_reminder",
        "date_time": an_hour_ago.isoformat(),
        "entities": {"PERSON": "Ada"},
        "name": "late",
    }
    await agent.append_events("late", [event_from_dict(late)], execute_side_effects=True)
    await settled(agent)

    assert callback.messages == []


async def settled(*agents: Agent) -> None:
    """Until none of these processes holds a reminder waiting or firing (5 s at most)."""
    for _ in range(100):
        schedulers = [a.processor.reminders for a in agents]
        if not any(s._jobs or s._tasks for s in schedulers):
            return
        await asyncio.sleep(0.05)


async def test_the_same_reminder_scheduled_again_through_another_process_fires_once(
    bot_models: BotModels,
) -> None:
    """The user asks twice for the same reminder ("tomorrow at 9"), the second time through
    another worker: the same name, time, intent and entities. The second replaces the first,
    as one of another time does. Before, both workers took it for theirs: "Remember to call
    Ada!" twice."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    processor = agent.processor
    other = Agent(
        Processor(processor.trackers, processor.lock_store, action_server=processor.action_server),
        agent.model_provider,
        output_channels=agent.output_channels,
    )
    await Conversation(agent, "asked-twice").say("/greet")
    soon = datetime.datetime.now() + datetime.timedelta(seconds=DELAY)
    reminder = {
        "event": "reminder",
        "intent": "EXTERNAL_reminder",
        "date_time": soon.isoformat(),
        "entities": [{"entity": "PERSON", "value": "Ada"}],
        "name": "call_ada",
        "kill_on_user_msg": False,
    }
    for process in (agent, other):
        await process.append_events(
            "asked-twice", [event_from_dict(reminder)], execute_side_effects=True
        )

    assert await callback.texts_within(5) == ["Remember to call Ada!"]
    await settled(agent, other)
    assert [m.get("text") for m in callback.messages] == ["Remember to call Ada!"]


class SlowForget(Action):
    """action_forget_reminders cancelling only the reminder `named`, and slow: it answers once
    `waiting`'s reminder of its conversation has come due (its timer ran out meanwhile)."""

    waiting: ReminderScheduler
    named = "another_reminder"

    def name(self) -> str:
        return "action_forget_reminders"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        for _ in range(100):
            if not self.waiting.pending(tracker.sender_id):
                break
            await asyncio.sleep(0.05)
        return [SdkReminderCancelled(name=self.named)]


class SlowForgetIt(SlowForget):
    named = "my_reminder"


@pytest.mark.parametrize(
    ("forget", "texts"), [(SlowForget, ["Remember to call Ada!"]), (SlowForgetIt, [])]
)
async def test_a_reminder_due_during_a_turn_with_a_cancel_fires_unless_named(
    bot_models: BotModels, forget: type[SlowForget], texts: list[str]
) -> None:
    """The reminder comes due while a turn of its own process holds the conversation, and
    that turn cancels a reminder. Cancelling another one, it fires, as in Rasa; before, it
    took the cancel, which it had not been spared from yet, for one another process applied,
    and never fired. Cancelling this one, it does not fire."""
    agent, callback = reminderbot(bot_models, QuickReminder, forget)
    forget.waiting = agent.processor.reminders
    conversation = Conversation(agent, "due-in-a-turn")
    await conversation.say('/ask_remind_call{"PERSON": "Ada"}')

    turn = await conversation.say("/ask_forget_reminders")

    assert turn.actions == ["action_forget_reminders"]
    assert await callback.texts_within(DELAY + 1) == texts


def tomorrows_reminder() -> ServerReminder:
    return ServerReminder(
        intent="EXTERNAL_reminder",
        trigger_date_time=(datetime.datetime.now() + datetime.timedelta(days=1)).isoformat(),
    )


async def no_turn(*_: Any) -> None:
    """A reminder's turn that does nothing (its timer never runs out in these tests)."""


async def test_a_user_message_does_not_go_through_other_conversations_reminders() -> None:
    """Every message with text asks the scheduler for its conversation's kill_on_user_msg
    reminders. Before, it went through every conversation's pending reminders: with 100,000
    users holding a daily reminder, 35 ms of the event loop per message (measured)."""
    scheduler = ReminderScheduler()

    def schedule(count: int) -> None:
        for i in range(count):
            scheduler.schedule(f"user-{i}", tomorrows_reminder(), no_turn)

    try:
        schedule(10)
        few = lines_run_in(reminders_module.__file__, lambda: scheduler.user_spoke("talking"))
        schedule(1_000)
        many = lines_run_in(reminders_module.__file__, lambda: scheduler.user_spoke("talking"))
        assert many == few
    finally:
        scheduler.cancel_all()


async def test_a_reminder_only_recorded_does_not_replace_the_pending_one_of_its_name(
    bot_models: BotModels,
) -> None:
    """A `reminder` posted to `…/tracker/events` without `execute_side_effects=true` is only
    recorded, as in Rasa: the pending reminder of the same name still fires. Before, the
    recorded one read as its replacement and nothing fired at all."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    await Conversation(agent, "recorded-again").say('/ask_remind_call{"PERSON": "Ada"}')
    recorded = my_reminder_in_ten_minutes("Bob")
    await agent.append_events("recorded-again", [event_from_dict(recorded)])

    assert await callback.texts_within(5) == ["Remember to call Ada!"]


@pytest.mark.parametrize(
    "copied",
    [
        {
            "event": "cancel_reminder",
            "metadata": {"reminders_cancelled": {"name": None, "intent": None, "entities": None}},
        },
        {**my_reminder_in_ten_minutes("Bob"), "metadata": {"reminder_scheduled": True}},
    ],
)
@pytest.mark.parametrize("bulk", [False, True])
async def test_reminder_events_copied_with_their_marks_and_only_recorded_change_nothing(
    bot_models: BotModels, copied: dict[str, Any], bulk: bool
) -> None:
    """`GET …/tracker` shows what a process applied in the reminder events' metadata. Posted
    again without `execute_side_effects=true` (a conversation copied from an export; `bulk`:
    after more events than are folded on the event loop), they are only recorded, as the
    docs say: the pending reminder still fires, and they are stored without the marks.
    Before, the copied marks read as applied: nothing fired."""
    agent, callback = reminderbot(bot_models, QuickReminder)
    await Conversation(agent, "copied").say('/ask_remind_call{"PERSON": "Ada"}')

    posted = event_from_dict(copied)
    before = [event_from_dict({"event": "bot", "text": "…"}) for _ in range(OFF_LOOP_EVENTS)]
    await agent.append_events("copied", [*before, posted] if bulk else [posted])

    assert await callback.texts_within(5) == ["Remember to call Ada!"]
    tracker = await agent.tracker("copied")
    [stored] = [e.as_dict() for e in tracker.events if e.timestamp == posted.timestamp]
    assert stored["event"] == copied["event"]
    assert not {"reminders_cancelled", "reminder_scheduled"} & set(stored.get("metadata", {}))


def objects_held_by(scheduler: ReminderScheduler) -> int:
    """How many containers and values the scheduler's state reaches (its timers not followed)."""
    seen: set[int] = set()
    stack: list[Any] = list(vars(scheduler).values())
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, asyncio.TimerHandle | asyncio.Task):
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
        elif hasattr(item, "__dataclass_fields__"):
            stack.append(vars(item))
    return len(seen)


async def test_cancels_of_a_conversation_whose_reminder_stays_pending_are_not_kept() -> None:
    """A conversation holds a reminder for tomorrow; its bot cancels other reminders at every
    turn meanwhile. Before, the scheduler kept every one of those cancels until the reminder
    fired: memory growing with each turn."""
    scheduler = ReminderScheduler()

    def cancel(count: int) -> None:
        for _ in range(count):
            scheduler.cancel("patient", ReminderCancelled(name="x"))

    scheduler.schedule("patient", tomorrows_reminder(), no_turn)
    try:
        cancel(10)
        few = objects_held_by(scheduler)
        cancel(1_000)
        assert objects_held_by(scheduler) == few
        assert scheduler.pending("patient")
    finally:
        scheduler.cancel_all()


async def test_a_reminder_goes_to_the_output_channel_named_when_it_was_set(
    bot_models: BotModels,
) -> None:
    """As in Rasa, a reminder set in a turn run for `trigger_intent?output_channel=callback`
    sends its messages to that channel. Before, it went to the conversation's own channel
    (Rocket.Chat here), whatever the request had asked for."""
    callback, rocket = CallbackChannel(), RocketChatChannel()
    agent = quick_reminderbot(bot_models, {"callback": callback, "rocketchat": rocket})
    await agent.handle_message(
        UserMessage("/greet", "GENERAL:AliceId", input_channel="rocketchat", output_channel=rocket)
    )
    rocket.messages.clear()

    _, sent = await agent.trigger_intent(
        "GENERAL:AliceId", "ask_remind_call", {"PERSON": "Ada"}, output_channel="callback"
    )
    assert [m.get("text") for m in callback.messages] == [f"I will remind you in {DELAY} seconds."]
    callback.messages.clear()
    callback.arrived.clear()

    assert await callback.texts_within(5) == ["Remember to call Ada!"]
    assert rocket.messages == []


@pytest.fixture
def berlin_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time is Berlin's (summer time from March to October)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_a_local_time_past_a_change_of_summer_time_is_that_days_time(
    berlin_time: None,
) -> None:
    """rasa-sdk's reminders carry the local time without an offset; Rasa's scheduler reads it
    with the offset of its own day. Before, the offset of today was used: a reminder set in
    winter for 12:00 on a summer day fired at 13:00, one set in summer for a winter day at 11:00."""
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    now = datetime.datetime.now(berlin)
    year = now.year + 1
    # Noon on a day of next year whose offset is not today's.
    day = next(
        datetime.datetime(year, month, 15, 12, tzinfo=berlin)
        for month in (1, 7)
        if datetime.datetime(year, month, 15, 12, tzinfo=berlin).utcoffset() != now.utcoffset()
    )
    reminder = ServerReminder(
        intent="greet", trigger_date_time=day.replace(tzinfo=None).isoformat(), name="noon"
    )
    scheduler = ReminderScheduler()
    scheduler.schedule("ana", reminder, no_turn)
    try:
        timer = scheduler._jobs["ana"]["noon"][0]
        loop = asyncio.get_running_loop()
        fires_at = time.time() + (timer.when() - loop.time())
        assert abs(fires_at - day.timestamp()) < 60
    finally:
        scheduler.cancel_all()


@pytest.mark.parametrize(
    ("date_time", "pending"), [("0001-01-01T00:00:00", 0), ("9999-12-31T23:59:59", 1)]
)
async def test_a_local_time_at_the_ends_of_the_calendar_is_still_timed(
    berlin_time: None, date_time: str, pending: int
) -> None:
    """No offset can be found for them (it would move them out of the calendar); the first
    day's has passed long ago, so it does not fire."""
    scheduler = ReminderScheduler()
    scheduler.schedule("ana", ServerReminder(intent="greet", trigger_date_time=date_time), no_turn)
    try:
        assert len(scheduler.pending("ana")) == pending
    finally:
        scheduler.cancel_all()


async def test_a_reminder_set_late_replaces_the_pending_one_of_its_name_and_neither_fires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As Rasa's scheduler, which replaces the job of that name, then finds the new one late.
    A second late: still fires (a `date_time` of "now" takes a while to arrive)."""
    fired: list[str] = []

    async def fire(_: str, reminder: ServerReminder, __: str | None) -> None:
        fired.append(reminder.name)

    now = datetime.datetime.now()
    tomorrow = (now + datetime.timedelta(days=1)).isoformat()
    late = (now - datetime.timedelta(seconds=5)).isoformat()
    just_now = (now - datetime.timedelta(seconds=0.5)).isoformat()
    scheduler = ReminderScheduler()
    scheduler.schedule(
        "ana", ServerReminder(intent="greet", trigger_date_time=tomorrow, name="call"), fire
    )
    scheduler.schedule(
        "ana", ServerReminder(intent="greet", trigger_date_time=late, name="call"), fire
    )
    assert scheduler.pending("ana") == []
    scheduler.schedule(
        "ana", ServerReminder(intent="greet", trigger_date_time=just_now, name="now"), fire
    )
    for _ in range(100):
        if fired:
            break
        await asyncio.sleep(0.01)

    assert fired == ["now"]
    assert f"its date_time ({late}) passed 5." in caplog.text
