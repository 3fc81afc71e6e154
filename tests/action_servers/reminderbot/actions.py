"""reminderbot's custom actions for rasa-sdk: reminders, external events, conversation id."""

from __future__ import annotations

import datetime
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ReminderCancelled, ReminderScheduled
from rasa_sdk.executor import CollectingDispatcher


class ActionSetReminder(Action):
    def name(self) -> str:
        return "action_set_reminder"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="I will remind you in 5 seconds.")
        date = datetime.datetime.now() + datetime.timedelta(seconds=5)
        entities = tracker.latest_message.get("entities")
        return [
            ReminderScheduled(
                "EXTERNAL_reminder",
                trigger_date_time=date,
                entities=entities,
                name="my_reminder",
                kill_on_user_message=False,
            )
        ]


class ActionReactToReminder(Action):
    def name(self) -> str:
        return "action_react_to_reminder"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        name = next(tracker.get_latest_entity_values("PERSON"), "someone")
        dispatcher.utter_message(text=f"Remember to call {name}!")
        return []


class ActionTellID(Action):
    def name(self) -> str:
        return "action_tell_id"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        conversation_id = tracker.sender_id
        dispatcher.utter_message(text=f"The ID of this conversation is '{conversation_id}'.")
        dispatcher.utter_message(
            text="Trigger an intent with: \n"
            f'curl -H "Content-Type: application/json" -X POST -d \'{{"name": '
            f'"EXTERNAL_dry_plant", "entities": {{"plant": "Orchid"}}}}\' '
            f'"http://localhost:5005/conversations/{conversation_id}'
            f'/trigger_intent?output_channel=latest"'
        )
        return []


class ActionWarnDry(Action):
    def name(self) -> str:
        return "action_warn_dry"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        plant = next(tracker.get_latest_entity_values("plant"), "someone")
        dispatcher.utter_message(text=f"Your {plant} needs some water!")
        return []


class ForgetReminders(Action):
    def name(self) -> str:
        return "action_forget_reminders"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="Okay, I'll cancel all your reminders.")
        return [ReminderCancelled()]
