"""The rules example bot's custom actions for rasa-sdk: FAQ switch and the loop_q_form check."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher


class ActionSwitchFAQ(Action):
    def name(self) -> str:
        return "action_switch_faq"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [SlotSet("detailed_faq", not tracker.get_slot("detailed_faq"))]


class ValidateLoopQForm(Action):
    """Fills `some_slot` with "sdk"; named as the domain's (commented) validation action."""

    def name(self) -> str:
        return "validate_loop_q_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="validate_some_slot")
        return [SlotSet("some_slot", "sdk")]


class ActionValidateLoopQForm(ValidateLoopQForm):
    """The same check under the name NOTES.md gives it."""

    def name(self) -> str:
        return "action_validate_loop_q_form"
