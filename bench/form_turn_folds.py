"""How many events a form's turns fold into trackers once a session is long.

A trip bot (one form; `validate_trip_form` and `action_validate_slot_mappings` served by
rasa-sdk in-process) hears `--greetings` greetings, then the message that activates the
form and the one that answers it. For each of these two turns the script counts the calls
of `Tracker._apply` (one per event folded into any tracker) inside `handle_message` alone.
A turn that copies the tracker by folding it again counts the whole session each time.

    python bench/form_turn_folds.py [--greetings 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rasa_sdk import Action, Tracker, ValidationAction  # noqa: E402
from rasa_sdk.executor import CollectingDispatcher  # noqa: E402

from server.dialogue.messages import CollectingOutputChannel, UserMessage  # noqa: E402
from server.trackers import tracker as trackers  # noqa: E402
from tests.dialogue.conversation_fixtures import make_agent, train_files  # noqa: E402
from tests.dialogue.sdk_transport import SdkTransport  # noqa: E402

DOMAIN = """
version: "3.1"
intents: [inform, greet, trip]
entities: [city]
slots:
  city: {type: text, mappings: [{type: from_entity, entity: city}]}
responses:
  utter_ask_city: [{text: "Which city?"}]
  utter_greet: [{text: "Hi"}]
  utter_done: [{text: "Off to {city}."}]
actions: [validate_trip_form, action_validate_slot_mappings]
forms:
  trip_form: {required_slots: [city]}
"""
RULES = """
version: "3.1"
rules:
- rule: greet
  steps: [{intent: greet}, {action: utter_greet}]
- rule: activate
  steps: [{intent: trip}, {action: trip_form}, {active_loop: trip_form}]
- rule: submit
  condition: [{active_loop: trip_form}]
  steps: [{action: trip_form}, {active_loop: null}, {action: utter_done}]
"""


class TripValidation(Action):
    def name(self) -> str:
        return "validate_trip_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return []


class SlotValidation(ValidationAction):
    async def validate_city(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Any
    ) -> dict[str, Any]:
        return {"city": value}


async def main(greetings: int) -> None:
    files = {
        "config.yml": "language: en\npolicies:\n  - name: RulePolicy\n",
        "domain.yml": DOMAIN,
        "data/rules.yml": RULES,
    }
    model = train_files(files, Path(tempfile.mkdtemp()))
    agent = make_agent(model, transport=SdkTransport(TripValidation, SlotValidation))

    async def say(text: str) -> None:
        message = UserMessage(text, "long", output_channel=CollectingOutputChannel())
        await agent.handle_message(message)

    for _ in range(greetings):
        await say("/greet")
    print("events held:", len((await agent.tracker("long")).events))
    folded = 0
    apply = trackers.Tracker._apply

    def counted(self: trackers.Tracker, event: Any) -> None:
        nonlocal folded
        folded += 1
        apply(self, event)

    trackers.Tracker._apply = counted  # type: ignore[method-assign]
    for text in ("/trip", '/inform{"city": "rome"}'):
        folded = 0
        await say(text)
        print(f"{text!r}: {folded} events folded")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--greetings", type=int, default=300)
    asyncio.run(main(parser.parse_args().greetings))
