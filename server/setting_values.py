"""Typed values of one endpoints.yml or credentials.yml section: errors that name the key.

`${VAR}` substitution makes every substituted value a string, so flags and numbers are
read from strings too (`session_persistence: ${PERSIST}` with PERSIST=false is off).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from server.errors import InvalidConfig
from server.urls import safe_url, url_as_rasa_reads

logger = logging.getLogger(__name__)


def copy_with_lines(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    """A shallow copy of a settings section that keeps the lines it was read on, when it was
    (a copy by `dict(...)` keeps none: a warning about one of its keys then named no line).
    The copy is of the section's own class (the YAML reader's line-keeping dict), so the
    stores and brokers copying it need not import the reader."""
    if not hasattr(mapping, "key_lines"):
        return dict(mapping)
    copy: Any = type(mapping)(mapping)  # type: ignore[call-arg]
    copy.line = getattr(mapping, "line", None)
    copy.key_lines = dict(mapping.key_lines or {})
    return copy


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})


def text(settings: dict[str, Any], key: str, default: str | None = None) -> str | None:
    """A string setting (a number is taken as its string); `default` when missing or empty."""
    value = settings.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        # The type only: the value may be a password.
        raise InvalidConfig(f"'{key}' must be a string, not {kind(value)}")
    return str(value)


def flag(settings: dict[str, Any], key: str, default: bool = False) -> bool:
    """A true/false setting: a YAML boolean, 1 or 0, or true/false/yes/no/on/off/1/0 as a
    string."""
    value = settings.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidConfig(f"'{key}' must be true or false, not {_shown(value)}{_quoted_var(value)}")


def seconds(settings: dict[str, Any], key: str, default: float) -> float:
    """A positive number of seconds."""
    value = settings.get(key)
    if value is None:
        return default
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError, OverflowError):  # (an integer no float holds)
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise InvalidConfig(f"'{key}' must be a positive number of seconds, not {_shown(value)}")
    return number


def count(settings: dict[str, Any], key: str, default: int, least: int = 1) -> int:
    """A whole number of `least` or more (its digits as a string too)."""
    value = settings.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidConfig(
            f"'{key}' must be a whole number of {least} or more, not {_shown(value)}"
            + _quoted_var(value)
        )
    return value


def http_url(settings: dict[str, Any], key: str) -> str:
    """A required http:// or https:// URL with a host, as Rasa reads it (`url_as_rasa_reads`:
    without a line break, nor spaces before it)."""
    value = text(settings, key)
    if value is None:
        raise InvalidConfig(f"'{key}' is required")
    value = url_as_rasa_reads(value)

    why = ""
    try:
        safe_url(value)  # an unclosed IPv6 bracket, a port out of range: no request goes
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as e:
        host, why = None, f" ({e})"
    if not host or parts.scheme.lower() not in ("http", "https"):
        shown = _shown(safe_url(value, tolerant=True))  # without user, password or query
        raise InvalidConfig(
            f"'{key}' must be an http:// or https:// URL with a host, not {shown}{why}"
            + _quoted_var(value)
        )
    return value


def _quoted_var(value: Any) -> str:
    """Why a `${VAR}` is still there: as Rasa, only unquoted values are substituted."""
    if isinstance(value, str) and "${" in value:
        return " (a `${VAR}` in quotes is not substituted, as in Rasa: write it unquoted)"
    return ""


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def kind(value: Any) -> str:
    """What a YAML value is, in a user's words."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def env_seconds(name: str, default: float, zero: bool = False) -> float:
    """A duration from the environment variable `name`: a number of seconds, more than 0
    (`zero`: 0 or more, and finite)."""
    return env_number(name, default, "seconds", zero)


def env_number(name: str, default: float, unit: str, zero: bool = False) -> float:
    """A number of `unit` from the environment variable `name`, more than 0 (`zero`: 0 or
    more, and finite)."""
    raw = os.environ.get(name)
    least = "0 or more" if zero else "more than 0"
    try:
        number = default if raw is None else float(raw)
    except ValueError:
        number = math.nan
    if not (0 <= number < math.inf if zero else number > 0):
        raise InvalidConfig(f"{name} must be a number of {unit}, {least}, not {raw!r}")
    return number


