"""Every error botserver raises on purpose, as one shallow tree.

The API layer maps these to Rasa's error body and an HTTP status in one place
(`server/api/errors.py`); nothing else should know about status codes.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped the command (a CronJob past activeDeadlineSeconds, `kill`, `docker
    stop`), as Ctrl-C does: handled where Ctrl-C is, then exit 143."""


class BotServerError(Exception):
    """Base of every error botserver raises on purpose."""


class InvalidProjectFile(BotServerError):
    """A project file (YAML or JSON) is malformed or breaks the schema."""

    def __init__(self, message: str, filename: str | None = None, line: int | None = None):
        self.filename = filename
        self.line = line
        self.reason = message
        where = ""
        if filename:
            where = f"{filename}:{line}: " if line is not None else f"{filename}: "
        super().__init__(f"{where}{message}")


class NothingToTrain(InvalidProjectFile):
    """A project without stories, rules or NLU data: Rasa trains no model from it."""


class InvalidConfig(BotServerError):
    """endpoints.yml, credentials.yml or config.yml holds a value we cannot use."""

    # The config.yml item refused, as (section, index): ("pipeline", 2) is the third
    # component. Training turns it into the item's line.
    item: tuple[str, int] | None = None


@contextmanager
def about_config_item(section: str, index: int | None) -> Iterator[None]:
    """An InvalidConfig raised inside names config.yml's `section[index]` (if none is named)."""
    try:
        yield
    except InvalidConfig as exc:
        if exc.item is None and index is not None:
            exc.item = (section, index)
        raise


class MissingEnvironmentVariable(InvalidConfig):
    """A `${VAR}` in a configuration file names a variable that is not set."""


class InvalidEvent(BotServerError):
    """An event dict does not describe a known, well-formed Rasa event."""


