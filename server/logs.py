"""Log setup: human-readable or JSON lines, to stderr and optionally a file, secrets redacted."""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from typing import Any

from server.auth.log_redaction import RedactSecretsFilter

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


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
                out[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # U+2028/U+2029 are line breaks to some readers (JavaScript, Python's splitlines).
        line = json.dumps(out, ensure_ascii=False)
        return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


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


class TextFormatter(logging.Formatter):
    """The human-readable line; control characters in the message are escaped (`\\n`,
    `\\x00`), so one record is one line whatever a client put in it. A traceback keeps its
    lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = _CONTROL.sub(_escaped, record.message)
        return super().formatMessage(record)


def configure_logging(verbosity: int = 0, log_file: str | None = None, fmt: str = "text") -> None:
    """-1 quiet (warnings), 0 default (warnings + our info), 1 info, 2 debug."""
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)-7s %(name)s - %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        # Reopened when logrotate (or anyone) moves it away: lines go on at the path.
        handlers.append(logging.handlers.WatchedFileHandler(log_file, encoding="utf-8"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    redact = RedactSecretsFilter()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redact)
        root.addHandler(handler)
    root.setLevel(level if verbosity > 0 else logging.WARNING)
    for name in ("server", "botserver", "cli"):
        logging.getLogger(name).setLevel(level)
    noisy = logging.DEBUG if verbosity >= 2 else logging.WARNING
    for name in ("httpx", "httpcore", "aio_pika", "aiormq", "sqlalchemy.engine"):
        logging.getLogger(name).setLevel(noisy)
