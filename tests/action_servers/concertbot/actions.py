"""concertbot's custom actions for rasa-sdk: search concerts and venues, reviews, preference."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher


class ActionSearchConcerts(Action):
    def name(self) -> str:
        return "action_search_concerts"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        concerts: list[dict[str, Any]] = [
            {"artist": "Foo Fighters", "reviews": 4.5},
            {"artist": "Katy Perry", "reviews": 5.0},
        ]
        description = ", ".join(c["artist"] for c in concerts)
        dispatcher.utter_message(text=description)
        return [SlotSet("concerts", concerts)]


class ActionSearchVenues(Action):
    def name(self) -> str:
        return "action_search_venues"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        venues: list[dict[str, Any]] = [
            {"name": "Big Arena", "reviews": 4.5},
            {"name": "Rock Cellar", "reviews": 5.0},
        ]
        dispatcher.utter_message(text="here are some venues I found")
        dispatcher.utter_message(text=", ".join(v["name"] for v in venues))
        return [SlotSet("venues", venues)]


class ActionShowConcertReviews(Action):
    def name(self) -> str:
        return "action_show_concert_reviews"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text=f"concerts from slots: {tracker.get_slot('concerts')}")
        return []


class ActionShowVenueReviews(Action):
    def name(self) -> str:
        return "action_show_venue_reviews"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(text=f"venues from slots: {tracker.get_slot('venues')}")
        return []


class ActionSetMusicPreference(Action):
    def name(self) -> str:
        return "action_set_music_preference"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        intent = tracker.latest_message.get("intent", {}).get("name")
        if intent == "affirm":
            return [SlotSet("likes_music", True)]
        if intent == "deny":
            return [SlotSet("likes_music", False)]
        return []
