"""Actions that exercise the protocol's edges: a rejection, an echo of what was received."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, ActionExecutionRejection, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher


class ActionRejectAlways(Action):
    def name(self) -> str:
        return "action_reject_always"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        raise ActionExecutionRejection(self.name(), "not today")


class ActionEcho(Action):
    """Tells what the action server received, so tests can check the request."""

    def name(self) -> str:
        return "action_echo"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(
            text=f"events={len(tracker.events)}",
            json_message={"domain_keys": sorted(domain or {})},
        )
        dispatcher.utter_message(response="utter_greet", name=tracker.sender_id)
        return [SlotSet("echoed", tracker.latest_message.get("text"))]


class ActionShowChoices(Action):
    """Every kind of message rasa-sdk's dispatcher sends, for the channels' shapes."""

    def name(self) -> str:
        return "action_show_choices"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(
            text="Pick one", quick_replies=[{"title": "Yes", "payload": "/affirm"}]
        )
        hotel = {"title": "Hotel", "subtitle": "3 stars", "buttons": [{"title": "Book"}]}
        dispatcher.utter_message(elements=[hotel, {"title": "Hostel"}])
        dispatcher.utter_message(response="utter_where", city="Rome")
        dispatcher.utter_message(json_message={"map": "Rome"}, image="https://x.test/r.png")
        return []
