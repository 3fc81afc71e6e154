"""Log setup: human-readable or JSON lines, to stderr and optionally a file, secrets redacted."""

from __future__ import annotations

import json
import logging
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
        return json.dumps(out, ensure_ascii=False)


def configure_logging(verbosity: int = 0, log_file: str | None = None, fmt: str = "text") -> None:
    """-1 quiet (warnings), 0 default (warnings + our info), 1 info, 2 debug."""
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s - %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
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
