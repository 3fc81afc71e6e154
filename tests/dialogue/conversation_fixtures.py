"""Helpers for the conversation tests: train a bot into tmp, build an agent on in-memory
stores, talk to it, and read back what the bot did in each turn."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from server.dialogue.action_client import ActionServerClient
from server.dialogue.agent import Agent
from server.dialogue.messages import CollectingOutputChannel, OutputChannel, UserMessage
from server.dialogue.processor import DialogueModel, Processor
from server.trackers.events import (
    ACTION_LISTEN,
    ACTION_SESSION_START,
    ActionExecuted,
    BotUttered,
    Event,
)
from server.trackers.factory import create_lock_store, create_tracker_store
from server.trackers.repository import TrackerRepository
from server.trackers.tracker import Tracker
from server.training.evaluate import load_model_file
from server.training.train import train
from tests.shared_data import BOTS


def train_archive(folder: Path, out: Path, data: list[Path] | None = None) -> Path:
    """Trains `folder` (config.yml, domain.yml, data/) with `train()`; the archive's path."""
    config = folder / "config.yml"
    result = train(
        config if config.exists() else None,
        folder / "domain.yml",
        data or [folder / "data"],
        out,
        force=True,
    )
    return Path(result.path)


def train_project(folder: Path, out: Path, data: list[Path] | None = None) -> DialogueModel:
    """Trains `folder` (config.yml, domain.yml, data/) with `train()` and loads the archive."""
    return load_model_file(train_archive(folder, out, data))


def write_files(files: dict[str, str], folder: Path) -> Path:
    """Writes a project given as {relative path: text} into `folder`; returns `folder`."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def train_files(files: dict[str, str], folder: Path) -> DialogueModel:
    """Writes a project given as {relative path: text} into `folder`, trains and loads it."""
    return train_project(write_files(files, folder), folder / "models")


def copy_bot(name: str, dest: Path, duckling_url: str | None = None) -> Path:
    """A copy of a shared bot; with `duckling_url`, its config points Duckling there (the only
    edit)."""
    folder = dest / name
    shutil.copytree(BOTS / name, folder)
    if duckling_url is not None:
        config = folder / "config.yml"
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace("http://localhost:8000", duckling_url), encoding="utf-8")
    return folder


class BotModels:
    """Each shared bot trained once, on first use, with its own config.yml."""

    def __init__(self, workdir: Path, duckling_url: str | None = None) -> None:
        self.workdir = workdir
        self.duckling_url = duckling_url
        self._models: dict[str, DialogueModel] = {}

    def __getitem__(self, name: str) -> DialogueModel:
        if name not in self._models:
            folder = copy_bot(name, self.workdir / "bots", self.duckling_url)
            self._models[name] = train_project(folder, self.workdir / "models" / name)
        return self._models[name]


def make_agent(
    model: DialogueModel,
    action_url: str | None = None,
    output_channels: dict[str, Callable[[], OutputChannel | None]] | None = None,
    action_timeout: float = 5.0,
    transport: httpx.AsyncBaseTransport | None = None,
    **action_endpoint: Any,
) -> Agent:
    """An agent on in-memory tracker and lock stores, with an action server when given (a URL,
    or a transport such as `SdkTransport` that serves the actions in-process); other keywords
    are more `action_endpoint` keys (`enable_selective_domain=True`)."""
    client = None
    if action_url or transport:
        config = {"url": action_url or "http://actions.test/webhook", "timeout": action_timeout}
        config.update(action_endpoint)
        client = ActionServerClient(config, transport=transport)
    processor = Processor(
        TrackerRepository(create_tracker_store({"type": "in_memory"})),
        create_lock_store(None),
        action_server=client,
    )
    return Agent(processor, lambda: model, output_channels=output_channels)


@dataclass
class Turn:
    """What the bot did in answer to one user message."""

    actions: list[str]
    texts: list[str | None]
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def responses(self) -> list[str]:
        """The domain responses the bot uttered, in order."""
        return [
            str(e.metadata.get("utter_action"))
            for e in self.events
            if isinstance(e, BotUttered) and e.metadata.get("utter_action")
        ]


class Conversation:
    """One user talking to an agent; each `say` returns the bot's turn."""

    def __init__(self, agent: Agent, sender_id: str) -> None:
        self.agent = agent
        self.sender_id = sender_id

    async def tracker(self) -> Tracker:
        return await self.agent.tracker(self.sender_id, all_sessions=False)

    async def say(self, text: str, **metadata: Any) -> Turn:
        before = await self._event_count()
        output = CollectingOutputChannel()
        sent = await self.agent.handle_message(
            UserMessage(text, self.sender_id, output_channel=output, metadata=metadata or None)
        )
        tracker = await self.agent.tracker(self.sender_id)
        events = tracker.events[before:]
        return Turn(
            actions=bot_actions(events),
            texts=[m.get("text") for m in sent],
            messages=sent,
            events=events,
        )

    async def _event_count(self) -> int:
        if not await self.agent.exists(self.sender_id):
            return 0
        return len((await self.agent.tracker(self.sender_id)).events)


def bot_actions(events: list[Event]) -> list[str]:
    """The actions the bot ran, without listening and session starts."""
    return [
        e.action_name or e.action_text or ""
        for e in events
        if isinstance(e, ActionExecuted)
        and e.action_name not in (ACTION_LISTEN, ACTION_SESSION_START)
    ]


def intent_message(intent: str, entities: list[dict[str, Any]] | None = None) -> str:
    """Rasa's `/intent{"entity": "value"}` text for a story's user step."""
    import json

    if not entities:
        return f"/{intent}"
    values: dict[str, Any] = {}
    for entity in entities:
        values.setdefault(entity["entity"], entity.get("value"))
    return f"/{intent}{json.dumps(values)}"
