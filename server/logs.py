"""Log setup: human-readable or JSON lines, to stderr and optionally a file, secrets redacted;
Rasa's `LOG_LEVEL*` variables and `--logging-config-file`."""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import os
import re
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import yaml

from server.auth.log_redaction import RedactSecretsFilter, redact
from server.errors import InvalidConfig
from server.outages import RepeatsCounted

__all__ = ["RepeatsCounted", "announce", "command_failed", "configure_logging"]

# Our own loggers: what Rasa's `rasa` logger is to Rasa.
OWN_LOGGERS = ("server", "botserver", "cli")
# Libraries whose info and debug lines are noise: at LOG_LEVEL_LIBRARIES (WARNING unset),
# whatever -v/-vv say (as Rasa keeps its libraries at LOG_LEVEL_LIBRARIES). Before, -vv
# opened them: a first start on a new SQLite file printed some 400 debug lines of aiosqlite
# and SQLAlchemy ahead of the turns' lines.
LIBRARY_LOGGERS = (
    "httpx",
    "httpcore",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "aiomysql",
    "redis",
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "multipart",
    "python_multipart",
    "apscheduler",
    "websockets",
    "asyncio",
    "socketio",
    "engineio",
    # "setup plugin alembic.autogenerate.schemas" and six more at each start with -v.
    "alembic.runtime.plugins",
)
# Libraries' lines about the server itself (uvicorn's start and stop, alembic's schema
# migrations): they follow -v/-vv as the root does, unless LOG_LEVEL_LIBRARIES is set.
SERVER_LIBRARY_LOGGERS = ("uvicorn.error", "alembic")
RABBITMQ_LOGGERS = ("aio_pika", "aiormq")
KAFKA_LOGGERS = ("kafka",)

# Record attributes that are not extra fields; uvicorn's `color_message` is its message
# template with terminal colours, for its own formatter.
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "color_message",
}


def _field(name: str, value: Any) -> str:
    """An `extra=` field's value, redacted as it would be in a line `name: value` (the
    filter sees the message, its arguments and traceback, not these)."""
    text = str(value)
    shown, prefix = redact(f"{name}: {text}"), f"{name}: "
    return shown[len(prefix) :] if shown.startswith(prefix) else redact(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value if isinstance(value, (int, float, bool)) else _field(key, value)
        # The redaction filter's text when it ran (the traceback with secrets hidden).
        if record.exc_text:
            out["exception"] = record.exc_text
        elif record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # JSON escapes the C0 controls, not DEL and C1 (U+0085 is a line break to Python's
        # splitlines, U+009B a terminal's CSI) nor U+2028/U+2029 (line breaks to JavaScript).
        return _RAW_IN_JSON.sub(_json_escaped, json.dumps(out, ensure_ascii=False))


# What `json.dumps(..., ensure_ascii=False)` leaves raw that may break or colour a line.
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029]")


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


# Characters that would let a client-controlled string (a sender id, a message text) forge
# log lines or hide text in a terminal: C0 controls but tab, DEL, C1, the Unicode line and
# paragraph separators.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x0A:
        return "\\n"
    if code == 0x0D:
        return "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# Control characters but the line feed, in a traceback (whose lines are kept).
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


