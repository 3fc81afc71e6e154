"""An `entities` event adds to the last message only right after it (as Rasa's EntitiesAdded)."""

from __future__ import annotations

from server.dialogue.policies.featurization import states_and_labels
from server.trackers.events import ActionExecuted, EntitiesAdded, UserUttered
from server.trackers.tracker import Tracker
from server.training.project import load_project
from tests.shared_data import BOTS

CUISINE = {"entity": "cuisine", "value": "greek"}


def inform() -> UserUttered:
    return UserUttered(text="hi", parse_data={"intent": {"name": "inform"}, "entities": []})


def entity_names_seen(events: list) -> list[str]:
    root = BOTS / "formbot"
    domain = load_project(root / "config.yml", root / "domain.yml", [root / "data"]).domain
    states, _ = states_and_labels(events, domain)
    return sorted({e for s in states for e in s.get("user", {}).get("entities", ())})


def test_entities_after_action_listen_are_added() -> None:
    events = [ActionExecuted("action_listen"), inform(), EntitiesAdded([CUISINE])]
    tracker = Tracker("u", {})
    tracker.update_many(events)
    assert tracker.latest_message.entities == [CUISINE]
    assert entity_names_seen([*events, ActionExecuted("utter_ok")]) == ["cuisine"]


def test_entities_before_any_action_are_ignored() -> None:
    events = [inform(), EntitiesAdded([CUISINE])]
    tracker = Tracker("u", {})
    tracker.update_many(events)
    assert tracker.latest_message.entities == []
    assert entity_names_seen([*events, ActionExecuted("utter_ok")]) == []


def test_entities_after_another_action_are_ignored() -> None:
    events = [ActionExecuted("action_listen"), inform(), ActionExecuted("action_custom")]
    events.append(EntitiesAdded([CUISINE]))
    tracker = Tracker("u", {})
    tracker.update_many(events)
    assert tracker.latest_message.entities == []
    assert entity_names_seen([*events, ActionExecuted("utter_ok")]) == []
