"""Fixtures for channel tests: a trained concertbot, a test agent."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.dialogue.messages import UserMessage
from tests.action_servers.fixtures import action_servers  # noqa: F401
from tests.serving import serving
from tests.shared_data import BOTS


async def echo(message: UserMessage) -> None:
    """The channel contract without a model: reply through the message's output channel."""
    assert message.output_channel is not None
    text = message.text or ""
    if text == "buttons":
        reply: dict[str, Any] = {
            "text": "pick one",
            "buttons": [
                {"title": "Yes", "payload": "/affirm"},
                {"title": "No", "payload": "/deny"},
            ],
        }
    elif text == "image":
        reply = {"text": "look", "image": "https://example.test/a.png"}
    elif text == "boom":
        await message.output_channel.send_response(message.sender_id, {"text": "before"})
        raise RuntimeError("the turn failed")
    else:
        reply = {"text": f"echo: {text}\n\nfrom {message.sender_id} via {message.input_channel}"}
    await message.output_channel.send_response(message.sender_id, reply)


@pytest.fixture(scope="session")
def concertbot_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A concertbot model trained by `botserver train` (a fraction of a second)."""
    from server.training.train import train

    bot = BOTS / "concertbot"
    out = tmp_path_factory.mktemp("concertbot-models")
    return train(bot / "config.yml", bot / "domain.yml", [bot / "data"], out, force=True).path


@pytest.fixture(scope="session")
def formbot_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A formbot model (its Duckling extractor finds no server and is skipped)."""
    from server.training.train import train

    bot = BOTS / "formbot"
    out = tmp_path_factory.mktemp("formbot-models")
    return train(bot / "config.yml", bot / "domain.yml", [bot / "data"], out, force=True).path


@contextlib.asynccontextmanager
async def concertbot_server(
    model: Path,
    action_url: str,
    credentials: dict[str, Any] | None = None,
    action_timeout: float = 10.0,
    stores: dict[str, Any] | None = None,
) -> AsyncIterator[str]:
    """The whole server (`botserver run --enable-api`) on a model, with an action server;
    `stores` sets `tracker_store` (in memory by default) and `lock_store`."""
    from server.api.server import ServerOptions, build_app

    options = ServerOptions(
        model_path=model,
        endpoints={
            "action_endpoint": {"url": action_url, "timeout": action_timeout},
            "tracker_store": {"type": "in_memory"},
            **(stores or {}),
        },
        credentials=credentials,
        enable_api=True,
        models_dir=model.parent,
    )
    async with serving(build_app(options)) as url:
        yield url


def modelless_app(models_dir: Path, credentials: dict[str, Any]) -> Any:
    """The whole server with these channels and no model loaded (none in `models_dir`)."""
    from server.api.server import ServerOptions, build_app

    options = ServerOptions(
        model_path=None,
        endpoints={"tracker_store": {"type": "in_memory"}},
        credentials=credentials,
        models_dir=models_dir,
    )
    return build_app(options)
