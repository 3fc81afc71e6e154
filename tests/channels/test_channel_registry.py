"""Channels come from credentials.yml keys or `--connector`; custom ones by dotted class path."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import httpx
import pytest

from server.api.app import create_app
from server.channels import CHANNELS, attach_channels, load_channels
from server.channels.callback import CallbackInput
from server.channels.rest import RestInput
from server.channels.rocketchat import RocketChatInput
from server.channels.socket_io import SocketIOInput
from server.errors import InvalidConfig
from tests.channels.conftest import echo

CUSTOM = """
from fastapi import APIRouter
from server.channels import InputChannel
from server.dialogue.messages import CollectingOutputChannel, UserMessage


class HelloChannel(InputChannel):
    name = "hello"

    def __init__(self, greeting="hi"):
        self.greeting = greeting

    @classmethod
    def from_credentials(cls, credentials):
        return cls(**(credentials or {}))

    def router(self, on_new_message):
        router = APIRouter(prefix=self.url_prefix())

        @router.get("/webhook")
        async def receive(text: str):
            out = CollectingOutputChannel()
            await on_new_message(UserMessage(text, "h1", self.name, output_channel=out))
            return {"greeting": self.greeting, "messages": out.messages}

        return router


class NotAChannel:
    pass
"""


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_channels.py").write_text(textwrap.dedent(CUSTOM))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_channels"


def test_every_credentials_key_becomes_a_channel() -> None:
    channels = load_channels(
        {
            "rest": None,
            "callback": {"url": "http://localhost:5034/bot"},
            "socketio": {"user_message_evt": "u", "bot_message_evt": "b"},
            "rocketchat": {"user": "bot", "password": "pw", "server_url": "http://rc"},
        }
    )
    assert [type(c) for c in channels] == [RestInput, CallbackInput, SocketIOInput, RocketChatInput]
    assert set(CHANNELS) == {"rest", "callback", "socketio", "rocketchat"}


def test_connector_picks_one_channel_and_no_config_means_rest() -> None:
    credentials = {"rest": None, "callback": {"url": "http://x/bot"}}
    assert [c.name for c in load_channels(credentials, "callback")] == ["callback"]
    assert [c.name for c in load_channels(None)] == ["rest"]
    assert [c.name for c in load_channels({}, "socketio")] == ["socketio"]


def test_rasa_channels_we_do_not_serve_are_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        channels = load_channels({"rest": None, "rasa": {"url": "http://localhost:5002/api"}})
    assert [c.name for c in channels] == ["rest"]
    assert "'rasa'" in caplog.text


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"telegrm": None}, "Unknown channel 'telegrm'"),
        ({"callback": None}, "needs the URL"),
        ({"rocketchat": {"user": "bot"}}, "missing password, server_url"),
        ({"no_such_module.Channel": None}, "Cannot import the module 'no_such_module'"),
        ({"rest": "yes"}, "must hold a mapping"),
    ],
)
def test_bad_credentials_say_what_is_wrong(credentials: dict, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        load_channels(credentials)


def test_a_class_that_is_not_a_channel_is_refused(custom_module: str) -> None:
    with pytest.raises(InvalidConfig, match="not a botserver channel"):
        load_channels({f"{custom_module}.NotAChannel": None})
    with pytest.raises(InvalidConfig, match="has no class 'Missing'"):
        load_channels({f"{custom_module}.Missing": None})


async def test_a_custom_channel_is_loaded_by_dotted_path(custom_module: str) -> None:
    (channel,) = load_channels({f"{custom_module}.HelloChannel": {"greeting": "hey"}})
    app = create_app()
    attach_channels(app, [channel], echo)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bot"
    ) as client:
        answer = await client.get("/webhooks/hello/webhook", params={"text": "yo"})
    assert answer.json()["greeting"] == "hey"
    assert answer.json()["messages"][0] == {"recipient_id": "h1", "text": "echo: yo"}
