"""Channels come from credentials.yml keys or `--connector`; custom ones by dotted class path."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

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


class RasaNamed(HelloChannel):
    @classmethod
    def name(cls):
        return "rasa_named"


class Nameless(HelloChannel):
    name = ""


class MyRest(HelloChannel):
    name = "rest"


class OtherRest(HelloChannel):
    name = "rest"


from server.channels.socket_io import SocketIOInput


class MySocketIO(SocketIOInput):
    name = "my_socketio"
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


def test_socket_io_without_its_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # An image or venv built without botserver[socketio] (the Dockerfile's once was): a
    # credentials.yml naming socketio stopped `botserver run` with an import traceback.
    monkeypatch.setitem(sys.modules, "socketio", None)
    monkeypatch.delitem(sys.modules, "server.channels.socket_io")
    with pytest.raises(InvalidConfig) as caught:
        load_channels({"rest": None, "socketio": {"user_message_evt": "u"}}, source="my-creds.yml")
    assert str(caught.value).startswith("my-creds.yml:")
    hint = "'socketio' needs python-socketio: pip install 'botserver[socketio]'"
    assert hint in str(caught.value)
    assert [c.name for c in load_channels({"rest": None})] == ["rest"]


def test_connector_picks_one_channel_and_no_config_means_rest() -> None:
    credentials = {"rest": None, "callback": {"url": "http://x/bot"}}
    assert [c.name for c in load_channels(credentials, "callback")] == ["callback"]
    assert [c.name for c in load_channels(None)] == ["rest"]
    assert [c.name for c in load_channels({}, "socketio")] == ["socketio"]


def test_a_connector_that_is_not_served_stops_startup_saying_so() -> None:
    # Before: `--connector slack` started a server with no channel at all (a warning only),
    # and `--connector foo` said the channel was unknown "in credentials.yml".
    with pytest.raises(InvalidConfig, match="^--connector slack: Rasa's 'slack' channel is not"):
        load_channels({"rest": None}, "slack")
    with pytest.raises(InvalidConfig, match="^--connector foo: Unknown channel 'foo'"):
        load_channels(None, "foo")
    with pytest.raises(InvalidConfig, match="^my/creds.yml: Unknown channel 'foo'"):
        load_channels({"foo": None}, source="my/creds.yml")


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


ROCKET = {"user": "bot", "password": "pw", "server_url": "http://rc"}
RSA_PUBLIC_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.mark.parametrize(
    ("channel", "settings", "message"),
    [
        ("rocketchat", {**ROCKET, "timeout": "abc"}, "'timeout' must be a positive number"),
        ("rocketchat", {**ROCKET, "timeout": 0}, "'timeout' must be a positive number"),
        # An integer no float holds: before, OverflowError, a traceback at startup.
        ("rocketchat", {**ROCKET, "timeout": 10**400}, "'timeout' must be a positive number"),
        ("rocketchat", {**ROCKET, "server_url": "chat.example.com"}, "'server_url' must be an"),
        ("rocketchat", {**ROCKET, "server_url": "http://[::1"}, "'server_url' must be an"),
        ("rocketchat", {**ROCKET, "password": ["pw"]}, "'password' must be a string, not a list"),
        ("rocketchat", {**ROCKET, "max_message_length": "big"}, "'max_message_length' must be"),
        # Digits int() cannot read: before, "ValueError: invalid literal for int()".
        ("rocketchat", {**ROCKET, "max_message_length": "\u00b2"}, "'max_message_length' must"),
        ("socketio", {"socketio_path": 5.5j}, "'socketio_path' must be a string"),
        ("socketio", {"socketio_path": "/"}, "'socketio_path' must be a path"),
        ("socketio", {"session_persistence": "maybe"}, "'session_persistence' must be true or"),
        ("socketio", {"cors_allowed_origins": 5}, "'cors_allowed_origins' must be"),
        ("socketio", {"jwt_key": "k", "jwt_method": "FOO"}, "'jwt_method' must be one of"),
        ("socketio", {"jwt_key": "k", "jwt_method": "RS256"}, "'jwt_key' must be a public key"),
        (
            "socketio",
            {"jwt_key": RSA_PUBLIC_PEM, "jwt_method": "HS256"},
            "'jwt_key' must be a shared secret for HS256",
        ),
        ("socketio", {"user_message_evt": {"a": 1}}, "'user_message_evt' must be a string"),
        ("socketio", {"rooms_redis": 6379}, "'rooms_redis' must be a Redis URL"),
        ("socketio", {"rooms_redis": {"port": 6379}}, "'rooms_redis' must be a Redis URL"),
        ("socketio", {"rooms_redis": "http://cache:6379"}, "'rooms_redis' must be a redis://"),
        ("callback", {"url": "ftp://host/bot"}, "'url' must be an http:// or https:// URL"),
        ("callback", {"url": "localhost:5034/bot"}, "'url' must be an http:// or https:// URL"),
        ("callback", {"url": "http://h/bot", "cafile": "/no/such.pem"}, "'cafile' /no/such.pem"),
        ("callback", {"url": "http://h/bot", "cafile": __file__}, "cannot be read as a CA bundle"),
        ("callback", {"url": "http://h/bot", "headers": 5}, "'headers' must be a mapping"),
    ],
)
def test_a_setting_of_the_wrong_kind_stops_startup_naming_file_channel_and_key(
    channel: str, settings: dict, message: str
) -> None:
    # Before: a traceback (timeout, socketio_path, headers), or a server that started and
    # failed every reply or connection (URLs without http, an unknown jwt_method, cafile).
    with pytest.raises(InvalidConfig, match=message) as raised:
        load_channels({channel: settings}, source="bot/credentials.yml")
    assert str(raised.value).startswith(f"bot/credentials.yml: channel '{channel}'")


@pytest.mark.parametrize("channel", ["rocketchat", "callback"])
def test_a_channel_url_with_a_port_out_of_range_stops_startup_without_its_password(
    channel: str,
) -> None:
    # Before: accepted; Rocket.Chat's first webhook then failed with a ValueError (a 500
    # with a traceback, each time), and the refusal of a URL without scheme quoted it whole.
    key = "server_url" if channel == "rocketchat" else "url"
    for url, shown in [
        ("http://bot:pa55@chat.example:99999", "http://chat.example:99999"),
        ("bot:pa55@chat.example:3000", "chat.example:3000"),
        ("http://bot:pa55\uff20chat.example:3000", "http://chat.example:3000"),  # a full-width @
    ]:
        settings = {**ROCKET, key: url} if channel == "rocketchat" else {key: url}
        with pytest.raises(InvalidConfig, match=f"'{key}' must be an http") as raised:
            load_channels({channel: settings}, source="bot/credentials.yml")
        assert shown in str(raised.value)
        assert "pa55" not in str(raised.value)


def test_flags_from_environment_variables_are_read_as_booleans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.config import read_credentials

    monkeypatch.setenv("PERSIST", "false")
    monkeypatch.setenv("NAMESPACE", "chat")
    path = tmp_path / "credentials.yml"
    path.write_text("socketio:\n  session_persistence: ${PERSIST}\n  namespace: ${NAMESPACE}\n")
    (off,) = load_channels(read_credentials(path))
    monkeypatch.setenv("PERSIST", "True")
    (on,) = load_channels(read_credentials(path))
    assert isinstance(off, SocketIOInput) and isinstance(on, SocketIOInput)
    # Before: the string "false" was true, so the conversation was the session id.
    assert off.session_persistence is False
    assert on.session_persistence is True
    assert off.namespace == "/chat"  # as socket.io clients name it


def test_a_quoted_variable_left_unsubstituted_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.config import read_credentials

    # As Rasa, only unquoted values are substituted; the error now says so, instead of a
    # bare "not '${CALLBACK_URL}/bot'" that reads as if the variable were unset.
    monkeypatch.setenv("CALLBACK_URL", "http://localhost:5034")
    path = tmp_path / "credentials.yml"
    path.write_text('callback:\n  url: "${CALLBACK_URL}/bot"\n')
    with pytest.raises(InvalidConfig, match=r"a `\$\{VAR\}` in quotes is not substituted"):
        load_channels(read_credentials(path), source=str(path))
    path.write_text("callback:\n  url: ${CALLBACK_URL}/bot\n")
    (channel,) = load_channels(read_credentials(path), source=str(path))
    assert channel.name == "callback"


def test_the_server_names_the_credentials_file_it_was_given(tmp_path: Path) -> None:
    from server.api.server import ServerOptions, build_app

    options = ServerOptions(
        model_path=None,
        credentials={"rocketchat": {**ROCKET, "timeout": "soon"}},
        credentials_file="deploy/creds.yml",
    )
    with pytest.raises(InvalidConfig, match="^deploy/creds.yml: channel 'rocketchat': 'timeout'"):
        build_app(options)


def test_a_class_that_is_not_a_channel_is_refused(custom_module: str) -> None:
    with pytest.raises(InvalidConfig, match="not a botserver channel"):
        load_channels({f"{custom_module}.NotAChannel": None})
    with pytest.raises(InvalidConfig, match="has no class 'Missing'"):
        load_channels({f"{custom_module}.Missing": None})


def test_a_custom_channel_without_a_name_string_is_refused_saying_so(custom_module: str) -> None:
    """A channel ported from Rasa keeps `def name(cls)`: it was served at
    `/webhooks/<bound method ...>` without a word; one without a name stopped startup with
    FastAPI's bare AssertionError about a path prefix ending in '/'."""
    with pytest.raises(InvalidConfig, match="class attribute, `name = .*not Rasa's `def name"):
        load_channels({f"{custom_module}.RasaNamed": None})
    with pytest.raises(InvalidConfig, match="Nameless' has no channel name"):
        load_channels({f"{custom_module}.Nameless": None})


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


