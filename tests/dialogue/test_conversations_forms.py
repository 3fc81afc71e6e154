"""formbot's restaurant form, spoken to in plain text: its validation action on the rasa-sdk
action server checks each slot, chitchat interrupts the form, and "stop" can end it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rasa_sdk import Action
from rasa_sdk import Tracker as SdkTracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from server.dialogue.agent import Agent
from server.dialogue.story_export import conversation_story
from server.trackers.events import ActionExecuted
from server.trackers.events import SlotSet as SlotSetEvent
from server.training.evaluate import test_core as evaluate_core
from tests.action_servers.fixtures import ActionServers
from tests.action_servers.formbot.actions import ValidateRestaurantForm
from tests.dialogue.conversation_fixtures import BotModels, Conversation, make_agent
from tests.dialogue.sdk_transport import SdkTransport


@pytest.fixture
def agent(bot_models: BotModels, action_servers: ActionServers) -> Agent:
    return make_agent(bot_models["formbot"], action_servers["formbot"].url)


async def start_form(agent: Agent, sender_id: str) -> Conversation:
    conversation = Conversation(agent, sender_id)
    turn = await conversation.say("im looking for a restaurant")
    assert turn.actions == ["restaurant_form"]
    assert turn.texts == ["What cuisine?"]
    return conversation


async def test_happy_path_fills_every_slot_with_validation(agent: Agent) -> None:
    conversation = Conversation(agent, "happy")
    assert (await conversation.say("hi")).responses == ["utter_greet"]
    await conversation.say("im looking for a restaurant")

    turn = await conversation.say("afghan food")
    assert turn.actions == ["restaurant_form"]
    assert turn.responses == ["utter_wrong_cuisine", "utter_ask_cuisine"]
    assert (await conversation.tracker()).get_slot("cuisine") is None

    turn = await conversation.say("what about greek food")
    assert turn.responses == ["utter_ask_num_people"]

    turn = await conversation.say("0 people")
    assert turn.responses == ["utter_wrong_num_people", "utter_ask_num_people"]

    turn = await conversation.say("2 people")
    assert turn.responses == ["utter_ask_outdoor_seating"]

    turn = await conversation.say("i want to seat outside")
    assert turn.responses == ["utter_ask_preferences"]

    turn = await conversation.say("no")
    assert turn.responses == ["utter_ask_feedback"]

    turn = await conversation.say("my feedback is great")
    assert turn.actions == ["restaurant_form", "utter_submit", "utter_slots_values"]
    assert turn.texts[0] == "All done!"
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert tracker.get_slot("requested_slot") is None
    assert {k: tracker.get_slot(k) for k in ("cuisine", "num_people", "outdoor_seating")} == {
        "cuisine": "greek",
        "num_people": 2.0,
        "outdoor_seating": True,
    }
    assert tracker.get_slot("preferences") == "no additional preferences"
    assert tracker.get_slot("feedback") == "great"
    assert " - cuisine: greek" in (turn.texts[1] or "")

    assert (await conversation.say("thanks")).responses == ["utter_noworries"]


async def test_chitchat_interrupts_then_the_form_asks_the_same_slot_again(agent: Agent) -> None:
    conversation = await start_form(agent, "chitchat")
    await conversation.say("greek food")

    turn = await conversation.say("can you share your boss with me?")
    assert turn.actions == ["utter_chitchat", "restaurant_form"]
    assert turn.texts == ["chitchat", "How many people?"]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name == "restaurant_form"
    assert tracker.get_slot("requested_slot") == "num_people"

    turn = await conversation.say("4 people")
    assert turn.responses == ["utter_ask_outdoor_seating"]
    assert (await conversation.tracker()).get_slot("num_people") == 4.0


async def test_stop_then_deny_deactivates_the_form(agent: Agent) -> None:
    conversation = await start_form(agent, "stop-deny")

    turn = await conversation.say("you can't help me")
    assert turn.actions == ["utter_ask_continue"]
    assert (await conversation.tracker()).active_loop_name == "restaurant_form"

    turn = await conversation.say("no")
    assert turn.actions == ["action_deactivate_loop"]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert tracker.get_slot("requested_slot") is None

    assert (await conversation.say("hi")).actions == ["utter_greet"]


async def test_inform_after_the_form_was_stopped_starts_it_again_as_the_stories_teach(
    agent: Agent,
) -> None:
    """What Rasa does too with a trained TEDPolicy: `action_deactivate_loop` ended the form and
    no rule or loop logic brings it back, but the ML policy (TED's stand-in, trained on the
    stories only, glued end to start) has seen one user turn outside the form, and it opens the
    form. An intent no story shows (`inform`) is scored on everything else in that state."""
    conversation = await start_form(agent, "stop-deny-inform")
    assert (await conversation.say("you can't help me")).actions == ["utter_ask_continue"]
    assert (await conversation.say("no")).actions == ["action_deactivate_loop"]

    turn = await conversation.say("it was great")
    assert turn.actions == ["restaurant_form"]
    started = next(e for e in turn.events if isinstance(e, ActionExecuted))
    assert started.policy == "TEDPolicy"
    assert turn.texts == ["What cuisine?"]
    tracker = await conversation.tracker()
    assert tracker.active_loop_name == "restaurant_form"
    assert tracker.get_slot("requested_slot") == "cuisine"


async def test_stop_then_affirm_goes_back_to_the_form(agent: Agent) -> None:
    conversation = await start_form(agent, "stop-affirm")
    assert (await conversation.say("you can't help me")).actions == ["utter_ask_continue"]

    turn = await conversation.say("yes")
    assert turn.actions == ["restaurant_form"]
    assert turn.texts == ["What cuisine?"]

    turn = await conversation.say("french food")
    assert turn.responses == ["utter_ask_num_people"]


async def test_no_to_do_you_want_to_continue_is_not_an_answer_to_the_form(agent: Agent) -> None:
    conversation = await start_form(agent, "stop-at-seating")
    await conversation.say("greek food")
    assert (await conversation.say("2 people")).responses == ["utter_ask_outdoor_seating"]

    assert (await conversation.say("you can't help me")).actions == ["utter_ask_continue"]
    turn = await conversation.say("no")
    assert turn.actions == ["action_deactivate_loop"]
    # "no" answered "Do you want to continue?", not "Do you want to sit outside?".
    assert (await conversation.tracker()).get_slot("outdoor_seating") is None


class _ValidatorNamingNoSlot(Action):
    """Fills every slot of the form and sets `requested_slot` to an object, not a name."""

    def name(self) -> str:
        return "validate_restaurant_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: SdkTracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        filled = {
            "cuisine": "greek",
            "num_people": 2,
            "outdoor_seating": True,
            "preferences": "none",
            "feedback": "good",
        }
        return [SlotSet(slot, value) for slot, value in filled.items()] + [
            SlotSet("requested_slot", {"slot": "cuisine"})
        ]


async def test_a_requested_slot_that_is_no_slot_name_is_ignored(bot_models: BotModels) -> None:
    """Before, a validation action setting `requested_slot` to an object raised a TypeError
    out of the turn: no answer, and the user's message was lost. Now the form, its slots
    all filled, completes."""
    agent = make_agent(bot_models["formbot"], transport=SdkTransport(_ValidatorNamingNoSlot))
    conversation = Conversation(agent, "requested-object")

    turn = await conversation.say("im looking for a restaurant")

    assert turn.actions[0] == "restaurant_form"
    assert turn.texts  # the form's submission answered
    tracker = await conversation.tracker()
    assert tracker.active_loop_name is None
    assert tracker.get_slot("cuisine") == "greek"


async def test_a_slot_set_on_an_unhappy_path_is_not_validated_as_the_form_resumes(
    agent: Agent,
) -> None:
    """Before, the validation action got a tracker ending in the custom action's `SlotSet`,
    so rasa-sdk validated that slot (cuisine 'afghan' rejected, asked again); as in Rasa, it
    now sees `requested_slot` and the form's own execution after it, validates nothing, and the
    form goes on to the next slot."""
    await start_form(agent, "unhappy-custom-slot")
    await agent.append_events(
        "unhappy-custom-slot",
        [
            ActionExecuted(action_name="action_pick_cuisine"),
            SlotSetEvent(key="cuisine", value="afghan"),
        ],
    )

    tracker, sent = await agent.execute_action("unhappy-custom-slot", "restaurant_form")

    assert [m.get("text") for m in sent] == ["How many people?"]
    assert tracker.get_slot("cuisine") == "afghan"
    assert tracker.get_slot("requested_slot") == "num_people"


async def test_with_selective_domain_the_form_validation_action_still_gets_the_domain(
    bot_models: BotModels,
) -> None:
    """As in Rasa, an action named `validate_...` listed in the domain gets the domain even
    with `enable_selective_domain: true`: rasa-sdk's form validation reads the form's slots
    from it. Before, it got none, and rasa-sdk 3.6 validated nothing: any cuisine was taken."""
    transport = SdkTransport(ValidateRestaurantForm, domain_cache=False)
    agent = make_agent(bot_models["formbot"], transport=transport, enable_selective_domain=True)
    conversation = await start_form(agent, "selective-domain")

    turn = await conversation.say("afghan food")

    assert turn.responses == ["utter_wrong_cuisine", "utter_ask_cuisine"]
    assert (await conversation.tracker()).get_slot("cuisine") is None


async def test_a_form_conversations_story_replays_through_botserver_test(
    agent: Agent, bot_models: BotModels, tmp_path: Path
) -> None:
    """`GET …/story` of a filled form holds each answer and the form's run after it, as
    Rasa writes it, and `botserver test` predicts every turn of it again. Before, the story
    (written from the applied events, where the form's later runs are collapsed into its
    first) read as if the form had taken every slot from the first message."""
    conversation = await start_form(agent, "exported")
    for text in ["greek food", "2 people", "i want to seat outside", "no", "my feedback is great"]:
        await conversation.say(text)
    tracker = await agent.stored_tracker("exported")
    assert tracker is not None
    story = tmp_path / "exported.yml"
    story.write_text(conversation_story(tracker), encoding="utf-8")
    assert story.read_text().count("  - action: restaurant_form\n") == 6  # one per answer

    report = evaluate_core(bot_models["formbot"], [story], tmp_path / "results")
    assert report["conversation_accuracy"]["correct"] == 1, story.read_text()
