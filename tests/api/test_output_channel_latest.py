"""`?output_channel=latest` on `execute` and `trigger_intent`: the channel is the one of the
conversation's last user message before the turn, as in Rasa, for where the bot's messages go
and for whether the answer has them too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.training.train import train
from tests.api.conftest import MEMORY_STORE
from tests.fake_http import serve_json

FILES = {
    "domain.yml": """version: "3.1"
intents: [greet]
actions: [action_relay]
responses:
  utter_greet:
  - text: "Hi"
""",
    "config.yml": "language: en\npipeline: []\npolicies: [{name: RulePolicy}]\n",
    "data/nlu.yml": """version: "3.1"
nlu:
- intent: greet
  examples: |
    - good morning
""",
}


@pytest.fixture(scope="module")
def relay_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("relaybot")
    for name, text in FILES.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(text)
    return train(root / "config.yml", root / "domain.yml", [root / "data"], root / "models").path


def relay(path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """An action that logs a user message of its own (rasa-sdk's `UserUttered`, whose input
    channel is none) and says something."""
    user = {"event": "user", "text": "relayed", "input_channel": None}
    return 200, {"events": [user], "responses": [{"text": "passed on"}]}


async def test_a_turn_that_logs_a_user_message_keeps_the_channel_it_started_with(
    make_client: Callable[..., Any], relay_model: Path
) -> None:
    """The conversation is on socket.io: the message goes there, and the answer has the
    tracker alone, as Rasa answers (its output channel is chosen once, before the turn).
    Before, the answer was chosen from the tracker after the turn, whose last user message
    (the action's) has no channel: the message came in the answer too, and a client showing
    both showed it twice."""
    with serve_json(relay) as url:
        client = await make_client(
            model_path=relay_model,
            endpoints={**MEMORY_STORE, "action_endpoint": {"url": f"{url}/webhook"}},
            credentials={"socketio": None, "rest": None},
        )
        said = {"event": "user", "text": "hi", "input_channel": "socketio"}
        assert (await client.post("/conversations/s1/tracker/events", json=said)).is_success
        response = await client.post(
            "/conversations/s1/execute?output_channel=latest", json={"name": "action_relay"}
        )

    assert response.status_code == 200, response.text
    assert list(response.json()) == ["tracker"], response.text
    events = response.json()["tracker"]["events"]
    assert [e.get("text") for e in events if e["event"] in ("user", "bot")][-2:] == [
        "passed on",
        "relayed",
    ]