def env_whole_number(name: str, default: int, what: str, least: int = 1) -> int:
    """A count from the environment variable `name`: a whole number of `what`, `least` or
    more (`default` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = least - 1
    if value < least:
        raise InvalidConfig(
            f"{name} must be a whole number of {what}, {least} or more, not {raw!r}"
        )
    return value


def sql_pool_sizes() -> tuple[int, int]:
    """SQL_POOL_SIZE (10) and SQL_MAX_OVERFLOW (20): the connections an SQL store keeps, and
    those it may open beyond them. Before, a word was blamed on endpoints.yml ("a setting has
    the wrong type: invalid literal for int()")."""
    return (
        env_whole_number("SQL_POOL_SIZE", 10, "connections"),
        env_whole_number("SQL_MAX_OVERFLOW", 20, "connections", least=0),
    )


# Read where a module is imported (the server, each worker, `shell`, `test`): `botserver run`
# checks them before the server's imports, so a wrong one is an `error:` line, not a traceback.
GRACEFUL_SHUTDOWN_ENV = "BOTSERVER_GRACEFUL_SHUTDOWN_SECONDS"
MAX_PREDICTIONS_ENV = "MAX_NUMBER_OF_PREDICTIONS"


def graceful_shutdown_seconds() -> float:
    """How long requests in flight may take after SIGTERM (GRACEFUL_SHUTDOWN_ENV; 30 s)."""
    return env_seconds(GRACEFUL_SHUTDOWN_ENV, 30.0, zero=True)


def max_predictions() -> int:
    """The actions a turn runs at most since the bot listened (MAX_PREDICTIONS_ENV; 10)."""
    return env_whole_number(MAX_PREDICTIONS_ENV, 10, "actions")


def host_and_port(host: Any, port: Any, service: str) -> tuple[Any, int | None]:
    """`url` and `port` as Rasa gives them, `service` (SQL, RabbitMQ) named in errors:
    `host:port` split (`[::1]:5432` too), a bare IPv6 address (`::1`) or a socket directory
    (`/var/run/postgresql`) taken whole, a `user:password@` before the host left out; the
    url's port wins over `port`, as in Rasa. Before, `::1` was read as host ':' and port 1,
    and `db.local:abc` failed with a bare ValueError."""
    if host and "@" in str(host) and not str(host).startswith("/"):
        # Rasa's SQL store reads `user:password@host` as the host after the '@' (the
        # `username` and `password` keys log in). Before, the password was shown as a port.
        host = str(host).rpartition("@")[2]
        logger.warning(
            "%s url: the user name and password before '@' are not read: give them as "
            "`username` and `password`",
            service,
        )
    port_key = None if port == "" else port
    if host and not str(host).startswith("/"):
        given = str(host)
        if given.startswith("[") and "]:" in given:  # [IPv6]:port
            host, _, port = given[1:].partition("]:")
        elif given.count(":") == 1:
            host, _, port = given.partition(":")
        if port == "":  # `db:` names no port
            port = port_key
    in_url = port is not port_key  # the url named its own port
    if host and str(host).startswith("[") and str(host).endswith("]"):
        host = str(host)[1:-1]
    if port is None or port == "":
        return host, None
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise InvalidConfig(f"{service} port must be a whole number, got '{port}'") from None
    if not 0 < number < 65536:
        raise InvalidConfig(f"{service} port must be 1-65535, got {number}")
    if in_url and port_key is not None and str(port_key) != str(number):
        # Rasa takes the url's port; before, the host was 'db:5433' whole, found by no resolver.
        logger.warning("%s: the port %d in url is used, not `port` %s", service, number, port_key)
    return host, number


def key_line(settings: object, key: object) -> int | None:
    """The line `key` of `settings` was read on, when the section came from a file
    (`config.read_endpoints`, `read_credentials`: a line-keeping dict); else None."""
    lines = getattr(settings, "key_lines", None) or {}
    line: int | None = lines.get(key)
    return line


def near_miss(key: object, known: Iterable[str], cutoff: float = 0.8) -> str | None:
    """The one of `known` that `key` is a near miss of (a typo: `polices`, `key_prefx`), if
    any, in whatever case it is written (`KEY_PREFIX`): the one measure of every "did you
    mean" about a setting or option (`cutoff`: how alike, 0 to 1)."""
    by_lower = {name.lower(): name for name in known}
    close = difflib.get_close_matches(str(key).lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[close[0]] if close else None


def warn_of_unknown_keys(
    settings: dict[str, Any],
    known: Iterable[str],
    owner: str,
    *,
    quiet: Iterable[str] = (),
    rasa: str = "nor by Rasa",
    what: str = "setting",
) -> None:
    """A warning for each key of the section `owner` (`endpoints.yml: tracker_store`,
    `credentials.yml: channel 'rest'`) that is not `known` nor `quiet`, with the key meant
    when it is a near miss of one, else the keys read: Rasa ignores most such keys without a
    word, and a misspelt `key_prefix` read and wrote another bot's conversations, a misspelt
    `header:` never sent the action server's API key. `rasa`: what Rasa does with such a key,
    in the warning's brackets; `what` a key is (a `section` of the file itself). The one
    wording of every endpoints.yml and credentials.yml section; the value is never shown
    (it may be a password). Settings read from a file (`config.read_endpoints`,
    `read_credentials`) know each key's line, which the warning names."""
    read = sorted(known)
    skipped = set(read) | set(quiet)
    for key in settings:
        if key in skipped:
            continue
        meant = near_miss(key, read)
        hint = f"did you mean '{meant}'?" if meant else f"it reads {', '.join(read) or 'none'}"
        line = key_line(settings, key)
        at = f" on line {line}" if line else ""
        logger.warning(
            "%s: unknown %s '%s'%s is not read (%s); %s", owner, what, key, at, rasa, hint
        )