class TextFormatter(logging.Formatter):
    """The human-readable line; control characters in the message are escaped (`\\n`,
    `\\x00`), so one record is one line whatever a client put in it. A traceback keeps its
    lines, each indented: a line that starts at the margin is always a record's first (an
    exception's message may hold a client's text, newlines and all)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = _CONTROL.sub(_escaped, record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return _indented(super().formatException(ei))

    def format(self, record: logging.LogRecord) -> str:
        # The traceback the redaction filter left in `exc_text` (logging prints it as it is),
        # escaped and indented here; left as it was for the next handler's formatter.
        raw = record.exc_text
        if raw:
            record.exc_text = _indented(raw)
        try:
            return super().format(record)
        finally:
            record.exc_text = raw


def _indented(traceback: str) -> str:
    text = _CONTROL_BUT_NEWLINE.sub(_escaped, traceback)
    return "\n".join("  " + line for line in text.split("\n"))


class OneLineFormatter(logging.Formatter):
    """The escaping of `TextFormatter` around a handler's own formatter (a
    `--logging-config-file`'s format): the message escaped, a traceback indented, for this
    handler only (the record is as it was for the next one)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        msg, args, exc_text = record.msg, record.args, record.exc_text
        record.msg, record.args = _CONTROL.sub(_escaped, record.getMessage()), None
        if record.exc_info or exc_text:
            # The redaction filter's text when it ran, else the inner formatter's own.
            shown = exc_text or self.inner.formatException(record.exc_info)  # type: ignore[arg-type]
            record.exc_text = _indented(shown)
        try:
            return self.inner.format(record)
        finally:
            record.msg, record.args, record.exc_text = msg, args, exc_text


# Set on a start-up line `announce` has already printed on stdout.
_PRINTED = "_printed_on_stdout"


def announce(logger: logging.Logger, message: str) -> None:
    """A start-up line for people and for the logs, once wherever the output ends up.

    Logged, so that the log stream on stderr, `--log-file` and a log shipper carry it. Printed
    on stdout too when stdout is a terminal (where it reads best bare) or when our info lines
    are not logged (`--quiet`, `LOG_LEVEL=WARNING`). Not printed otherwise: with stdout and
    stderr in one file (`> out.log 2>&1`) or in one log (Docker, journald) it would appear
    twice, the second time without a timestamp (and as a line that is not JSON among JSON).
    """
    logged = logger.isEnabledFor(logging.INFO)
    if logged and not _isatty(sys.stdout):
        logger.info(message)
        return
    print(message, flush=True)
    logger.info(message, extra={_PRINTED: True})


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced, or closed
        return False


def _same_destination(one: Any, other: Any) -> bool:
    """Whether two streams write to the same file, pipe or terminal."""
    if one is other:
        return True
    try:
        a, b = os.fstat(one.fileno()), os.fstat(other.fileno())
    except (AttributeError, ValueError, OSError):  # no file descriptor (io.StringIO), closed
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# Set on a command's `error:` line, which the command has printed on stderr itself.
_ON_STDERR = "_printed_on_stderr"


def command_failed(message: str, out: TextIO | None = None) -> None:
    """The `error:` line that ends a failed command (or says why it fails: `data validate`'s
    and `train`'s validation errors): on stderr (or `out`), bare, as Rasa prints it, and
    in the log too (`--log-file`, syslog, a `--logging-config-file`'s handlers) as an ERROR
    record of `botserver`, so a server started by a service manager with `--log-file` says
    there why it stopped. The stderr handler leaves the record out: the line is there already."""
    print(f"error: {message}", file=out or sys.stderr)
    logging.getLogger("botserver").error(message, extra={_ON_STDERR: True})


class _NotOnStderrAgain(logging.Filter):
    """Keeps the stderr handler from writing a failure the command printed there itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, _ON_STDERR, False)


class _PrintedAlready(logging.Filter):
    """Keeps the stderr handler from writing what `announce` printed on stdout, when both
    streams end in the same place (a terminal, one file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, _PRINTED, False)


class SaidAtStart(logging.Filter):
    """With `--workers N`, a warning about the configuration said once: the parent says it as
    it checks the configuration, collecting the lines' texts (`collect`); each worker, which
    builds its app from the same configuration, drops those lines word for word. Before, the
    parent said each twice (its checks, its trial build) and each worker once more."""

    def __init__(self, said: Iterable[str] = (), collect: bool = False) -> None:
        super().__init__()
        self.said = set(said)
        self.collect = collect

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # Decided once a record: it passes each handler (stderr, a file) through this filter.
        keep = getattr(record, "_said_at_start", None)
        if keep is None:
            text = record.getMessage()
            keep = text not in self.said
            if keep and self.collect:
                self.said.add(text)
            record._said_at_start = keep
        return bool(keep)


