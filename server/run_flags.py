"""The checks of `botserver run`'s flag values that need none of the server's imports (a
missing file, a name no channel or storage has), and the channel names they are checked
against: `cli.py` makes them before it imports the server, so a wrong value is said at once.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from server.errors import InvalidConfig, ModelNotFound
from server.setting_values import near_miss

# Built-in channels by credentials key, imported when a project names one: socket.io alone
# brings python-socketio, aiohttp, redis and aio-pika into the process (about 40 MB).
CHANNELS: dict[str, str] = {
    "rest": "server.channels.rest.RestInput",
    "callback": "server.channels.callback.CallbackInput",
    "socketio": "server.channels.socket_io.SocketIOInput",
    "rocketchat": "server.channels.rocketchat.RocketChatInput",
}

# Rasa's other built-in channels: skipped with a warning so a Rasa project still starts.
RASA_CHANNELS_NOT_SUPPORTED = (
    "rasa",
    "facebook",
    "slack",
    "telegram",
    "mattermost",
    "twilio",
    "twilio_voice",
    "botframework",
    "webexteams",
    "hangouts",
    "cmdline",
)

# The remote storages `--remote-storage` names (server.models.remote_storage serves them).
STORAGES = ("aws", "gcs", "azure")

# The credentials file Rasa reads without --credentials.
DEFAULT_CREDENTIALS = "credentials.yml"


def check_channel_name(name: str) -> None:
    """InvalidConfig for a name that is neither a built-in channel nor a dotted class path."""
    if name in CHANNELS or "." in name:
        return
    meant = near_miss(name, CHANNELS)
    raise InvalidConfig(
        f"Unknown channel '{name}'{f' (did you mean {meant!r}?)' if meant else ''}. "
        f"Built-in channels: {', '.join(sorted(CHANNELS))}; a custom channel is a dotted "
        "class path."
    )


def check_connector(connector: str) -> None:
    """`--connector`: a channel botserver serves (asked for by name, a channel it lacks would
    leave the server serving none)."""
    if connector in RASA_CHANNELS_NOT_SUPPORTED:
        raise InvalidConfig(
            f"--connector {connector}: Rasa's '{connector}' channel is not supported by "
            f"botserver. Built-in channels: {', '.join(sorted(CHANNELS))}."
        )
    try:
        check_channel_name(connector)
    except InvalidConfig as e:
        raise InvalidConfig(f"--connector {connector}: {e}") from None


def check_run_flags(args: argparse.Namespace) -> None:
    """The flag values of `run` (`shell` shares the model source's) that are wrong on their
    face: --credentials and --verify-key naming no file, --connector and --remote-storage
    naming nothing there is. InvalidConfig saying which."""
    credentials = getattr(args, "credentials", None)
    if (
        credentials
        and not Path(credentials).exists()
        # Rasa's own default name, as its guides spell out the command: the REST channel
        # alone is served then, with a warning (a project without channels has no file).
        and Path(credentials) != Path(DEFAULT_CREDENTIALS)
    ):
        raise InvalidConfig(f"--credentials {credentials}: no such file")
    connector = getattr(args, "connector", None)
    if connector:
        check_connector(connector)
    if args.verify_key and not Path(args.verify_key).is_file():
        raise InvalidConfig(f"--verify-key {args.verify_key}: no such file")
    # An empty one too: `--remote-storage "$STORAGE"` with STORAGE unset loaded the local -m.
    if args.remote_storage is not None and args.remote_storage not in STORAGES:
        raise InvalidConfig(
            f"--remote-storage {args.remote_storage!r} is not supported: use one of "
            f"{', '.join(STORAGES)}"
        )


def model_flag(args: argparse.Namespace) -> str | None:
    """`-m`, or the model named without it (`botserver run models/mybot.tar.gz`, as Rasa)."""
    positional = getattr(args, "model_as_positional_argument", None)
    if positional is None:
        return args.model
    if args.model not in (positional, "models"):  # "models": -m's default
        raise InvalidConfig(f"two models given: -m {args.model} and {positional}")
    return positional


def check_a_model_can_come(args: argparse.Namespace, endpoints: dict[str, Any]) -> None:
    """As `rasa run`, once it has read the endpoints: without --enable-api, a model server
    (`endpoints`' `models`) or remote storage, nothing could ever load a model, so a missing
    local one stops the start (before: the server ran, not ready, for good). A model that
    exists but fails to load still starts, as in Rasa."""
    # Here: server.models brings the archive reader and the model holder.
    from server.models.local import resolve_local_model

    model = model_flag(args)
    if args.enable_api or args.remote_storage or endpoints.get("models"):
        return
    try:
        resolve_local_model(Path(model or "models"))
    except ModelNotFound as exc:
        raise InvalidConfig(
            f"{exc} Without --enable-api, a model server (`models:` in endpoints.yml) or "
            "--remote-storage, the server could never load one later (with --enable-api, "
            "PUT /model loads one)."
        ) from None


def no_model_to_talk_with(model: str | Path | None, why: str = "") -> str:
    """What `shell` says without a model: a local one missing, or one that failed to load."""
    because = f" ({why})" if why else ""
    return (
        f"no model could be loaded from '{model}'{because}. Train one with `botserver train`, "
        "or pass one with -m."
    )


def check_a_shell_model_can_come(args: argparse.Namespace, endpoints: dict[str, Any]) -> None:
    """`check_a_model_can_come` for `shell`, which has no API to load one later: a missing
    local model stops it before the server's imports and stores (before: some 1.3 CPU-s
    first). A model server or remote storage is asked when the shell starts."""
    from server.models.local import resolve_local_model

    if args.remote_storage or endpoints.get("models"):
        return
    path = Path(args.model)
    try:
        resolve_local_model(path)
    except ModelNotFound as exc:
        # What is there instead (a file not an archive, a folder without one) is news.
        why = exc.reason.rstrip(".") if os.path.lexists(path) else ""
        raise InvalidConfig(no_model_to_talk_with(path, why)) from None
