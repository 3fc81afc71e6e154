"""formbot's custom action for rasa-sdk: validate_restaurant_form (cuisine, people, seating)."""

from __future__ import annotations

from typing import Any

from rasa_sdk import FormValidationAction, Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

CUISINES = ["caribbean", "chinese", "french", "greek", "indian", "italian", "mexican"]


def _is_int(value: Any) -> bool:
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return True


class ValidateRestaurantForm(FormValidationAction):
    """Checks each slot the form fills, as the upstream formbot example does."""

    def name(self) -> str:
        return "validate_restaurant_form"

    def validate_cuisine(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if isinstance(value, str) and value.lower() in CUISINES:
            return {"cuisine": value}
        dispatcher.utter_message(response="utter_wrong_cuisine")
        return {"cuisine": None}

    def validate_num_people(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if _is_int(value) and int(value) > 0:
            return {"num_people": value}
        dispatcher.utter_message(response="utter_wrong_num_people")
        return {"num_people": None}

    def validate_outdoor_seating(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if isinstance(value, str):
            if "out" in value:
                return {"outdoor_seating": True}
            if "in" in value:
                return {"outdoor_seating": False}
            dispatcher.utter_message(response="utter_wrong_outdoor_seating")
            return {"outdoor_seating": None}
        return {"outdoor_seating": value}