@contextmanager
def saying_once(said: SaidAtStart) -> Iterator[None]:
    """`said` on every handler of the root logger inside the block."""
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(said)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(said)


def _is_connection_error(exc: BaseException | None) -> bool:
    """A refused, lost or timed-out connection, or a library's error raised from one."""
    for _ in range(5):  # the chain of causes, a few links deep
        if exc is None:
            return False
        if isinstance(exc, (OSError, EOFError)) or any(
            "Connection" in cls.__name__ for cls in type(exc).__mro__
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class ConnectionErrorsInOneLine(logging.Filter):
    """A library's line about a refused or lost connection (asyncpg's pool retrying, aiormq's
    reader ending) with the error's one-line summary instead of the traceback through the
    library's internals: an expected failure, which our own lines explain (one when the
    dependency goes away, one when it is back). Not added at -vv, where tracebacks stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if (
            exc is not None
            and record.name.split(".")[0] not in OWN_LOGGERS
            and _is_connection_error(exc)
        ):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


class _SaidByUs(logging.Filter):
    """uvicorn's lines that repeat one of ours: "Uvicorn running on ... (Press CTRL+C to
    quit)" beside "botserver ... is up on ..." (at -v)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Uvicorn running on")


_SAID_BY_US = _SaidByUs()


def _env_level(name: str) -> int | None:
    """The level an environment variable names (`DEBUG`, `info`, `20`); None when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    level = int(raw) if raw.isdigit() else logging.getLevelName(raw.upper())
    if not isinstance(level, int):
        raise InvalidConfig(
            f"{name}={raw!r} is not a log level (DEBUG, INFO, WARNING, ERROR or CRITICAL)"
        )
    return level


def _apply_config_file(path: str) -> set[str]:
    """Rasa's `--logging-config-file`: a YAML `logging.config.dictConfig` schema. What it says
    of the `rasa` logger applies to ours. Returns the loggers it gives a level."""
    try:
        with open(path, encoding="utf-8") as file:
            config = yaml.safe_load(file)
    except OSError as exc:
        raise InvalidConfig(f"--logging-config-file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise InvalidConfig(f"--logging-config-file {path}: not YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidConfig(f"--logging-config-file {path}: not a mapping of logging settings")
    config.setdefault("version", 1)
    config.setdefault("disable_existing_loggers", False)
    try:
        logging.config.dictConfig(config)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise InvalidConfig(f"--logging-config-file {path}: {exc}") from exc
    for name, logger in logging.Logger.manager.loggerDict.items():
        # `disable_existing_loggers: true` would silence every module of ours.
        if isinstance(logger, logging.Logger) and name.split(".")[0] in OWN_LOGGERS:
            logger.disabled = False
    loggers = config.get("loggers") or {}
    leveled = {name for name, spec in loggers.items() if isinstance(spec, dict) and "level" in spec}
    rasa = loggers.get("rasa")
    if isinstance(rasa, dict):
        source = logging.getLogger("rasa")
        for name in OWN_LOGGERS:
            if name in loggers:
                continue
            ours = logging.getLogger(name)
            ours.handlers, ours.propagate = list(source.handlers), source.propagate
            if "level" in rasa:
                leveled.add(name)
    return leveled


def _syslog_handler(host: str, port: int, protocol: str) -> logging.Handler:
    """A syslog handler (TCP connects now: an OSError when nothing listens)."""
    kind = socket.SOCK_STREAM if protocol.upper() == "TCP" else socket.SOCK_DGRAM
    return logging.handlers.SysLogHandler(address=(host, port), socktype=kind)


def why_logging_failed(
    exc: Exception, log_file: str | None, syslog: tuple[str, int, str] | None
) -> str:
    """What `configure_logging` raised, said with the flag it comes from: the log file or
    syslog for an OSError, a level or config file for InvalidConfig."""
    if not isinstance(exc, OSError):
        return str(exc)
    where = f"--log-file {log_file}"
    if syslog is not None and not (log_file and exc.filename == log_file):
        where = f"--use-syslog ({syslog[2]} {syslog[0]}:{syslog[1]})"
    return f"{where}: {exc.strerror or exc}"


def configure_logging(
    verbosity: int = 0,
    log_file: str | None = None,
    fmt: str = "text",
    config_file: str | None = None,
    syslog: tuple[str, int, str] | None = None,
) -> None:
    """-1 quiet (warnings), 0 default (warnings + our info), 1 info, 2 debug. `syslog`:
    (host, port, "UDP" or "TCP") to send the log lines to as well, as Rasa's `--use-syslog`.

    At 0, `LOG_LEVEL` sets our loggers' level, else a `config_file` naming them (or `rasa`);
    `LOG_LEVEL_LIBRARIES`, `LOG_LEVEL_RABBITMQ`, `LOG_LEVEL_KAFKA` and `LOG_LEVEL_MATPLOTLIB`
    set the libraries' (as in Rasa; -v and -vv do not). Raises
    InvalidConfig for a level or config file that cannot be used.
    """
    own_env, libraries_env = _env_level("LOG_LEVEL"), _env_level("LOG_LEVEL_LIBRARIES")
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)-7s %(name)s - %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    handlers[0].addFilter(_NotOnStderrAgain())
    if _same_destination(sys.stdout, sys.stderr):
        handlers[0].addFilter(_PrintedAlready())
    if log_file:
        # Reopened when logrotate (or anyone) moves it away: lines go on at the path.
        handlers.append(logging.handlers.WatchedFileHandler(log_file, encoding="utf-8"))
    if syslog is not None:
        handlers.append(_syslog_handler(*syslog))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    redact = RedactSecretsFilter()
    one_line_errors = ConnectionErrorsInOneLine() if verbosity < 2 else None
    for handler in handlers:
        handler.setFormatter(formatter)
        if one_line_errors is not None:
            handler.addFilter(one_line_errors)
        handler.addFilter(redact)
        root.addHandler(handler)
    root.setLevel(level if verbosity > 0 else logging.WARNING)
    for name in OWN_LOGGERS:
        ours = logging.getLogger(name)
        ours.handlers, ours.propagate = [], True
        ours.setLevel(own_env if verbosity == 0 and own_env is not None else level)
    libraries = logging.WARNING if libraries_env is None else libraries_env
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(libraries)
    for name in SERVER_LIBRARY_LOGGERS:
        # Unset, they follow the root (their info lines with -v).
        logging.getLogger(name).setLevel(logging.NOTSET if libraries_env is None else libraries)
    for names, variable in (
        (RABBITMQ_LOGGERS, "LOG_LEVEL_RABBITMQ"),
        (KAFKA_LOGGERS, "LOG_LEVEL_KAFKA"),
        (("matplotlib",), "LOG_LEVEL_MATPLOTLIB"),  # its font search: ~185 lines a plot
    ):
        own = _env_level(variable)
        for name in names:
            logging.getLogger(name).setLevel(libraries if own is None else own)
    logging.getLogger("uvicorn.error").addFilter(_SAID_BY_US)  # once: a set
    if config_file:
        leveled = _apply_config_file(config_file)
        for name in OWN_LOGGERS:  # -v, --quiet and LOG_LEVEL say more than the file
            if name not in leveled or verbosity != 0 or own_env is not None:
                ours = logging.getLogger(name)
                ours.setLevel(own_env if verbosity == 0 and own_env is not None else level)
        for logger in (root, *map(logging.getLogger, OWN_LOGGERS)):
            for handler in logger.handlers:
                if handler not in handlers:
                    if isinstance(handler, logging.StreamHandler) and _same_destination(
                        handler.stream, sys.stderr
                    ):
                        handler.addFilter(_NotOnStderrAgain())
                    if one_line_errors is not None:
                        handler.addFilter(one_line_errors)
                    handler.addFilter(redact)
                    # (once: `rasa`'s handlers are our loggers' too)
                    inner = handler.formatter or logging.Formatter()
                    if not isinstance(inner, (OneLineFormatter, TextFormatter, JsonFormatter)):
                        handler.setFormatter(OneLineFormatter(inner))