class InvalidNluData(InvalidEvent):
    """NLU data (intent, entities, parse data) or a reminder's date that breaks Rasa's schema;
    `parameter` names the part of the request it came in."""

    def __init__(self, message: str, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class InvalidConversationId(BotServerError):
    """A conversation id no tracker store can hold (too long, or a NUL character)."""


class UnknownConversation(BotServerError):
    """No tracker is stored for the conversation, where the request needs one."""


class ModelError(BotServerError):
    """Base of model archive and model loading errors."""


class ModelSuperseded(ModelError):
    """A model that loaded after a newer request for a model had already been served."""


class ModelStorageFull(ModelError):
    """The server's disk has no room for a model (ENOSPC, a quota): its problem, not the
    archive's."""


class ModelNotFound(ModelError):
    """No model archive exists where one was asked for. `reason` is the message without the
    `hint` for the command line (train one, pass `-m`), which a PUT /model caller cannot use."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(f"{reason} {hint}" if hint else reason)
        self.reason = reason


class StorageNotFound(ModelNotFound):
    """The remote storage's bucket or container that should hold the model does not exist."""


class ModelUnavailable(ModelError):
    """A model's source (remote storage) cannot be reached, or did not answer in time."""


class UnsafeArchive(ModelError):
    """An archive member is hostile: traversal, link, device, too large, pickle..."""


class CorruptArchive(ModelError):
    """A file that is not a readable .tar.gz: not gzip, not tar, truncated."""


class UnsupportedModel(ModelError):
    """An archive in another format (a Rasa model, an older botserver format)."""


class OutdatedModel(UnsupportedModel):
    """A model an older botserver trained with a setting this version refuses: retrain it."""


class NewerModel(UnsupportedModel):
    """A model a newer botserver trained with what this version cannot read (a component it
    lacks): upgrade, or retrain it."""


class SignatureError(ModelError):
    """An archive is unsigned or its signature does not verify."""


class NoModelLoaded(BotServerError):
    """A request needs a model and none is loaded."""


class NoDialogueModel(BotServerError):
    """A request needs the next action predicted and the model is NLU-only."""


class TrainingError(BotServerError):
    """Training could not finish (bad data, bad configuration)."""


class PredictionErrors(BotServerError):
    """`botserver test --fail-on-prediction-errors`: test stories failed."""


class StoreError(BotServerError):
    """A storage backend failed a request: a turn that meets one is not answered as handled."""


class StoreUnavailable(StoreError):
    """The tracker store, lock store or event broker cannot be reached. `dependency` says what
    and where ("PostgreSQL at 127.0.0.1:5432 (the tracker store)"), `reason` why, for the
    outage's lines in the log (`server.outages`)."""

    def __init__(self, message: str, dependency: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.dependency = dependency
        self.reason = reason


class StoreRefusedData(StoreError):
    """The tracker store's database refuses the values themselves (an event larger than it
    takes, a value out of its column's range): sending them again cannot help."""


class StoreFailed(StoreError):
    """A store's database refused a statement for a reason of its own (a table changed
    underneath it, a missing privilege): the server's problem, logged."""


class CorruptConversation(StoreFailed):
    """A stored conversation this server cannot read (not JSON, not a tracker's shape, an
    event it does not know): the stored data's fault, not the request's. It is left as is."""


class NothingToExport(BotServerError):
    """`botserver export` found no conversation, none of the requested ones, or no event in
    the requested time range."""


class ExportInterrupted(BotServerError):
    """The event broker failed during `botserver export`: `published` events went out, and
    `resume_timestamp` and `resume_sender_id` are the timestamp and conversation of the first
    one that did not, after `resume_skip` of that conversation with that timestamp."""

    def __init__(
        self,
        message: str,
        published: int,
        resume_timestamp: float,
        resume_sender_id: str,
        resume_skip: int = 0,
    ) -> None:
        self.published = published
        self.resume_timestamp = resume_timestamp
        self.resume_sender_id = resume_sender_id
        self.resume_skip = resume_skip
        super().__init__(message)


class LockTimeout(BotServerError):
    """A conversation lock could not be acquired within the configured wait."""


class ActionError(BotServerError):
    """A custom action failed: the action server is down, slow or answered garbage."""


class ActionRejected(ActionError):
    """The action server refused to run the action (HTTP 400 with action_name)."""

    def __init__(self, action_name: str, message: str | None = None):
        self.action_name = action_name
        super().__init__(message or f"Custom action '{action_name}' rejected to run")


class MessageTooLong(BotServerError):
    """A user message longer than botserver reads (`MAX_TEXT_CHARS`); nothing is stored."""


class ResponseTooLarge(BotServerError):
    """An outbound HTTP endpoint (action, NLG or NLU server, callback, Duckling) answered with
    a body larger than `max_response_bytes`, counted after decompression."""


class Refused(BotServerError):
    """A request the API's security refused; `why` is for the server log, never the client."""

    def __init__(self, message: str, why: str = "") -> None:
        super().__init__(message)
        self.why = why


class AuthError(Refused):
    """Credentials are missing or invalid (HTTP 401)."""


class Forbidden(Refused):
    """Credentials are valid but do not allow this request (HTTP 403)."""


def clause(reason: object) -> str:
    """An error's text (or a reason) to go on after in one sentence ("...; turns answer
    503"): without the full stop it may end in, as redis-py's do (lines read "refused.;")."""
    return str(reason).rstrip(".")


# Error messages quote the offending value in brief: YAML aliases let a 1 KB file hold a list
# of millions of items (a "billion laughs"), whose full repr made a 312 MB error in 6 s.
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxtuple, _BRIEF.maxdict = 3, 6, 6, 6
_BRIEF.maxset, _BRIEF.maxfrozenset, _BRIEF.maxstring, _BRIEF.maxother = 6, 6, 120, 120
_BRIEF.maxlong = 40


def brief(value: Any) -> str:
    """`repr(value)`, cut to a few hundred characters whatever the value's size."""
    return _BRIEF.repr(value)


_CLIPPED_AT = 200  # characters of a value quoted by `clipped`


def clipped(value: Any) -> str:
    """`value` as `str` shows it (a string as it is), cut after a couple of hundred
    characters and then told how long it was: a name a client sends (an unknown intent, a
    sender) is quoted whole in an error or a log line, a 10 MB one is not echoed back."""
    text = value if isinstance(value, str) else brief(value)
    if len(text) <= _CLIPPED_AT:
        return text
    return f"{text[:_CLIPPED_AT]}... ({len(text):,} characters)"


_AROUND = 20  # characters shown either side of where two texts differ


def told_apart(first: str, second: str) -> str:
    """The two texts in ASCII around where they first differ (whole when short): two long
    ids quoted in `brief` print alike when they differ in their middle, and a request head
    may be 64 KiB, a log line not."""
    pairs = zip(first, second, strict=False)
    at = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
    if at is None:
        at = min(len(first), len(second))
    start, end = max(0, at - _AROUND), at + _AROUND
    shown = f"{ascii(first[start:end])} and {ascii(second[start:end])}"
    if start or max(len(first), len(second)) > end:
        shown += f" from character {start} of {len(first)} and {len(second)} characters"
    return shown


def how_many(count: int, noun: str, plural: str | None = None) -> str:
    """`count` `noun`s, in the singular for one ("1 event", "2 events"; "1 story", "2
    stories" given the `plural`)."""
    return f"{count} {noun}" if count == 1 else f"{count} {plural or noun + 's'}"


def first_line(exc: BaseException, limit: int | None = 300, default: str | None = None) -> str:
    """An error's own words for one log line or message: the first line of its text, at most
    `limit` characters, or `default` (its class name unless given) when it has no text, as
    timeouts often do."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__ if default is None else default
    return lines[0] if limit is None else lines[0][:limit]


def install_extra(extra: str) -> str:
    """The command that installs botserver's optional `extra` (its packages at the versions
    botserver is tested with), for errors about a package that is missing."""
    return f"pip install 'botserver[{extra}]'"


# The optional libraries, by the name they are imported as: the distribution pip installs and
# the extra of botserver that brings it, for the one line a missing one gets (a backend or
# channel endpoints.yml / credentials.yml names, without its extra installed).
OPTIONAL_PACKAGES = {
    "asyncpg": ("asyncpg", "postgres"),
    "aiomysql": ("aiomysql", "mysql"),
    "pymysql": ("pymysql", "mysql"),
    "redis": ("redis", "redis"),
    "aio_pika": ("aio-pika", "rabbitmq"),
    "aiormq": ("aiormq", "rabbitmq"),
    "pamqp": ("pamqp", "rabbitmq"),
    "socketio": ("python-socketio", "socketio"),
    "engineio": ("python-socketio", "socketio"),
    "boto3": ("boto3", "aws"),
    "botocore": ("boto3", "aws"),
    "google": ("google-cloud-storage", "gcs"),
    "azure": ("azure-storage-blob", "azure"),
}


def needs_extra(what: str, package: str, extra: str) -> InvalidConfig:
    """The error for `what`, which needs the optional `package`, where it is not installed."""
    return InvalidConfig(f"{what} needs {package}: {install_extra(extra)}")