def test_a_custom_channel_named_as_a_built_in_one_is_warned_about(
    custom_module: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        (channel,) = load_channels({f"{custom_module}.MyRest": None})
    assert channel.name == "rest"
    # Before: not a word that it takes the built-in REST channel's webhook and name.
    assert [r.getMessage() for r in caplog.records] == [
        f"credentials.yml: channel '{custom_module}.MyRest' is named 'rest', as the built-in "
        "channel: it is served at /webhooks/rest/ and gets what is sent to the 'rest' "
        "output channel"
    ]


@pytest.mark.parametrize("first", ["rest", "{module}.OtherRest"])
def test_two_channels_of_one_name_stop_startup_saying_so(custom_module: str, first: str) -> None:
    first = first.format(module=custom_module)
    # Before: both started; the first answered at /webhooks/rest/ and the last got what was
    # pushed to the `rest` output channel: the other's webhook was never reached.
    with pytest.raises(InvalidConfig) as refused:
        load_channels({first: None, f"{custom_module}.MyRest": None})
    assert str(refused.value) == (
        f"credentials.yml: channels '{first}' and '{custom_module}.MyRest' are both named "
        "'rest' (served at /webhooks/rest/): only one could be reached; give one of them "
        "another `name`"
    )


def test_two_socket_io_channels_at_one_path_stop_startup_saying_so(
    custom_module: str, tmp_path: Path
) -> None:
    from server.api.server import ServerOptions, build_app

    def start(mine: dict[str, str] | None) -> None:
        credentials = {"socketio": None, f"{custom_module}.MySocketIO": mine}
        stores = {"tracker_store": {"type": "in_memory"}}
        build_app(
            ServerOptions(
                model_path=None, endpoints=stores, credentials=credentials, models_dir=tmp_path
            )
        )

    # Before: both started; the first took every connection at /socket.io, and the other
    # (its events, its bot_message_evt) was never reached.
    with pytest.raises(InvalidConfig) as refused:
        start(None)
    assert str(refused.value) == (
        "credentials.yml: channels 'socketio' and 'my_socketio' are both served at "
        "/socket.io: only the first would be reached; give one another `socketio_path`"
    )
    start({"socketio_path": "/mine.io"})


def test_a_rocketchat_webhook_without_a_token_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        load_channels({"rocketchat": {**ROCKET, "webhook_token": "s3cret"}})
    assert "webhook_token" not in caplog.text
    with caplog.at_level(logging.WARNING):
        load_channels({"rocketchat": ROCKET})
    # Before: nothing said that the webhook was open to anyone.
    assert "no webhook_token" in caplog.text


async def test_a_credentials_file_naming_no_channel_serves_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from server.api.server import ServerOptions, build_app
    from server.config import read_credentials

    # As `rasa run --credentials credentials.yml` with an empty file: no channel, so an
    # API-only server can leave the (never authenticated) REST webhook off. Before, the REST
    # channel was on. Without the file, the REST channel stays on, as in Rasa.
    path = tmp_path / "credentials.yml"
    path.write_text("# no channels\n")
    served = {}
    for name, credentials in (("empty", read_credentials(path)), ("none", None)):
        app = build_app(
            ServerOptions(model_path=None, credentials=credentials, credentials_file=str(path))
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bot"
        ) as client:
            served[name] = (await client.get("/webhooks/rest/")).status_code
    assert served == {"empty": 404, "none": 200}
    assert f"{path} names no channel" in caplog.text


def test_a_misspelt_channel_setting_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """Rasa, and botserver before, ignored an unknown key without a word: a callback whose
    `header:` (for `headers:`) held its API key posted every reply without it, and
    `session_persistance: true` left every page load a new conversation."""
    credentials = {
        "rest": {"port": 5005},
        "callback": {"url": "http://127.0.0.1:9/bot", "header": {"X-Key": "k"}},
        "socketio": {"session_persistance": True, "bot_message_evt": "bot_uttered"},
        "rocketchat": {
            "user": "bot",
            "password": "pw",
            "server_url": "http://127.0.0.1:9",
            "webhook_token": "t",
            "colour": "red",
        },
    }
    with caplog.at_level(logging.WARNING):
        load_channels(credentials)
    assert [r.getMessage() for r in caplog.records] == [
        "credentials.yml: channel 'rest': unknown setting 'port' is not read (nor by Rasa); "
        "it reads none",
        "credentials.yml: channel 'callback': unknown setting 'header' is not read (nor by "
        "Rasa); did you mean 'headers'?",
        "credentials.yml: channel 'socketio': unknown setting 'session_persistance' is not "
        "read (nor by Rasa); did you mean 'session_persistence'?",
        "credentials.yml: channel 'rocketchat': unknown setting 'colour' is not read (nor by "
        "Rasa); it reads max_message_length, password, server_url, ssl, timeout, user, "
        "webhook_token",
    ]


def test_a_credentials_file_mistake_names_the_line_of_the_key_or_channel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, a misspelt key was named without its line, and not at all when the key it
    was meant for is required: the start stopped on "missing password" alone, while the
    file held a `pasword`."""
    from server.config import read_credentials

    path = tmp_path / "credentials.yml"
    path.write_text(
        "rest:\n\ncallback:\n  url: http://127.0.0.1:9/bot\n  timout: 3\n\n"
        "rocketchat:\n  user: bot\n  pasword: pw\n  server_url: http://127.0.0.1:9\n"
    )
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidConfig) as raised:
        load_channels(read_credentials(path), source=str(path))
    assert str(raised.value) == (
        f"{path}:7: channel 'rocketchat': needs the bot user's Rocket.Chat login: missing password"
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: channel 'callback': unknown setting 'timout' on line 5 is not read (nor by "
        "Rasa); did you mean 'timeout'?",
        f"{path}: channel 'rocketchat': unknown setting 'pasword' on line 9 is not read (nor "
        "by Rasa); did you mean 'password'?",
    ]


def test_a_misspelt_channel_name_is_named_with_its_line_and_the_channel_meant(
    tmp_path: Path,
) -> None:
    """Before: "credentials.yml: Unknown channel 'callbak'. Built-in channels: ...", without
    the line or the channel meant."""
    from server.config import read_credentials

    path = tmp_path / "credentials.yml"
    path.write_text("rest:\n\ncallbak:\n  url: http://127.0.0.1:9/bot\n")
    with pytest.raises(InvalidConfig) as raised:
        load_channels(read_credentials(path), source=str(path))
    assert str(raised.value).startswith(
        f"{path}:3: Unknown channel 'callbak' (did you mean 'callback'?). Built-in channels: "
    )


@pytest.mark.parametrize(
    ("ssl", "server_url", "warned"),
    [
        (False, "http://chat.example.test", None),
        ("true", "https://chat.example.test", None),
        (True, "http://chat.example.test", "plain http"),
        (False, "https://chat.example.test", "https"),
    ],
)
def test_rocketchats_ssl_from_rasas_example_is_checked_against_the_url(
    caplog: pytest.LogCaptureFixture, ssl: object, server_url: str, warned: str | None
) -> None:
    """Rasa's own example credentials (moodbot's) carry `ssl: false` for Rocket.Chat, which
    no Rasa version read: the scheme of `server_url` decides. Before, every such project was
    warned of an 'unknown' option, as if botserver lacked a setting Rasa has; and `ssl: true`
    with an http:// URL (the bot's password sent in the clear) got the same words."""
    settings = {"user": "bot", "password": "pw", "server_url": server_url, "webhook_token": "t"}
    with caplog.at_level(logging.WARNING):
        load_channels({"rocketchat": {**settings, "ssl": ssl}})
    messages = [r.getMessage() for r in caplog.records]
    assert not any("unknown" in m for m in messages)
    if warned is None:
        assert messages == []
    else:
        (message,) = messages
        assert "'ssl: " in message and server_url in message and warned in message


def test_rocketchats_server_url_without_a_scheme_is_shown_with_one() -> None:
    """Rasa's example writes `server_url: "localhost:3000"` with `ssl: false`: the error
    says which URL to write."""
    settings = {"user": "bot", "password": "pw", "server_url": "localhost:3000", "ssl": False}
    with pytest.raises(InvalidConfig, match="write 'http://localhost:3000'"):
        load_channels({"rocketchat": settings})
    with pytest.raises(InvalidConfig, match="write 'https://localhost:3000'"):
        load_channels({"rocketchat": {**settings, "ssl": True}})
    # Scheme-relative (`//host`), the user and password left out: one scheme, no four slashes
    relative = {**settings, "server_url": "//bot:s3cret@chat.example.test:3000"}
    with pytest.raises(InvalidConfig, match="write 'http://chat.example.test:3000'$") as info:
        load_channels({"rocketchat": relative})
    assert "s3cret" not in str(info.value)
