"""A logging filter that keeps secrets out of logs: `token=` and `key=` query values,
secret-named keys (token, password, secret, api-key, authorization...), Bearer/Basic
credentials, JWTs, URL passwords and secrets registered with `redact_also` become `***`.
For text we do not compose; an address our code shows goes through `safe_url` instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "***"

# A URL's scheme and `://`. Bounded (real schemes have a few letters: postgresql+asyncpg):
# tried from each place of a line, an unbounded one read every run to its end. Not from a
# word's start only: a URL glued to text (`连接redis://...`, a scheme of 40 letters) is one.
_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.\-]{0,31}://"

_SCHEMES = re.compile(_SCHEME)
_QUERY_START = re.compile(r"[?#\s]")  # where a URL's path ends
_QUERY_END = re.compile(r"[\s'\"]")  # where its query or fragment ends


def _hide_queries_with_at(text: str) -> str:
    """`text` with each URL's query or fragment holding an '@' hidden: a password holding a
    '?' or '#' that is not percent-encoded (`http://bot:12#x@host/` connects to `bot:12`, as
    `safe_url` shows it), so the line names the host connected to, not `host`. Trailing
    punctuation (`...@host).`) is the sentence's, kept.

    Every URL is tried, those inside another one's query too; the ends found for one are
    kept for the next (they only move forward), so a line is read a bounded number of times."""
    if "@" not in text:
        return text
    shown: list[str] = []
    kept = 0  # what precedes is in `shown`
    path_end = query_end = at = -1
    for scheme in _SCHEMES.finditer(text):
        if scheme.start() < kept:  # inside a query hidden already
            continue
        if path_end < scheme.end():
            found = _QUERY_START.search(text, scheme.end())
            path_end = found.start() if found else len(text)
        if path_end == len(text) or text[path_end] not in "?#":
            continue
        if query_end <= path_end:
            found = _QUERY_END.search(text, path_end + 1)
            query_end = found.start() if found else len(text)
        if at <= path_end:
            at = text.find("@", path_end + 1)
            at = len(text) if at < 0 else at
        if at >= query_end:
            continue
        hidden = text[path_end + 1 : query_end].rstrip(":,;.!)")
        shown += (text[kept : path_end + 1], REDACTED)
        kept = path_end + 1 + len(hidden)
    return "".join(shown) + text[kept:] if shown else text


# A JWT's first characters, not inside an ASCII word (text in any other script may run
# straight into it: `令牌eyJ...`).
_JWT_START = r"(?<![A-Za-z0-9_])eyJ"

_PATTERNS: tuple[tuple[re.Pattern[str] | None, Any], ...] = (
    # ?token=... / &access_token=... / ?key=... / &sig=... in URLs and query strings, and
    # the signature of an S3 presigned or GCS signed URL (X-Amz-Signature, X-Goog-Signature).
    (
        re.compile(
            r"((?:^|[?&;\s\"'(])"
            r"(?:access_token|token|key|api[-_]?key|sig|(?:x-(?:amz|goog)-)?signature)=)"
            r"[^&\s\"';#)]*",
            re.IGNORECASE,
        ),
        r"\1",
    ),
    # An Authorization header's value, whatever its scheme (kept: "Token ***").
    (
        re.compile(
            r"""(\bauthorization["']?\s*[:=]\s*["']?(?:[A-Za-z][\w-]*\s+)?)[^\s"',}]+""",
            re.IGNORECASE,
        ),
        r"\1",
    ),
    # Secret-named keys in dumped config or dicts: "token": "x", 'password': 'y', secret=z,
    # AWS_SECRET_ACCESS_KEY=..., a service account's "private_key": "...".
    (
        re.compile(
            # From the name's secret word: the words before it (`my_token`) are kept as they
            # are, and reading them from each word's start cost a long line its square.
            r"""((?:token|password|passwd|secret(?:[-_]access[-_]key)?|(?:api|private)[-_]?key)"""
            r"""["']?\s*[:=]\s*)"""
            r"""(?:"[^"]*"|'[^']*'|[^\s,&}]+)""",
            re.IGNORECASE,
        ),
        r"\1",
    ),
    # Authorization header values, in any spelling of the scheme.
    (re.compile(r"\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/=]+", re.IGNORECASE), r"\1\2"),
    # A URL's query or fragment holding an '@' (`_hide_queries_with_at`).
    (None, _hide_queries_with_at),
    # Passwords in URLs: scheme://user:password@host.
    (re.compile(rf"({_SCHEME}[^:/@\s]*:)[^@/\s]+(?=@)"), r"\1"),
    # Anything that looks like a JWT, even without its scheme. Tried from the first `eyJ` of
    # a run of base64url only: when that one is no JWT, no later one before the run's '.' is
    # (each tried, to the '.', cost a long line its square).
    (
        re.compile(
            rf"(?<![A-Za-z0-9_\-])((?:(?!{_JWT_START})[A-Za-z0-9_\-])*+)"
            rf"{_JWT_START}[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"
        ),
        r"\1",
    ),
)

# Loggers whose records carry request lines or headers.
DEFAULT_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "server", "httpx")


# Secrets configured under names no pattern can know (a model server's `token_name`).
_literals: set[str] = set()
# Shorter values are not registered: replacing them everywhere would garble the logs.
MIN_LITERAL_LENGTH = 6


# Query parameters that carry a token under a name of the user's choosing (`token_name`):
# their values in URLs are redacted, however short (too short to redact as `_literals`).
_query_names: set[str] = set()
_query_values: re.Pattern[str] | None = None


def redact_also(secret: str | None, query_name: str | None = None) -> None:
    """Redact `secret` itself wherever it appears in a log record from now on, and any
    value of the query parameter `query_name`, which carries it."""
    global _query_values
    if secret and len(secret) >= MIN_LITERAL_LENGTH:
        _literals.add(secret)
    if query_name and query_name not in _query_names:
        _query_names.add(query_name)
        names = "|".join(re.escape(name) for name in sorted(_query_names))
        _query_values = re.compile(rf"([?&;](?:{names})=)[^&\s\"';#)]*")


def redact(text: str) -> str:
    """`text` with every secret-looking value replaced by `***`."""
    for literal in _literals:
        if literal in text:
            text = text.replace(literal, REDACTED)
    if _query_values is not None:
        text = _query_values.sub(r"\1" + REDACTED, text)
    for pattern, keep in _PATTERNS:
        if pattern is None:
            text = keep(text)
        else:
            text = pattern.sub(keep + REDACTED, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("latin-1")).encode("latin-1")
    if value is None or isinstance(value, (int, float)):
        return value
    # URL objects (httpx.URL, yarl) and the like: replaced by their redacted text if needed.
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record's message and arguments in place; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_value(v) for k, v in record.args.items()}
        return True


def install_log_redaction(loggers: Iterable[str] = DEFAULT_LOGGERS) -> RedactSecretsFilter:
    """Attach one RedactSecretsFilter to the named loggers and to every root handler.

    Logger filters see records logged on that very logger; handler filters see propagated
    ones too. Installing twice is harmless.
    """
    the_filter = next(
        (f for f in logging.getLogger().filters if isinstance(f, RedactSecretsFilter)),
        RedactSecretsFilter(),
    )
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in loggers]
    targets.append(logging.getLogger())
    targets.extend(logging.getLogger().handlers)
    for target in targets:
        if not any(isinstance(f, RedactSecretsFilter) for f in target.filters):
            target.addFilter(the_filter)
    return the_filter
