"""Which channels exist (a dict from name to class) and building them from credentials.yml.

A key of credentials.yml is a built-in channel's name (`server.run_flags.CHANNELS`, kept
beside the checks `botserver run` makes before the server's imports) or the dotted path of a
custom `InputChannel` subclass, imported as Rasa does (credentials are trusted local config).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from server.channels.channel import InputChannel
from server.errors import OPTIONAL_PACKAGES, InvalidConfig, needs_extra
from server.run_flags import (
    CHANNELS,
    RASA_CHANNELS_NOT_SUPPORTED,
    check_channel_name,
    check_connector,
)
from server.setting_values import key_line, warn_of_unknown_keys

logger = logging.getLogger(__name__)


def channel_class(name: str) -> type[InputChannel]:
    """The class for a credentials key: a built-in name or a dotted class path."""
    if name in CHANNELS:
        module_name, _, class_name = CHANNELS[name].rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # An optional package the channel imports (socket.io's, in a slim image): a
            # line saying what to install, not an import traceback.
            missing = (e.name or "").partition(".")[0]
            if missing not in OPTIONAL_PACKAGES:
                raise
            package, extra = OPTIONAL_PACKAGES[missing]
            raise needs_extra(f"The channel '{name}'", package, extra) from None
        builtin: type[InputChannel] = getattr(module, class_name)
        return builtin
    check_channel_name(name)  # a dotted class path from here on
    module_name, _, class_name = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise InvalidConfig(
            f"Cannot import the module '{module_name}' of custom channel '{name}': "
            f"{type(e).__name__}: {e}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise InvalidConfig(f"The module '{module_name}' has no class '{class_name}'.")
    if not (isinstance(cls, type) and issubclass(cls, InputChannel)):
        raise InvalidConfig(
            f"'{name}' is not a botserver channel: a custom channel must subclass "
            "server.channels.InputChannel and implement router() (Rasa's Sanic blueprint "
            "channels have to be ported)."
        )
    channel_name = cls.name
    if isinstance(channel_name, classmethod) or callable(channel_name):
        # Rasa's `def name(cls)`: served at `/webhooks/<bound method ...>` without a word.
        raise InvalidConfig(
            f"'{name}': a botserver channel names itself with a class attribute, "
            '`name = "mine"` (served at /webhooks/mine/), not Rasa\'s `def name(cls)` method.'
        )
    if not isinstance(channel_name, str) or not channel_name.strip("/"):
        # No name: its routes under `/webhooks/`, refused by FastAPI with a bare assertion.
        raise InvalidConfig(
            f"'{name}' has no channel name: set the class attribute `name = \"mine\"` "
            "(served at /webhooks/mine/)."
        )
    return cls


def _may_push(channel: InputChannel) -> bool:
    """Whether a channel has an output channel of its own: its class defines
    `get_output_channel` (the base's is None). Read from the class, not asked: a channel may
    make its output channel with its routes (as Rasa's socket.io does), after this."""
    return type(channel).get_output_channel is not InputChannel.get_output_channel


def load_channels(
    credentials: dict[str, Any] | None,
    connector: str | None = None,
    source: str = "credentials.yml",
) -> list[InputChannel]:
    """The channels to serve: `connector` alone when given, else every credentials key.

    With neither a connector nor a credentials file, falls back to the REST channel as Rasa.
    A setting a channel cannot take is an InvalidConfig naming `source` and the channel.
    """
    if connector:
        names = [connector]
    elif credentials is None:
        logger.info("No chat connector configured, falling back to the REST input channel")
        names = ["rest"]
    else:
        names = list(credentials)
    # Where a channel name came from, for errors about it.
    origin = f"--connector {connector}" if connector else source
    channels: list[InputChannel] = []
    keys: dict[str, str] = {}  # channel name: the credentials key that brought it
    for name in names:
        if name in RASA_CHANNELS_NOT_SUPPORTED:
            if connector:  # asked for by name: serving no channel at all would hide it
                check_connector(connector)
            logger.warning("Channel '%s' from %s is not supported; skipped", name, source)
            continue
        settings = (credentials or {}).get(name)
        if settings is not None and not isinstance(settings, dict):
            raise InvalidConfig(f"{source}: '{name}' must hold a mapping of settings")
        line = key_line(credentials, name)
        at = f"{source}:{line}" if line else source  # the file and the channel's line
        try:
            cls = channel_class(name)
        except InvalidConfig as e:
            raise InvalidConfig(f"{origin if connector else at}: {e}") from None
        if name in CHANNELS and settings:
            # Before building: a misspelt required key (`pasword`) is named beside the error
            # saying it is missing.
            warn_of_unknown_keys(settings, cls.settings_keys, f"{source}: channel '{name}'")
        channel = _build(cls, name, settings, at)
        _check_name(channel.name, name, keys, origin)
        channels.append(channel)
    # Only a channel with an output channel of its own can push a conversation's reminders:
    # a REST client may name any other (a REST-only custom channel) as its input channel.
    pushing = frozenset(c.name for c in channels if _may_push(c))
    for channel in channels:
        channel.served_with(pushing - {channel.name})
    return channels


def _check_name(channel_name: str, key: str, keys: dict[str, str], origin: str) -> None:
    """Refuses a second channel of one name, and warns of a custom one named as a built-in:
    one name is one webhook path and one output channel (`output_channel=<name>`)."""
    earlier = keys.setdefault(channel_name, key)
    if earlier != key:
        # Both would start: the first answers at the path, the last gets the pushed messages.
        raise InvalidConfig(
            f"{origin}: channels '{earlier}' and '{key}' are both named '{channel_name}' "
            f"(served at /webhooks/{channel_name}/): only one could be reached; give one of "
            "them another `name`"
        )
    if key not in CHANNELS and channel_name in CHANNELS:
        logger.warning(
            "%s: channel '%s' is named '%s', as the built-in channel: it is served at "
            "/webhooks/%s/ and gets what is sent to the '%s' output channel",
            origin,
            key,
            channel_name,
            channel_name,
            channel_name,
        )


def _build(
    cls: type[InputChannel], name: str, settings: dict[str, Any] | None, source: str
) -> InputChannel:
    try:
        return cls.from_credentials(settings)
    except InvalidConfig as e:
        raise InvalidConfig(f"{source}: channel '{name}': {e}") from None
    except Exception as e:  # a setting of the wrong type reaching a custom channel's code
        logger.debug("channel '%s' could not be built", name, exc_info=True)
        raise InvalidConfig(
            f"{source}: channel '{name}' cannot be built from its settings: {type(e).__name__}: {e}"
        ) from None
