"""What a rasa-sdk action's messages look like to a client of each channel, as Rasa 3.6 sends
them: the REST and callback channels (Rasa's collecting channel) have no quick replies or
elements of their own, so quick replies come as buttons and each element as a text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import socketio

from server.api.server import ServerOptions, build_app
from tests.action_servers.fixtures import ActionServers
from tests.channels.test_callback_channel import Receiver
from tests.dialogue.conversation_fixtures import train_archive, write_files
from tests.serving import serving

SHOW_BOT = {
    "config.yml": """version: "3.1"
language: en
pipeline:
- name: KeywordIntentClassifier
policies:
- name: RulePolicy
""",
    "domain.yml": """version: "3.1"
intents: [show]
actions: [action_show_choices]
responses:
  utter_where:
  - text: "Good choice.\\n\\nOff to {city}?"
    buttons:
    - title: Sure
      payload: /affirm
""",
    "data/rules.yml": """version: "3.1"
rules:
- rule: show
  steps:
  - intent: show
  - action: action_show_choices
""",
    "data/nlu.yml": """version: "3.1"
nlu:
- intent: show
  examples: |
    - show
""",
}

# Rasa 3.6's REST answer (and callback POSTs) for testbot's `action_show_choices`.
COLLECTED: list[dict[str, Any]] = [
    {"text": "Pick one", "buttons": [{"title": "Yes", "payload": "/affirm"}]},
    {"text": "Hotel : 3 stars", "buttons": [{"title": "Book"}]},
    {"text": "Hostel : ", "buttons": []},
    # One message: Rasa's collecting channel splits a text only when it has no buttons.
    {"text": "Good choice.\n\nOff to Rome?", "buttons": [{"title": "Sure", "payload": "/affirm"}]},
    {"custom": {"map": "Rome"}},
    {"image": "https://x.test/r.png"},
]


async def _server(tmp_path: Path, action_url: str, credentials: dict[str, Any]) -> Any:
    model = train_archive(write_files(SHOW_BOT, tmp_path), tmp_path / "models")
    options = ServerOptions(
        model_path=model,
        endpoints={"action_endpoint": {"url": action_url}, "tracker_store": {"type": "in_memory"}},
        credentials=credentials,
        enable_api=True,
        models_dir=model.parent,
    )
    return serving(build_app(options))


async def test_rest_and_callback_clients_get_rasas_collected_messages(
    tmp_path: Path, action_servers: ActionServers
) -> None:
    # Before: `quick_replies` and `elements` keys, which Rasa's REST and callback channels
    # never send, so a client written for Rasa showed no choices and no elements.
    receiver = Receiver()
    async with serving(receiver.app) as receiver_url:
        credentials = {"rest": None, "callback": {"url": f"{receiver_url}/bot"}}
        server = await _server(tmp_path, action_servers["testbot"].url, credentials)
        async with server as url, httpx.AsyncClient(base_url=url, timeout=30) as bot:
            rest = await bot.post("/webhooks/rest/webhook", json={"sender": "r", "message": "show"})
            streamed = await bot.post(
                "/webhooks/rest/webhook?stream=true", json={"sender": "s", "message": "show"}
            )
            callback = await bot.post(
                "/webhooks/callback/webhook", json={"sender": "c", "message": "show"}
            )
    assert rest.json() == [{"recipient_id": "r", **m} for m in COLLECTED]
    assert [json.loads(line) for line in streamed.text.splitlines()] == [
        {"recipient_id": "s", **m} for m in COLLECTED
    ]
    assert callback.text == "success"
    assert [body for body, _ in receiver.received] == [
        {"recipient_id": "c", **m} for m in COLLECTED
    ]


async def test_socketio_clients_get_quick_replies(
    tmp_path: Path, action_servers: ActionServers
) -> None:
    server = await _server(tmp_path, action_servers["testbot"].url, {"socketio": {}})
    async with server as url:
        client = socketio.AsyncClient(reconnection=False)
        inbox: list[Any] = []
        client.on("bot_uttered", inbox.append)
        await client.connect(url, transports=["websocket"])
        await client.emit("user_uttered", {"message": "show"})
        for _ in range(200):
            if sum("text" in m for m in inbox) >= 3:
                break
            await client.sleep(0.05)
        await client.sleep(0.5)  # a message too many would arrive meanwhile
        await client.disconnect()
    # Quick replies stay quick replies, and buttons become them, as in Rasa's socket.io; a
    # text with buttons comes paragraph by paragraph, the buttons with the last (before: one
    # message, "Good choice.\n\nOff to Rome?" with the buttons).
    assert [m for m in inbox if "text" in m] == [
        {
            "text": "Pick one",
            "quick_replies": [{"content_type": "text", "title": "Yes", "payload": "/affirm"}],
        },
        {"text": "Good choice.", "quick_replies": []},
        {
            "text": "Off to Rome?",
            "quick_replies": [{"content_type": "text", "title": "Sure", "payload": "/affirm"}],
        },
    ]
