"""Sessions: a conversation idle for longer than session_expiration_time starts a new session,
carrying its slots over when carry_over_slots_to_new_session says so."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.dialogue.processor import DialogueModel
from server.trackers.events import ActionExecuted, Event, SessionStarted, SlotSet, UserUttered
from tests.dialogue.conversation_fixtures import Conversation, make_agent, train_project

DOMAIN = """
version: "3.1"
intents: [greet, inform]
entities: [name]
slots:
  name:
    type: text
    mappings:
    - type: from_entity
      entity: name
responses:
  utter_greet: [{{text: "Hello {{name}}!"}}]
  utter_noted: [{{text: "Noted."}}]
session_config:
  session_expiration_time: {expiration}
  carry_over_slots_to_new_session: {carry_over}
"""
RULES = """
version: "3.1"
rules:
- rule: greet
  steps:
  - intent: greet
  - action: utter_greet
- rule: inform
  steps:
  - intent: inform
  - action: utter_noted
"""


def train_with(folder: Path, carry_over: bool, expiration: float = 1) -> DialogueModel:
    (folder / "data").mkdir(parents=True)
    domain = DOMAIN.format(carry_over=str(carry_over).lower(), expiration=expiration)
    (folder / "domain.yml").write_text(domain)
    (folder / "data" / "rules.yml").write_text(RULES)
    (folder / "config.yml").write_text("language: en\npolicies:\n  - name: RulePolicy\n")
    return train_project(folder, folder / "models")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, DialogueModel]:
    root = tmp_path_factory.mktemp("sessions")
    return {flag: train_with(root / str(flag), flag) for flag in (True, False)}


class LaterClock:
    """The processor's clock, `seconds` ahead of the real one."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def time(self) -> float:
        return time.time() + self.seconds

    def perf_counter(self) -> float:
        return time.perf_counter()


def session_start(events: list[Event]) -> list[str]:
    """The shape of a session start: action, SessionStarted, carried slots, listen."""
    shape = []
    for event in events:
        if isinstance(event, UserUttered):
            break
        if isinstance(event, ActionExecuted):
            shape.append(event.action_name or "")
        elif isinstance(event, SessionStarted):
            shape.append("session_started")
        elif isinstance(event, SlotSet):
            shape.append(f"slot {event.key}={event.value}")
    return shape


@pytest.mark.parametrize("carry_over", [True, False])
async def test_an_expired_session_restarts_with_or_without_its_slots(
    carry_over: bool, models: dict[bool, DialogueModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(models[carry_over])
    conversation = Conversation(agent, f"idle-{carry_over}")
    first = await conversation.say('/inform{"name": "Ada"}')
    assert first.actions == ["utter_noted"]
    assert session_start(first.events) == [
        "action_session_start",
        "session_started",
        "action_listen",
    ]

    # Within the session nothing restarts.
    assert (await conversation.say("/greet")).texts == ["Hello Ada!"]

    monkeypatch.setattr("server.dialogue.processor.time", LaterClock(61))
    turn = await conversation.say("/greet")

    carried = ["slot name=Ada"] if carry_over else []
    assert session_start(turn.events) == [
        "action_session_start",
        "session_started",
        *carried,
        "action_listen",
    ]
    assert turn.actions == ["utter_greet"]
    assert turn.texts == (["Hello Ada!"] if carry_over else ["Hello None!"])
    current = await conversation.tracker()
    assert current.get_slot("name") == ("Ada" if carry_over else None)
    assert sum(isinstance(e, SessionStarted) for e in current.events) == 1

    everything = await agent.tracker(conversation.sender_id, all_sessions=True)
    assert sum(isinstance(e, SessionStarted) for e in everything.events) == 2


async def test_session_start_keeps_the_metadata_of_the_message_that_started_it(
    models: dict[bool, DialogueModel],
) -> None:
    agent = make_agent(models[True])
    conversation = Conversation(agent, "with-metadata")
    await conversation.say("/greet", channel_user="u-42")
    tracker = await conversation.tracker()
    assert tracker.get_slot("session_started_metadata") == {"channel_user": "u-42"}


async def test_an_expiration_time_of_0_never_starts_another_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`session_expiration_time: 0` turns sessions off, as in Rasa: the first message starts
    the one session, and a user back after a year goes on in it, slots and all."""
    agent = make_agent(train_with(tmp_path, carry_over=False, expiration=0))
    conversation = Conversation(agent, "forever")
    await conversation.say('/inform{"name": "Ada"}')

    monkeypatch.setattr("server.dialogue.processor.time", LaterClock(365 * 24 * 3600))
    turn = await conversation.say("/greet")

    assert session_start(turn.events) == []
    assert turn.texts == ["Hello Ada!"]
    everything = await agent.tracker(conversation.sender_id, all_sessions=True)
    assert sum(isinstance(e, SessionStarted) for e in everything.events) == 1
